-- Budget alerts sent: one row per scope, period and threshold (dedupe across restarts).
CREATE TABLE IF NOT EXISTS alerts (
    id               TEXT PRIMARY KEY,    -- "tenant:acme|month|2026-11|0.8"
    scope            TEXT NOT NULL,
    period           TEXT NOT NULL,
    period_start     TEXT NOT NULL,
    threshold        TEXT NOT NULL,
    level            TEXT NOT NULL,
    limit_nanos      BIGINT NOT NULL,
    spent_nanos      BIGINT NOT NULL,
    projected_nanos  BIGINT NOT NULL,
    at               TEXT NOT NULL,
    at_ms            BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_at ON alerts (at_ms);
