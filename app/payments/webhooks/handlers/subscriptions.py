"""customer.subscription.*: mirror the subscription, ignoring events not newer than the row.

An event created in the same second as the one that wrote the row may be older or newer
(`created` has whole seconds): then Stripe's current subscription is fetched and applied
instead. A failed fetch raises, so the delivery gets a 500 and Stripe retries it. The
fetch runs inside the event's transaction, holding the row's lock (ties_with) and a pool
connection for up to the Stripe client's timeout: acceptable for ties, which are rare,
and it keeps a concurrent tied event from applying an older state in between."""

from __future__ import annotations

from datetime import datetime

from payments.mail import notices
from payments.subscriptions import service
from payments.webhooks.context import WebhookContext
from payments.webhooks.handlers._objects import event_object
from payments.webhooks.ledger import event_time


async def apply_current(context: WebhookContext, subscription_id: str, *, as_of: datetime) -> None:
    """After a tie: Stripe's subscription as it is now decides, recorded with the event's time."""
    current = await context.stripe.v1.subscriptions.retrieve_async(subscription_id)
    await service.apply_subscription(context.conn, current.to_dict(), as_of=as_of, same_time=True)


async def subscription_changed(context: WebhookContext, event: dict) -> None:
    # deleted carries the subscription with status "canceled": the same upsert applies.
    subscription, as_of = event_object(event), event_time(event)
    if event["type"] == "customer.subscription.deleted":
        await notices.subscription_cancelled(context.conn, subscription)
    if await service.apply_subscription(context.conn, subscription, as_of=as_of):
        return
    if await service.ties_with(context.conn, subscription["id"], as_of=as_of):
        await apply_current(context, subscription["id"], as_of=as_of)


HANDLERS = {
    "customer.subscription.created": subscription_changed,
    "customer.subscription.updated": subscription_changed,
    "customer.subscription.deleted": subscription_changed,
    "customer.subscription.paused": subscription_changed,
    "customer.subscription.resumed": subscription_changed,
}
