-- The transactional mail outbox (payments/mail/): one row per mail to a customer, written in
-- the transaction of the change it tells about (order paid, refund issued, subscription
-- started, renewed, payment failed, cancelled) and delivered afterwards by
-- `python -m payments mail-worker`.
-- depends: 0005_webhook_ignored_reason

-- Expand only: a new table the release still running never names.
CREATE TABLE mail_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- order_paid, refund_issued, subscription_started, subscription_renewed,
    -- subscription_payment_failed, subscription_cancelled: names a template pair.
    kind            text NOT NULL,
    -- The fact the mail tells about (e.g. order_paid:<order id>): however often that fact
    -- is reported (a redelivered webhook, two events for one payment), one mail.
    dedup_key       text NOT NULL UNIQUE,
    recipient       text NOT NULL,
    -- What the templates are rendered with, as of the change.
    context         jsonb NOT NULL,
    -- The Message-ID's left part: the same for every attempt of this row.
    message_token   uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);

-- The worker's claim and the /metrics gauges read the pending rows only.
CREATE INDEX mail_outbox_pending_idx ON mail_outbox (next_attempt_at, id) WHERE status = 'pending';
