-- Shared budget counters for several replicas on one database: each replica
-- leases slices of a limit (leased_nanos never exceeds limit_nanos) and spends
-- them locally; unused slices are returned at shutdown.
CREATE TABLE IF NOT EXISTS budget_leases (
    scope        TEXT NOT NULL,
    period       TEXT NOT NULL,
    period_key   TEXT NOT NULL,
    limit_nanos  BIGINT NOT NULL,
    leased_nanos BIGINT NOT NULL DEFAULT 0,
    updated_ms   BIGINT NOT NULL,
    PRIMARY KEY (scope, period, period_key)
);
