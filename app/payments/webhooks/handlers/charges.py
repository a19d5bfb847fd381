"""charge.refunded: a refund went through at Stripe (ours, or one made in the dashboard)."""

from __future__ import annotations

import structlog

from payments.orders import attempts, lifecycle, service
from payments.webhooks.context import WebhookContext
from payments.webhooks.handlers._objects import event_object, id_of, order_id_of
from payments.webhooks.handlers.related import OrdersOfPaymentIntent

log = structlog.get_logger("payments.webhooks")


async def refunded(context: WebhookContext, event: dict) -> None:
    charge = event_object(event)
    payment_intent_id = id_of(charge.get("payment_intent"))
    order = await service.find_order_for_stripe(
        context.conn, order_id=order_id_of(charge), payment_intent_id=payment_intent_id)
    if order is None or payment_intent_id is None:
        log.info("refunded_charge_without_order", charge=charge["id"])
        return
    amount = int(charge["amount"])
    amount_refunded = int(charge.get("amount_refunded") or 0)
    # Only a full refund refunds the order; a partial one is recorded on the payment.
    fully = bool(charge.get("refunded")) or amount_refunded >= amount
    await attempts.record_refund(context.conn, order_id=order["id"], payment_intent_id=payment_intent_id,
                                 charge_id=charge["id"], amount=amount, amount_refunded=amount_refunded,
                                 currency=charge["currency"], fully_refunded=fully)
    if fully:
        await lifecycle.mark_refunded(context, order, event=event)


def related_orders(event: dict) -> OrdersOfPaymentIntent | None:
    """For the processor's one-statement path, as in payment_intents: a charge of no
    order of ours is only recorded (`refunded` does nothing else with it)."""
    charge = event_object(event)
    if order_id_of(charge):
        return None
    return OrdersOfPaymentIntent(id_of(charge.get("payment_intent")))


HANDLERS = {"charge.refunded": refunded}
RELATED = dict.fromkeys(HANDLERS, related_orders)
