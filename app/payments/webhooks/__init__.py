"""Stripe webhooks: signature check, the stripe_events ledger, and one handler module per
event family (payments.webhooks.handlers)."""
