"""customer.subscription.*: mirror the subscription, ignoring events older than the row."""

from __future__ import annotations

from payments.subscriptions import service
from payments.webhooks.context import WebhookContext
from payments.webhooks.handlers._objects import event_object
from payments.webhooks.ledger import event_time


async def subscription_changed(context: WebhookContext, event: dict) -> None:
    # deleted carries the subscription with status "canceled": the same upsert applies.
    await service.apply_subscription(context.conn, event_object(event), as_of=event_time(event))


HANDLERS = {
    "customer.subscription.created": subscription_changed,
    "customer.subscription.updated": subscription_changed,
    "customer.subscription.deleted": subscription_changed,
    "customer.subscription.paused": subscription_changed,
    "customer.subscription.resumed": subscription_changed,
}
