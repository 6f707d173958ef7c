-- Background responses (Responses API `background: true`): reserved at create,
-- charged once when final. Insert-only event rows:
--   pending  id = "pending:" + response id  (who created it, the amount held and the
--            worst-case tokens by class it stands for)
--   final    id = "final:" + response id    (inserted once: the claim that charges it)
-- A pending row without its final row is followed up after a restart.
CREATE TABLE IF NOT EXISTS background_responses (
    id           TEXT PRIMARY KEY,
    response_id  TEXT NOT NULL,
    event        TEXT NOT NULL,
    tenant       TEXT NOT NULL,
    user_id      TEXT,
    key_id       TEXT,
    tier         TEXT,
    tags         TEXT NOT NULL DEFAULT '{}',
    model        TEXT NOT NULL DEFAULT '',
    request_id   TEXT NOT NULL DEFAULT '',
    hold_nanos   BIGINT NOT NULL DEFAULT 0,
    reserved     TEXT NOT NULL DEFAULT '{}',
    at           TEXT NOT NULL,
    at_ms        BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS background_responses_at ON background_responses (at_ms);
