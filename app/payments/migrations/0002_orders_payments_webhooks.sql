-- Orders, payments, subscriptions, Stripe webhook events and idempotency keys.
-- depends: 0001_accounts_catalog_audit

-- One purchase by one user. Its status moves only forward:
-- pending -> paid | failed, failed -> paid (a later attempt succeeded), paid -> refunded.
CREATE TABLE orders (
    -- A random id: it appears in URLs and in the idempotency keys sent to Stripe, so it
    -- must not be guessable or repeat after a database is rebuilt.
    id                         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                    bigint NOT NULL REFERENCES users (id),
    mode                       text NOT NULL CHECK (mode IN ('payment', 'subscription')),
    flow                       text NOT NULL CHECK (flow IN ('checkout_session', 'payment_intent')),
    status                     text NOT NULL DEFAULT 'pending'
                                   CHECK (status IN ('pending', 'paid', 'failed', 'refunded')),
    currency                   text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    amount_total               bigint NOT NULL CHECK (amount_total >= 0),
    stripe_checkout_session_id text UNIQUE,
    stripe_payment_intent_id   text UNIQUE,
    stripe_subscription_id     text,
    stripe_refund_id           text,
    failure_reason             text,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    paid_at                    timestamptz,
    refunded_at                timestamptz
);

CREATE INDEX orders_user_idx ON orders (user_id, created_at DESC);

-- What was bought, copied from the catalog at order time: later price changes must not
-- change an order.
CREATE TABLE order_items (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id        uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    price_id        bigint REFERENCES prices (id) ON DELETE SET NULL,
    stripe_price_id text NOT NULL,
    product_name    text NOT NULL,
    quantity        integer NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    unit_amount     bigint NOT NULL CHECK (unit_amount >= 0),
    currency        text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    UNIQUE (order_id, stripe_price_id)
);

-- One row per Stripe PaymentIntent, as the webhooks reported it.
CREATE TABLE payments (
    id                       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id                 uuid NOT NULL REFERENCES orders (id),
    stripe_payment_intent_id text NOT NULL UNIQUE,
    stripe_charge_id         text,
    status                   text NOT NULL
                                 CHECK (status IN ('succeeded', 'failed', 'canceled', 'refunded')),
    amount                   bigint NOT NULL CHECK (amount >= 0),
    amount_refunded          bigint NOT NULL DEFAULT 0 CHECK (amount_refunded >= 0),
    currency                 text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    failure_code             text,
    failure_message          text,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX payments_order_idx ON payments (order_id);

-- Mirror of Stripe subscriptions, written only by webhook handlers.
CREATE TABLE subscriptions (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stripe_subscription_id text NOT NULL UNIQUE,
    stripe_customer_id     text NOT NULL,
    -- Stripe's own values: incomplete, trialing, active, past_due, canceled, unpaid, ...
    status                 text NOT NULL,
    stripe_price_id        text,
    quantity               integer,
    current_period_end     timestamptz,
    cancel_at_period_end   boolean NOT NULL DEFAULT false,
    canceled_at            timestamptz,
    latest_invoice_id      text,
    latest_invoice_status  text,
    -- `created` of the newest event applied; an older event arriving late is ignored.
    stripe_event_created   timestamptz NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX subscriptions_customer_idx ON subscriptions (stripe_customer_id);

-- Every verified webhook event, committed in the same transaction as its effects: the
-- primary key makes a second delivery of the same event a no-op.
CREATE TABLE stripe_events (
    id           text PRIMARY KEY,
    type         text NOT NULL,
    created      timestamptz NOT NULL,
    payload      jsonb NOT NULL,
    -- processed: a handler applied it; ignored: no handler for this type.
    status       text NOT NULL CHECK (status IN ('processed', 'ignored')),
    received_at  timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz
);

CREATE INDEX stripe_events_type_idx ON stripe_events (type, created);

-- A handler that failed: written in its own transaction after the event's transaction
-- rolled back, so it survives. No foreign key: the event row itself was rolled back.
CREATE TABLE webhook_failures (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id   text NOT NULL,
    event_type text NOT NULL,
    error      text NOT NULL,
    payload    jsonb NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_failures_event_idx ON webhook_failures (event_id);
CREATE INDEX webhook_failures_failed_at_idx ON webhook_failures (failed_at);

-- Idempotency-Key headers of our own POST endpoints, per user.
CREATE TABLE idempotency_keys (
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key             text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    -- SHA-256 of method, path and canonical JSON body: the same key with another
    -- request is refused.
    request_hash    text NOT NULL,
    status          text NOT NULL CHECK (status IN ('in_flight', 'done')),
    response_status integer,
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    PRIMARY KEY (user_id, key),
    CHECK (status = 'in_flight' OR (response_status IS NOT NULL AND response_body IS NOT NULL))
);

CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
