-- The webhook backlog for /metrics (payments/webhooks/backlog.py): every failed event id
-- with its first failure, read from this index alone (an index-only scan, never the rows
-- with their payloads) on each scrape.
-- depends: 0003_idempotency_recovery_points

-- Expand only: an index, which no release names. Plain, not CONCURRENTLY (yoyo runs each
-- migration in a transaction): the build blocks only inserts into webhook_failures, which
-- happen when a handler fails, for as long as it takes on a table of failures only.
CREATE INDEX webhook_failures_event_failed_at_idx ON webhook_failures (event_id, failed_at);
