-- `/admin/usage/logs?request_id=fg_…` finds the charges of one call by the id its
-- answer carried in `x-faregate-request-id` (a session's charges share its
-- upgrade's id), without reading the whole ledger.
CREATE INDEX IF NOT EXISTS charges_by_request ON charges (request_id);
