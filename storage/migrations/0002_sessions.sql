-- Realtime / Live sessions, and the link from each charge to its session.
ALTER TABLE charges ADD COLUMN session_id TEXT;
ALTER TABLE charges ADD COLUMN response_id TEXT;
-- One charge per response of a session: a repeated response.done is a no-op.
CREATE UNIQUE INDEX IF NOT EXISTS charges_session_response
    ON charges (session_id, response_id);
CREATE INDEX IF NOT EXISTS charges_session ON charges (session_id);

CREATE TABLE IF NOT EXISTS sessions (
    id                         TEXT PRIMARY KEY,   -- faregate session id
    upstream_session_id        TEXT,
    tenant                     TEXT NOT NULL,
    user_id                    TEXT,
    key_id                     TEXT,
    model                      TEXT NOT NULL,
    endpoint                   TEXT NOT NULL,      -- /v1/realtime, /v1/live/...
    started_at                 TEXT NOT NULL,
    started_ms                 BIGINT NOT NULL,
    ended_at                   TEXT,
    ended_ms                   BIGINT,
    duration_ms                BIGINT NOT NULL DEFAULT 0,
    responses                  BIGINT NOT NULL DEFAULT 0,
    input_tokens               BIGINT NOT NULL DEFAULT 0,
    cached_input_tokens        BIGINT NOT NULL DEFAULT 0,
    output_tokens              BIGINT NOT NULL DEFAULT 0,
    audio_input_tokens         BIGINT NOT NULL DEFAULT 0,
    cached_audio_input_tokens  BIGINT NOT NULL DEFAULT 0,
    audio_output_tokens        BIGINT NOT NULL DEFAULT 0,
    image_input_tokens         BIGINT NOT NULL DEFAULT 0,
    cached_image_input_tokens  BIGINT NOT NULL DEFAULT 0,
    image_output_tokens        BIGINT NOT NULL DEFAULT 0,
    seconds_ms                 BIGINT NOT NULL DEFAULT 0,
    cost_nanos                 BIGINT NOT NULL DEFAULT 0,
    breakdown                  TEXT NOT NULL DEFAULT '{}',
    end_reason                 TEXT NOT NULL,
    estimated                  INTEGER NOT NULL DEFAULT 0,
    flags                      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS sessions_started ON sessions (started_ms);
CREATE INDEX IF NOT EXISTS sessions_tenant ON sessions (tenant, started_ms);
