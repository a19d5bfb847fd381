-- Undo 0003 (yoyo rollback): keys forget their orders; a retry then starts a new order.
ALTER TABLE idempotency_keys
    DROP COLUMN locked_at,
    DROP COLUMN order_id;
