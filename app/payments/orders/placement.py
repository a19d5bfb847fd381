"""Placing an order: the steps shared by the hosted Checkout and the embedded card flow.

1. price the lines from the catalog and insert the order with its items in one
   transaction (nothing half-written), which also records the order under the request's
   Idempotency-Key (`Claim.record_order`);
2. make sure the user has a Stripe customer;
3. create the Stripe object (idempotency key from the order id) and remember its id.

A retry with the same Idempotency-Key resumes the order its key recorded instead of
starting at 1: with the Stripe id stored it fetches that object, else it repeats step 3
with the same Stripe idempotency key, and Stripe answers with the object it created the
first time (its answer may have been lost). So one key is one order and one Stripe object.

When Stripe does not answer (network, timeout, its 5xx or rate limit), the order stays
pending and the client gets a 503 to retry with the same key; only a definite refusal
marks the order failed (a 502, stored as the key's answer: a new key starts a new order).
The Stripe calls of one request are cut off after `Settings.order_stripe_deadline_seconds`,
which the Idempotency-Key lock outlasts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import stripe
import structlog

from payments.accounts.customers import ensure_stripe_customer
from payments.accounts.ratelimit import enforce_order_limit
from payments.idempotency import Claim
from payments.orders import service
from payments.orders.service import LineRequest
from payments.orders.stripe_calls import is_unanswered, order_refused, order_unanswered

log = structlog.get_logger("payments.orders")


@dataclass(frozen=True)
class StripeObjectCalls:
    """How a flow makes its Stripe object for an order, and fetches it again by id."""

    create: Callable[[dict, str], Awaitable[object]]  # (order with items, customer id)
    retrieve: Callable[[str], Awaitable[object]]


# Stripe keeps an idempotency key's result for 24 hours; resume well inside that.
STRIPE_KEY_LIFETIME = timedelta(hours=23)

_ID_COLUMN = {"checkout_session": "stripe_checkout_session_id", "payment_intent": "stripe_payment_intent_id"}


async def place_order(state, *, user: dict, mode: str, flow: str, lines: list[LineRequest],
                      stripe_object: StripeObjectCalls, claim: Claim | None) -> tuple[dict, object]:
    """(order, Stripe object) for a new order, or for the one `claim` recorded; raises
    ApiError (400 bad lines, 429 too many orders, 502 refused, 503 Stripe unanswered)."""
    order = await _resumed(state, user, claim) if claim is not None and claim.order_id else None
    if order is None:
        order = await _create(state, user=user, mode=mode, flow=flow, lines=lines, claim=claim)
    stored_id = order[_ID_COLUMN[flow]]
    if stored_id is None and order["status"] == "failed":
        # An earlier request with this key was refused and could not store that answer.
        raise order_refused()
    if stored_id is None and datetime.now(timezone.utc) - order["created_at"] > STRIPE_KEY_LIFETIME:
        # Stripe forgets an idempotency key after 24 h: repeating the call now could make a
        # second object. The order ends here; a new key starts a new one.
        async with state.db.connection() as conn:
            await service.record_creation_failure(conn, order["id"], "stripe: not resumed within 24 h")
        raise order_refused()

    try:
        async with asyncio.timeout(state.settings.order_stripe_deadline_seconds):
            if stored_id is not None:
                return order, await stripe_object.retrieve(stored_id)
            async with state.db.connection() as conn:
                customer_id = await ensure_stripe_customer(conn, state.stripe, user)
            created = await stripe_object.create(order, customer_id)
    except (stripe.StripeError, TimeoutError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        if is_unanswered(exc) or stored_id is not None:
            # Stripe may have made the object (a lost answer), or only fetching a stored one
            # failed: the order stays pending, the retry resumes it.
            log.warning("order_stripe_call_unanswered", order_id=str(order["id"]), error=error)
            raise order_unanswered() from None
        log.warning("order_stripe_call_refused", order_id=str(order["id"]), error=error)
        async with state.db.connection() as conn:
            await service.record_creation_failure(conn, order["id"], f"stripe: {type(exc).__name__}")
        raise order_refused() from None

    async with state.db.connection() as conn:
        if flow == "checkout_session":
            await service.attach_stripe_ids(conn, order["id"], checkout_session_id=created["id"])
        else:
            await service.attach_stripe_ids(conn, order["id"], payment_intent_id=created["id"])
    order[_ID_COLUMN[flow]] = created["id"]
    return order, created


async def _create(state, *, user: dict, mode: str, flow: str, lines: list[LineRequest],
                  claim: Claim | None) -> dict:
    await enforce_order_limit(state, user["id"])
    async with state.db.connection() as conn:
        async with conn.transaction():
            priced = await service.price_lines(conn, lines, mode=mode)
            order = await service.create_order(conn, user_id=user["id"], mode=mode, flow=flow, lines=priced)
            if claim is not None:
                await claim.record_order(conn, order["id"])
    order["items"] = [{"stripe_price_id": line.stripe_price_id, "product_name": line.product_name,
                       "quantity": line.quantity, "unit_amount": line.unit_amount, "currency": line.currency}
                      for line in priced]
    return order


async def _resumed(state, user: dict, claim: Claim) -> dict | None:
    async with state.db.connection() as conn:
        order = await service.get_order(conn, claim.order_id, user_id=user["id"])
    if order is not None:
        log.info("order_resumed", order_id=str(order["id"]), stripe_id_stored=order["stripe_payment_intent_id"]
                 or order["stripe_checkout_session_id"] or None)
    return order
