-- What a call carried that its body did not show: a Responses call naming
-- `previous_response_id` or `conversation` carries what faregate recorded for
-- that response or conversation. Reservations look it up here when the replica
-- has not seen it itself (after a restart, or served by another replica), so
-- both lookups have an index; each covers only the rows that can be named
-- (Responses API answers, and charges made inside a conversation).
ALTER TABLE charges ADD COLUMN conversation_id TEXT;
CREATE INDEX IF NOT EXISTS charges_responses_by_id
    ON charges (response_id) WHERE endpoint = '/v1/responses' AND response_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS charges_by_conversation
    ON charges (conversation_id, ts_ms) WHERE conversation_id IS NOT NULL;
