"""Subscriptions mirrored from Stripe webhooks, and what the account page shows of them."""
