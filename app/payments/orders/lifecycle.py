"""Order status changes driven by verified webhooks, with their audit rows and metrics.

Each function moves the order only if the lifecycle allows it (see
`service.ALLOWED_TRANSITIONS`) and returns whether it did; the audit row and the
`stripe_payments_total` increment happen only for a real change, so a payment counts
once whichever event (payment_intent.* or checkout.session.*) reports it first.
"""

from __future__ import annotations

from payments import audit
from payments.mail import notices
from payments.metrics import STRIPE_PAYMENTS_TOTAL
from payments.orders import service
from payments.webhooks.context import WebhookContext


def _count(context: WebhookContext, status: str, currency: str) -> None:
    # After the commit: a rolled-back transaction must not count a payment.
    context.on_commit(lambda: STRIPE_PAYMENTS_TOTAL.labels(status=status, currency=currency).inc())


async def mark_paid(context: WebhookContext, order: dict, *, event: dict) -> bool:
    if not await service.transition(context.conn, order, "paid"):
        return False
    await audit.record(context.conn, action="payment.succeeded", user_id=order["user_id"],
                       details=_details(order, event))
    await notices.order_paid(context.conn, order)  # the receipt, committed with the payment
    _count(context, "succeeded", order["currency"])
    return True


async def paid_in_full(context: WebhookContext, order: dict, *, event: dict, amount, currency) -> bool:
    """Whether Stripe took what the order costs. A mismatch is recorded as a security
    event and the caller leaves the order unpaid: never fulfil it silently."""
    received = [amount, str(currency or "").lower()]
    expected = [order["amount_total"], order["currency"]]
    if received == expected:
        return True
    await audit.record(context.conn, action="security.payment_amount_mismatch", user_id=order["user_id"],
                       details={"order_id": str(order["id"]), "event_id": event["id"],
                                "expected": expected, "received": received})
    return False


async def mark_failed(context: WebhookContext, order: dict, *, event: dict, reason: str) -> bool:
    if not await service.transition(context.conn, order, "failed", failure_reason=reason):
        return False
    await audit.record(context.conn, action="payment.failed", user_id=order["user_id"],
                       details={**_details(order, event), "reason": reason})
    _count(context, "failed", order["currency"])
    return True


async def mark_refunded(context: WebhookContext, order: dict, *, event: dict) -> bool:
    if not await service.transition(context.conn, order, "refunded"):
        return False
    await audit.record(context.conn, action="payment.refunded", user_id=order["user_id"],
                       details=_details(order, event))
    await notices.refund_issued(context.conn, order)
    _count(context, "refunded", order["currency"])
    return True


def _details(order: dict, event: dict) -> dict:
    return {"order_id": str(order["id"]), "event_id": event["id"], "event_type": event["type"],
            "amount": order["amount_total"], "currency": order["currency"]}
