"""Placing an order: the steps shared by the hosted Checkout and the embedded card flow.

1. price the lines from the catalog and insert the order with its items in one
   transaction (nothing half-written);
2. make sure the user has a Stripe customer;
3. create the Stripe object (idempotency key from the order id) and remember its id.

If Stripe refuses or cannot be reached, the order is marked failed and the client gets
a 502; it may retry (a new order: the failed one stays as a record).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import stripe
import structlog

from payments.accounts.customers import ensure_stripe_customer
from payments.orders import service
from payments.orders.service import LineRequest, PricedLine
from payments.orders.stripe_calls import stripe_unavailable

log = structlog.get_logger("payments.orders")

CreateStripeObject = Callable[[dict, list[PricedLine], str], Awaitable[object]]


async def place_order(state, *, user: dict, mode: str, flow: str, lines: list[LineRequest],
                      create_stripe_object: CreateStripeObject) -> tuple[dict, object]:
    """(order, Stripe object) for a new order; raises ApiError (400 bad lines, 502 Stripe)."""
    async with state.db.connection() as conn:
        async with conn.transaction():
            priced = await service.price_lines(conn, lines, mode=mode)
            order = await service.create_order(conn, user_id=user["id"], mode=mode, flow=flow, lines=priced)

    try:
        async with state.db.connection() as conn:
            customer_id = await ensure_stripe_customer(conn, state.stripe, user)
        stripe_object = await create_stripe_object(order, priced, customer_id)
    except stripe.StripeError as exc:
        log.warning("order_stripe_call_failed", order_id=str(order["id"]), error=f"{type(exc).__name__}: {exc}")
        async with state.db.connection() as conn:
            await service.record_creation_failure(conn, order["id"], f"stripe: {type(exc).__name__}")
        raise stripe_unavailable(exc) from None

    async with state.db.connection() as conn:
        if flow == "checkout_session":
            await service.attach_stripe_ids(conn, order["id"], checkout_session_id=stripe_object["id"])
        else:
            await service.attach_stripe_ids(conn, order["id"], payment_intent_id=stripe_object["id"])
    return order, stripe_object
