-- Limits that are held, not spent, shared by replicas on one database:
-- concurrent sessions per tenant, the operator's concurrent upstream
-- sessions, and the one call a budget admits at a time near its limit. Each
-- replica (holder) keeps one row per scope with how many it holds; a holder
-- may raise its count only while the live rows of the scope stay within the
-- limit. Rows are renewed while held and expire: a crashed replica's holds
-- stop counting after `expires_ms`.
CREATE TABLE IF NOT EXISTS slot_holds (
    scope      TEXT NOT NULL,
    holder     TEXT NOT NULL,
    held       BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (scope, holder)
);
