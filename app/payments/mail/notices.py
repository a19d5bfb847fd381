"""Which mail each fact produces, enqueued in the caller's transaction (outbox.py).

Called by the order lifecycle and the subscription webhook handlers; plain functions of
the rows and Stripe objects they already hold."""

from __future__ import annotations

from payments.mail import outbox


async def order_paid(conn, order: dict) -> None:
    if order["mode"] != "payment":
        return  # a subscription's first payment is told by subscription_started
    await outbox.enqueue_for_user(conn, kind="order_paid", dedup_key=f"order_paid:{order['id']}",
                                  user_id=order["user_id"], context=await _order_context(conn, order))


async def refund_issued(conn, order: dict) -> None:
    await outbox.enqueue_for_user(conn, kind="refund_issued", dedup_key=f"refund_issued:{order['id']}",
                                  user_id=order["user_id"], context=await _order_context(conn, order))


async def invoice_settled(conn, *, invoice: dict, subscription_id: str, paid: bool) -> None:
    """invoice.paid / payment_succeeded (started or renewed) or invoice.payment_failed."""
    if not paid:
        kind = "subscription_payment_failed"
    elif invoice.get("billing_reason") == "subscription_create":
        kind = "subscription_started"
    else:
        kind = "subscription_renewed"
    await outbox.enqueue_for_customer(
        conn, kind=kind, dedup_key=f"{kind}:{invoice['id']}", stripe_customer_id=_id_of(invoice.get("customer")),
        context={"subscription_id": subscription_id, "invoice_id": invoice["id"],
                 "amount": invoice.get("amount_paid") if paid else invoice.get("amount_due"),
                 "currency": invoice.get("currency"),
                 "hosted_invoice_url": invoice.get("hosted_invoice_url")})


async def subscription_cancelled(conn, subscription: dict) -> None:
    await outbox.enqueue_for_customer(
        conn, kind="subscription_cancelled", dedup_key=f"subscription_cancelled:{subscription['id']}",
        stripe_customer_id=_id_of(subscription.get("customer")),
        context={"subscription_id": subscription["id"]})


def _id_of(value) -> str | None:
    return value if isinstance(value, str) or value is None else value.get("id")


async def _order_context(conn, order: dict) -> dict:
    cursor = await conn.execute(
        "SELECT product_name, quantity, unit_amount FROM order_items WHERE order_id = %s ORDER BY id",
        (order["id"],))
    return {"order_id": str(order["id"]), "amount": order["amount_total"], "currency": order["currency"],
            "items": await cursor.fetchall()}
