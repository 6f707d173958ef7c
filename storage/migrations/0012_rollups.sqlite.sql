-- Rollups: per-hour and per-day sums of charges by tenant and by one dimension
-- (model, endpoint, user, key or tag), kept in the same transaction as the
-- charges they sum (storage/_rollups.py). Reports, budgets and the dashboard
-- read these; raw charges serve only row-level views. The Python step of this
-- version fills them from the charges already stored, in bounded batches.
CREATE TABLE IF NOT EXISTS rollups (
    dim TEXT NOT NULL,
    span_s INTEGER NOT NULL,
    bucket_ms BIGINT NOT NULL,
    tenant TEXT NOT NULL,
    value TEXT NOT NULL,
    requests BIGINT NOT NULL DEFAULT 0,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    cached_input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    audio_input_tokens BIGINT NOT NULL DEFAULT 0,
    cached_audio_input_tokens BIGINT NOT NULL DEFAULT 0,
    audio_output_tokens BIGINT NOT NULL DEFAULT 0,
    image_input_tokens BIGINT NOT NULL DEFAULT 0,
    cached_image_input_tokens BIGINT NOT NULL DEFAULT 0,
    image_output_tokens BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens BIGINT NOT NULL DEFAULT 0,
    seconds_ms BIGINT NOT NULL DEFAULT 0,
    characters BIGINT NOT NULL DEFAULT 0,
    images BIGINT NOT NULL DEFAULT 0,
    cost_nanos BIGINT NOT NULL DEFAULT 0,
    unpriced BIGINT NOT NULL DEFAULT 0,
    estimated BIGINT NOT NULL DEFAULT 0,
    estimated_cost_nanos BIGINT NOT NULL DEFAULT 0,
    savings_nanos BIGINT NOT NULL DEFAULT 0,
    billed_nanos BIGINT NOT NULL DEFAULT 0,
    fallback BIGINT NOT NULL DEFAULT 0,
    fallback_cost_nanos BIGINT NOT NULL DEFAULT 0,
    calls BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (dim, span_s, bucket_ms, tenant, value)
) WITHOUT ROWID;
