"""What a handler family's `related(event)` returns for an event that names no order of
ours: the key of the only rows of ours it could change. The ledger looks it up in the
statement that records the event, for one event alone or for many at once (batch.py)."""

from __future__ import annotations

from typing import NamedTuple

from payments.orders import service


class OrdersOfPaymentIntent(NamedTuple):
    """The orders that stored this PaymentIntent's id; none when the id is None."""

    payment_intent_id: str | None

    # The orders' own query (one parameter, the id): the ledger runs it once for one
    # event, or once per row for a batch.
    QUERY = service.ORDERS_OF_PAYMENT_INTENT
