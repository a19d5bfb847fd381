"""product.* and price.*: keep the catalog tables current, then drop the cached listings."""

from __future__ import annotations

from payments.catalog import cache, store
from payments.webhooks.context import WebhookContext
from payments.webhooks.handlers._objects import event_object


def _invalidate_after_commit(context: WebhookContext) -> None:
    if context.redis is not None:
        context.on_commit(lambda: cache.invalidate(context.redis))


async def product_changed(context: WebhookContext, event: dict) -> None:
    # The event's time orders versions: the store ignores one older than the stored row.
    await store.upsert_product(context.conn, event_object(event), updated_at=event["created"])
    _invalidate_after_commit(context)


async def product_deleted(context: WebhookContext, event: dict) -> None:
    await store.deactivate_product(context.conn, event_object(event)["id"], deleted_at=event["created"])
    _invalidate_after_commit(context)


async def price_changed(context: WebhookContext, event: dict) -> None:
    await store.upsert_price(context.conn, event_object(event), updated_at=event["created"])
    _invalidate_after_commit(context)


async def price_deleted(context: WebhookContext, event: dict) -> None:
    # Kept as an inactive row: past orders still point at it.
    await store.upsert_price(context.conn, {**event_object(event), "active": False}, updated_at=event["created"])
    _invalidate_after_commit(context)


HANDLERS = {
    "product.created": product_changed,
    "product.updated": product_changed,
    "product.deleted": product_deleted,
    "price.created": price_changed,
    "price.updated": price_changed,
    "price.deleted": price_deleted,
}
