-- Recovery points for Idempotency-Key (payments/idempotency.py): the order a key created,
-- recorded in the transaction that creates it, so a retry resumes that order (same Stripe
-- idempotency key, same Stripe object) instead of starting a second one; and the lock of the
-- request that runs it, released without deleting the key when a Stripe call went unanswered.
-- depends: 0002_orders_payments_webhooks

-- Expand only: the release before this one ignores both columns; its INSERTs get
-- locked_at = now() from the default, so the new release sees its keys as locked.
ALTER TABLE idempotency_keys
    ADD COLUMN order_id  uuid REFERENCES orders (id),
    ADD COLUMN locked_at timestamptz DEFAULT now();
