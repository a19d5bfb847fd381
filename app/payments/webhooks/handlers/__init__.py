"""Webhook handlers, one module per event family. Each module exports `HANDLERS`
(event type -> `async def handler(context, event)`); types not listed here are stored
and answered 200 without effect.

A module may also export `RELATED` (event type -> `related(event)`): None, or the key of
the rows of ours the event could change (related.py). When the ledger finds none, the
handler would do nothing, so the processor records the event in one statement (shared
with concurrent events: webhooks/batch.py) instead of running the handler in a
transaction."""

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
RELATED = {
    **payment_intents.RELATED,
    **charges.RELATED,
}
