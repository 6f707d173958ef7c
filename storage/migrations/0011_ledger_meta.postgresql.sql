-- Facts about the ledger itself: its id (so `faregate ledger copy` knows what
-- it copied) and how far back raw charges are kept ([storage] keep_charges_days).
CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- One charge per response of a session. charges becomes partitioned by month
-- (the Python step of this version, storage/_upgrades.py), and a partitioned
-- table's unique indexes must contain its partition key, so the old partial
-- unique index on (session_id, response_id) moves to a table of its own.
CREATE TABLE IF NOT EXISTS charge_responses (
    session_id   TEXT NOT NULL,
    response_id  TEXT NOT NULL,
    ts_ms        BIGINT NOT NULL,
    PRIMARY KEY (session_id, response_id)
);
CREATE INDEX IF NOT EXISTS charge_responses_ts ON charge_responses (ts_ms);
