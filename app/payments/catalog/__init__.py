"""The product catalog: PostgreSQL rows kept in sync with Stripe products and prices."""
