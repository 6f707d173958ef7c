-- The two session indexes on charges become one partial unique index.
-- Most charges (every REST call) have no session; they no longer pay for two
-- index entries keyed on NULL: about a third of PostgreSQL's CPU per inserted
-- row. A repeated (session_id, response_id) is still refused, and lookups by
-- session_id alone use the index's leading column.
-- On PostgreSQL the build holds a write lock on charges while it runs (seconds
-- per few million rows); other replicas' charges wait in their journals.
CREATE UNIQUE INDEX IF NOT EXISTS charges_session_responses
    ON charges (session_id, response_id) WHERE session_id IS NOT NULL;
DROP INDEX IF EXISTS charges_session_response;
DROP INDEX IF EXISTS charges_session;
