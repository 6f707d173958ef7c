-- `/admin/usage/logs?request_id=fg_…` finds the charges of one call by the id its
-- answer carried in `x-faregate-request-id` (a session's charges carry its
-- session id), without reading the whole ledger. On PostgreSQL the rollup
-- trigger is made again too (`_upgrades.pg_refresh_roll_up`).
CREATE INDEX IF NOT EXISTS charges_by_request ON charges (request_id);
