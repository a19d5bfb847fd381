-- Failed webhooks an operator settles without applying them (`python -m payments webhooks
-- ignore`, POST /api/admin/webhooks/{id}/ignore; payments/webhooks/operator.py): the event
-- gets its stripe_events row with status 'ignored' like a type without a handler, and the
-- operator's reason here. NULL for every event the app itself recorded.
-- depends: 0004_webhook_failures_backlog_index

-- Expand only: a nullable column without a default (a catalog change, no table rewrite);
-- the release still running never names it.
ALTER TABLE stripe_events ADD COLUMN ignored_reason text;
