-- The provider's bill as a second ledger (reconciliation, backstop limits, and the
-- Realtime traffic faregate cannot meter). No semicolons after a column: statements
-- are split on them.

-- One reconciliation result per UTC day, grouping and group; a re-run replaces it.
CREATE TABLE IF NOT EXISTS reconciliations (
    id              TEXT PRIMARY KEY,           -- "2026-11-03|project|proj_abc"
    day             TEXT NOT NULL,              -- YYYY-MM-DD, UTC
    grouping        TEXT NOT NULL,              -- project | api_key | line_item
    grp             TEXT NOT NULL,
    ledger_nanos    BIGINT NOT NULL,
    provider_nanos  BIGINT NOT NULL,
    drift_nanos     BIGINT NOT NULL,            -- provider - ledger
    drift_ratio     TEXT,                       -- exact decimal, NULL when the provider billed 0
    notes           TEXT NOT NULL DEFAULT '[]', -- JSON list of strings
    final           INTEGER NOT NULL,           -- the provider's day is final
    within          INTEGER NOT NULL,           -- within [provider] drift_tolerance
    checked_at      TEXT NOT NULL,
    checked_ms      BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS reconciliations_day ON reconciliations (grouping, day);

-- Provider-side hard spend limits faregate set (`sync-limits --apply`); insert-only.
CREATE TABLE IF NOT EXISTS limit_changes (
    id          TEXT PRIMARY KEY,
    project     TEXT NOT NULL,
    tenants     TEXT NOT NULL,                  -- comma-separated
    old_cents   BIGINT,                         -- NULL: no limit before
    new_cents   BIGINT NOT NULL,
    result      TEXT NOT NULL,                  -- applied | failed
    error       TEXT,
    at          TEXT NOT NULL,
    at_ms       BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS limit_changes_at ON limit_changes (at_ms);

-- WebRTC/SIP calls created and ephemeral keys minted through faregate: insert-only events,
--   created  id = "created:" + ref   (who created it, for which project, when it expires)
--   seen     id = "seen:" + ref      (a session through faregate metered it)
CREATE TABLE IF NOT EXISTS delegated (
    id          TEXT PRIMARY KEY,
    ref         TEXT NOT NULL,                  -- call id (rtc_...) or "ek:" + key digest
    event       TEXT NOT NULL,
    kind        TEXT NOT NULL,                  -- call | secret
    session_id  TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    user_id     TEXT,
    key_id      TEXT,
    model       TEXT NOT NULL,
    project     TEXT,
    at          TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    expires_ms  BIGINT
);
CREATE INDEX IF NOT EXISTS delegated_at ON delegated (at_ms);
CREATE INDEX IF NOT EXISTS delegated_ref ON delegated (ref);
