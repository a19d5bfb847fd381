"""invoice.*: a subscription's invoice was paid or its payment failed.

Like customer.subscription.* (subscriptions.py), an invoice event of the same second as
the row's event has an unknown order: Stripe's current subscription and invoice decide."""

from __future__ import annotations

from payments.mail import notices
from payments.subscriptions import service
from payments.webhooks.context import WebhookContext
from payments.webhooks.handlers._objects import event_object, id_of
from payments.webhooks.handlers.subscriptions import apply_current
from payments.webhooks.ledger import event_time


def subscription_of(invoice: dict) -> str | None:
    # Older API versions: `subscription`; since 2025-03-31: parent.subscription_details.
    parent = (invoice.get("parent") or {}).get("subscription_details") or {}
    return id_of(invoice.get("subscription")) or id_of(parent.get("subscription"))


async def _apply(context: WebhookContext, event: dict, *, paid: bool) -> None:
    invoice = event_object(event)
    subscription_id = subscription_of(invoice)
    if subscription_id is None:
        return  # a one-off invoice: nothing of ours to update
    # The mail's key is the invoice: its paid and payment_succeeded events make one mail.
    await notices.invoice_settled(context.conn, invoice=invoice, subscription_id=subscription_id, paid=paid)
    as_of = event_time(event)
    if await service.apply_invoice(context.conn, subscription_id=subscription_id, invoice_id=invoice["id"],
                                   invoice_status=invoice.get("status"), paid=paid, as_of=as_of):
        return
    if await service.ties_with(context.conn, subscription_id, as_of=as_of):
        await apply_current(context, subscription_id, as_of=as_of)
        current = await context.stripe.v1.invoices.retrieve_async(invoice["id"])
        await service.record_invoice_status(context.conn, subscription_id=subscription_id,
                                            invoice_id=invoice["id"], invoice_status=current["status"])


async def paid(context: WebhookContext, event: dict) -> None:
    await _apply(context, event, paid=True)


async def payment_failed(context: WebhookContext, event: dict) -> None:
    await _apply(context, event, paid=False)


HANDLERS = {
    "invoice.paid": paid,
    # Sent with invoice.paid by Stripe, and alone by localstripe.
    "invoice.payment_succeeded": paid,
    "invoice.payment_failed": payment_failed,
}
