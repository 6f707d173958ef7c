-- Facts about the ledger itself: its id (so `faregate ledger copy` knows what
-- it copied) and how far back raw charges are kept ([storage] keep_charges_days).
CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Session charges by time, covering the session id: the start-up rebuild of
-- crash-cut sessions reads only recent session charges, from the index alone
-- (REST charges have no session and no entry).
CREATE INDEX IF NOT EXISTS charges_session_ts ON charges (ts_ms, session_id)
    WHERE session_id IS NOT NULL;
