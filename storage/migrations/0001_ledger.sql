-- The charges ledger: one row per priced call. Money is integer nano-USD.
CREATE TABLE IF NOT EXISTS charges (
    id                         TEXT PRIMARY KEY,
    ts                         TEXT NOT NULL,      -- ISO-8601 UTC
    ts_ms                      BIGINT NOT NULL,    -- epoch milliseconds, for ranges
    tenant                     TEXT NOT NULL,
    user_id                    TEXT,
    key_id                     TEXT,
    model                      TEXT NOT NULL,
    endpoint                   TEXT NOT NULL,
    request_id                 TEXT NOT NULL,
    status                     INTEGER NOT NULL,
    input_tokens               BIGINT NOT NULL DEFAULT 0,
    cached_input_tokens        BIGINT NOT NULL DEFAULT 0,
    output_tokens              BIGINT NOT NULL DEFAULT 0,
    audio_input_tokens         BIGINT NOT NULL DEFAULT 0,
    cached_audio_input_tokens  BIGINT NOT NULL DEFAULT 0,
    audio_output_tokens        BIGINT NOT NULL DEFAULT 0,
    image_input_tokens         BIGINT NOT NULL DEFAULT 0,
    cached_image_input_tokens  BIGINT NOT NULL DEFAULT 0,
    image_output_tokens        BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens           BIGINT NOT NULL DEFAULT 0,
    seconds_ms                 BIGINT NOT NULL DEFAULT 0,   -- billed seconds x 1000
    characters                 BIGINT NOT NULL DEFAULT 0,
    images                     BIGINT NOT NULL DEFAULT 0,
    cost_nanos                 BIGINT NOT NULL,
    breakdown                  TEXT NOT NULL DEFAULT '{}',
    price_version              TEXT NOT NULL DEFAULT '',
    priced                     INTEGER NOT NULL DEFAULT 1,
    estimated                  INTEGER NOT NULL DEFAULT 0,
    latency_ms                 DOUBLE PRECISION NOT NULL DEFAULT 0,
    flags                      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS charges_ts ON charges (ts_ms);
CREATE INDEX IF NOT EXISTS charges_tenant_ts ON charges (tenant, ts_ms);
