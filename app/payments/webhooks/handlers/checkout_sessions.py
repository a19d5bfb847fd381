"""checkout.session.*: the hosted Checkout page finished, paid later, failed or expired."""

from __future__ import annotations

import structlog

from payments.orders import lifecycle, service
from payments.subscriptions import service as subscriptions
from payments.webhooks.context import WebhookContext
from payments.webhooks.handlers._objects import event_object, id_of, order_id_of

log = structlog.get_logger("payments.webhooks")

# "unpaid" at completion means a delayed payment method: wait for async_payment_*.
# "no_payment_required" (a 100 % coupon, a trial) still goes through the amount check: the
# shop offers neither, so a free session for an order that costs money is recorded as a
# mismatch and the order stays unpaid.
PAID_STATUSES = ("paid", "no_payment_required")


async def _order_for(context: WebhookContext, session: dict) -> dict | None:
    order = await service.find_order_for_stripe(
        context.conn, order_id=order_id_of(session), checkout_session_id=session["id"])
    if order is None:
        log.info("checkout_session_without_order", checkout_session=session["id"])
        return None
    await service.attach_stripe_ids(context.conn, order["id"], checkout_session_id=session["id"],
                                    payment_intent_id=id_of(session.get("payment_intent")))
    subscription_id = id_of(session.get("subscription"))
    if subscription_id:
        await subscriptions.link_order(context.conn, order["id"], subscription_id)
    return order


async def _mark_paid_if_in_full(context: WebhookContext, order: dict, session: dict, event: dict) -> None:
    # As for payment_intent.succeeded: a session that took another amount (or currency)
    # than the order's total is recorded, and the order stays unpaid.
    if await lifecycle.paid_in_full(context, order, event=event, amount=session.get("amount_total"),
                                    currency=session.get("currency")):
        await lifecycle.mark_paid(context, order, event=event)


async def completed(context: WebhookContext, event: dict) -> None:
    session = event_object(event)
    order = await _order_for(context, session)
    if order is not None and session.get("payment_status") in PAID_STATUSES:
        await _mark_paid_if_in_full(context, order, session, event)


async def async_payment_succeeded(context: WebhookContext, event: dict) -> None:
    session = event_object(event)
    order = await _order_for(context, session)
    if order is not None:
        await _mark_paid_if_in_full(context, order, session, event)


async def async_payment_failed(context: WebhookContext, event: dict) -> None:
    order = await _order_for(context, event_object(event))
    if order is not None:
        await lifecycle.mark_failed(context, order, event=event, reason="delayed payment failed")


async def expired(context: WebhookContext, event: dict) -> None:
    order = await _order_for(context, event_object(event))
    if order is not None:
        await lifecycle.mark_failed(context, order, event=event, reason="checkout session expired")


HANDLERS = {
    "checkout.session.completed": completed,
    "checkout.session.async_payment_succeeded": async_payment_succeeded,
    "checkout.session.async_payment_failed": async_payment_failed,
    "checkout.session.expired": expired,
}
