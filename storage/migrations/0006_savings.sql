-- What cached tokens saved (vs. the uncached price), and what the tenant is
-- billed (cost x (1 + markup) at the time of the charge; NULL on rows written
-- before this migration, read as the cost).
ALTER TABLE charges ADD COLUMN savings_nanos BIGINT NOT NULL DEFAULT 0;
ALTER TABLE charges ADD COLUMN billed_nanos BIGINT;
