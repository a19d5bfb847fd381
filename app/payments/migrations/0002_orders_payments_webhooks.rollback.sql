-- Undo 0002 (yoyo rollback). Drops data: only for development databases.
DROP TABLE idempotency_keys;
DROP TABLE webhook_failures;
DROP TABLE stripe_events;
DROP TABLE subscriptions;
DROP TABLE payments;
DROP TABLE order_items;
DROP TABLE orders;
