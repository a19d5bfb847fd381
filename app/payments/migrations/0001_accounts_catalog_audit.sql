-- Accounts, catalog and audit trail. Orders, payments, subscriptions, webhook events and
-- idempotency keys are in 0002.

CREATE TABLE users (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Stored lower-cased, so the unique constraint is case-insensitive.
    email              text NOT NULL UNIQUE CHECK (email = lower(email) AND length(email) <= 254),
    password_hash      text NOT NULL,
    is_admin           boolean NOT NULL DEFAULT false,
    stripe_customer_id text UNIQUE,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE products (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stripe_product_id text NOT NULL UNIQUE,
    slug              text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
    name              text NOT NULL,
    description       text NOT NULL DEFAULT '',
    image_url         text,
    active            boolean NOT NULL DEFAULT true,
    featured          boolean NOT NULL DEFAULT false,
    metadata          jsonb NOT NULL DEFAULT '{}',
    -- Stripe's `updated` time of the version stored here; older events are ignored.
    -- NULL marks a placeholder created by a price that arrived before its product.
    stripe_updated_at timestamptz,
    search            tsvector GENERATED ALWAYS AS (
                          setweight(to_tsvector('english', name), 'A') ||
                          setweight(to_tsvector('english', description), 'B')
                      ) STORED,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX products_search_idx ON products USING gin (search);
CREATE INDEX products_listing_idx ON products (featured DESC, name) WHERE active;

CREATE TABLE prices (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stripe_price_id    text NOT NULL UNIQUE,
    product_id         bigint NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    unit_amount        bigint NOT NULL CHECK (unit_amount >= 0),
    currency           text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    -- NULL for one-time prices.
    recurring_interval text CHECK (recurring_interval IN ('day', 'week', 'month', 'year')),
    active             boolean NOT NULL DEFAULT true,
    stripe_updated_at  timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX prices_product_idx ON prices (product_id) WHERE active;

CREATE TABLE audit_logs (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    action     text NOT NULL,
    user_id    bigint REFERENCES users (id) ON DELETE SET NULL,
    ip         inet,
    details    jsonb NOT NULL DEFAULT '{}'
);

-- purge-audit deletes by age; the account and admin views read one user's trail.
CREATE INDEX audit_logs_created_at_idx ON audit_logs (created_at);
CREATE INDEX audit_logs_user_idx ON audit_logs (user_id, created_at) WHERE user_id IS NOT NULL;
