"""Webhook handlers, one module per event family. Each module exports `HANDLERS`
(event type -> `async def handler(context, event)`); types not listed here are stored
and answered 200 without effect."""

from __future__ import annotations

from payments.webhooks.handlers import (
    catalog,
    charges,
    checkout_sessions,
    invoices,
    payment_intents,
    subscriptions,
)

HANDLERS = {
    **catalog.HANDLERS,
    **checkout_sessions.HANDLERS,
    **payment_intents.HANDLERS,
    **charges.HANDLERS,
    **subscriptions.HANDLERS,
    **invoices.HANDLERS,
}
