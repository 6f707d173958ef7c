-- Objects created through faregate (stored responses, conversations, files,
-- batches, vector stores, containers, uploads, fine-tuning jobs, Realtime
-- calls) and the tenant each belongs to. Insert-only; the first row of an id
-- wins, so an object can never change hands. Read by primary key only, on a
-- replica's cache miss.
CREATE TABLE IF NOT EXISTS objects (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    user_id     TEXT,
    key_id      TEXT,
    created_at  TEXT NOT NULL,
    created_ms  BIGINT NOT NULL
);
