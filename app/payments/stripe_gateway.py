"""The one place that builds the Stripe client.

Every call in the app uses the async methods (`*_async`) over httpx. STRIPE_API_BASE
points the client at a fake Stripe server (localstripe in tests and the lab).
"""

from __future__ import annotations

import stripe

from payments.config import Settings


def create_http_client(settings: Settings) -> stripe.HTTPXClient:
    """Owned by the lifespan, which closes it (`await http_client.close_async()`)."""
    return stripe.HTTPXClient(timeout=settings.stripe_timeout_seconds)


def create_stripe_client(settings: Settings, http_client: stripe.HTTPXClient | None = None) -> stripe.StripeClient:
    base_addresses = {"api": settings.stripe_api_base.rstrip("/")} if settings.stripe_api_base else None
    return stripe.StripeClient(
        settings.stripe_secret_key,
        http_client=http_client or create_http_client(settings),
        base_addresses=base_addresses,
        # Retries reuse the same idempotency key, so they are safe for POSTs. With the timeout
        # they bound how long a call may take (Settings.stripe_call_max_seconds).
        max_network_retries=settings.stripe_max_network_retries,
    )
