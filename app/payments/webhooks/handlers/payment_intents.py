"""payment_intent.*: the embedded card flow (and the PaymentIntent behind a Checkout
Session) succeeded, failed or was canceled."""

from __future__ import annotations

import structlog

from payments.orders import attempts, lifecycle, service
from payments.webhooks.context import WebhookContext
from payments.webhooks.handlers._objects import event_object, id_of, order_id_of
from payments.webhooks.handlers.related import OrdersOfPaymentIntent

log = structlog.get_logger("payments.webhooks")


async def _order_for(context: WebhookContext, intent: dict) -> dict | None:
    order = await service.find_order_for_stripe(
        context.conn, order_id=order_id_of(intent), payment_intent_id=intent["id"])
    if order is None:
        # Not one of our orders (e.g. a subscription invoice's PaymentIntent).
        log.info("payment_intent_without_order", payment_intent=intent["id"])
        return None
    await service.attach_stripe_ids(context.conn, order["id"], payment_intent_id=intent["id"])
    return order


async def succeeded(context: WebhookContext, event: dict) -> None:
    intent = event_object(event)
    order = await _order_for(context, intent)
    if order is None:
        return
    amount, currency = int(intent["amount"]), str(intent["currency"]).lower()
    await attempts.upsert_attempt(context.conn, order_id=order["id"], payment_intent_id=intent["id"],
                                  status="succeeded", amount=amount, currency=currency,
                                  charge_id=id_of(intent.get("latest_charge")))
    if await lifecycle.paid_in_full(context, order, event=event, amount=amount, currency=currency):
        await lifecycle.mark_paid(context, order, event=event)


async def payment_failed(context: WebhookContext, event: dict) -> None:
    intent = event_object(event)
    order = await _order_for(context, intent)
    if order is None:
        return
    error = intent.get("last_payment_error") or {}
    reason = error.get("message") or error.get("code") or "payment failed"
    await attempts.upsert_attempt(context.conn, order_id=order["id"], payment_intent_id=intent["id"],
                                  status="failed", amount=int(intent["amount"]), currency=intent["currency"],
                                  charge_id=id_of(intent.get("latest_charge")),
                                  failure_code=error.get("code"), failure_message=error.get("message"))
    await lifecycle.mark_failed(context, order, event=event, reason=reason)


async def canceled(context: WebhookContext, event: dict) -> None:
    intent = event_object(event)
    order = await _order_for(context, intent)
    if order is None:
        return
    await attempts.upsert_attempt(context.conn, order_id=order["id"], payment_intent_id=intent["id"],
                                  status="canceled", amount=int(intent["amount"]), currency=intent["currency"])
    await lifecycle.mark_failed(context, order, event=event, reason="payment canceled")


def related_orders(event: dict) -> OrdersOfPaymentIntent | None:
    """For the processor's one-statement path: None when the PaymentIntent carries one of
    our order ids (it is ours), else the lookup of an order that stored its id. A
    PaymentIntent of no order (a subscription invoice's, one made in the dashboard) is
    then recorded without a transaction of its own; every handler here does nothing else
    with it."""
    intent = event_object(event)
    if order_id_of(intent):
        return None
    return OrdersOfPaymentIntent(intent["id"])


HANDLERS = {
    "payment_intent.succeeded": succeeded,
    "payment_intent.payment_failed": payment_failed,
    "payment_intent.canceled": canceled,
}
RELATED = dict.fromkeys(HANDLERS, related_orders)
