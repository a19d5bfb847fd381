"""The subscriptions table: a mirror of Stripe's subscriptions, written by webhooks only.

Stripe does not deliver events in order. Each row keeps the `created` time of the
newest event applied to it (`stripe_event_created`); an event is applied only when it is
strictly newer, so an older one arriving later changes nothing. `created` counts whole
seconds, and Stripe often sends several events for one subscription in the same second
(customer.subscription.created "incomplete", then .updated "active"): when an event ties
with the row (`ties_with`), their order is unknown, and the webhook handlers fetch the
subscription from Stripe and apply its current state with the same time. A canceled
subscription stays canceled (Stripe cannot revive one).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

TERMINAL_STATUSES = ("canceled", "incomplete_expired")


def _id_of(value: Any) -> str | None:
    """Stripe fields hold an id, or the object itself when expanded."""
    if isinstance(value, dict):
        return value.get("id")
    return value


def _time(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), tz=timezone.utc) if value else None


def fields_from_stripe(subscription: dict) -> dict:
    """The columns we keep, from a subscription object of any recent API version."""
    items = (subscription.get("items") or {}).get("data") or []
    first = items[0] if items else {}
    # `price` on current API versions, `plan` on older ones (and localstripe).
    price = first.get("price") or first.get("plan") or subscription.get("plan")
    # current_period_end moved from the subscription to its items in API 2025-03-31.
    period_end = subscription.get("current_period_end") or first.get("current_period_end")
    return {
        "stripe_subscription_id": subscription["id"],
        "stripe_customer_id": _id_of(subscription.get("customer")),
        "status": subscription.get("status") or "incomplete",
        "stripe_price_id": _id_of(price),
        "quantity": first.get("quantity") or subscription.get("quantity"),
        "current_period_end": _time(period_end),
        "cancel_at_period_end": bool(subscription.get("cancel_at_period_end")),
        "canceled_at": _time(subscription.get("canceled_at")),
        "latest_invoice_id": _id_of(subscription.get("latest_invoice")),
    }


async def apply_subscription(conn, subscription: dict, *, as_of: datetime, same_time: bool = False) -> bool:
    """Insert or update from an event created at `as_of`; False when an event as new or
    newer was already applied (or the subscription is canceled for good).

    `same_time=True` also replaces a row written in the same second: for the object just
    fetched from Stripe after a tie, which is at least as new as either event."""
    fields = fields_from_stripe(subscription)
    if not fields["stripe_customer_id"]:
        raise ValueError(f"subscription {fields['stripe_subscription_id']} has no customer")
    cursor = await conn.execute(
        """
        INSERT INTO subscriptions (stripe_subscription_id, stripe_customer_id, status, stripe_price_id,
                                   quantity, current_period_end, cancel_at_period_end, canceled_at,
                                   latest_invoice_id, stripe_event_created)
        VALUES (%(stripe_subscription_id)s, %(stripe_customer_id)s, %(status)s, %(stripe_price_id)s,
                %(quantity)s, %(current_period_end)s, %(cancel_at_period_end)s, %(canceled_at)s,
                %(latest_invoice_id)s, %(as_of)s)
        ON CONFLICT (stripe_subscription_id) DO UPDATE SET
            stripe_customer_id = EXCLUDED.stripe_customer_id,
            status = EXCLUDED.status,
            stripe_price_id = EXCLUDED.stripe_price_id,
            quantity = EXCLUDED.quantity,
            current_period_end = EXCLUDED.current_period_end,
            cancel_at_period_end = EXCLUDED.cancel_at_period_end,
            canceled_at = EXCLUDED.canceled_at,
            latest_invoice_id = COALESCE(EXCLUDED.latest_invoice_id, subscriptions.latest_invoice_id),
            stripe_event_created = EXCLUDED.stripe_event_created,
            updated_at = now()
        WHERE (subscriptions.stripe_event_created < EXCLUDED.stripe_event_created
               OR (%(same_time)s AND subscriptions.stripe_event_created = EXCLUDED.stripe_event_created))
          AND subscriptions.status NOT IN ('canceled', 'incomplete_expired')
        RETURNING id
        """,
        {**fields, "as_of": as_of, "same_time": same_time},
    )
    return await cursor.fetchone() is not None


async def apply_invoice(conn, *, subscription_id: str, invoice_id: str, invoice_status: str | None,
                        paid: bool, as_of: datetime) -> bool:
    """An invoice of the subscription was paid or failed: note it, and move the status
    between active and past_due as Stripe would. False when the row is unknown (its
    customer.subscription.created event will bring it) or as new as this event."""
    cursor = await conn.execute(
        """
        UPDATE subscriptions
           SET latest_invoice_id = %(invoice_id)s,
               latest_invoice_status = %(invoice_status)s,
               status = CASE
                   WHEN %(paid)s AND status IN ('past_due', 'unpaid', 'incomplete') THEN 'active'
                   WHEN NOT %(paid)s AND status IN ('active', 'trialing') THEN 'past_due'
                   ELSE status END,
               stripe_event_created = %(as_of)s,
               updated_at = now()
         WHERE stripe_subscription_id = %(subscription_id)s
           AND stripe_event_created < %(as_of)s
           AND status NOT IN ('canceled', 'incomplete_expired')
        RETURNING id
        """,
        {"invoice_id": invoice_id, "invoice_status": invoice_status, "paid": paid, "as_of": as_of,
         "subscription_id": subscription_id},
    )
    return await cursor.fetchone() is not None


async def ties_with(conn, subscription_id: str, *, as_of: datetime) -> bool:
    """True when the row was written by an event of the same second as `as_of` and can
    still change: which of the two Stripe sent last is unknown. Locks the row, so
    concurrent tied events resolve one after the other."""
    cursor = await conn.execute(
        """
        SELECT 1 FROM subscriptions
         WHERE stripe_subscription_id = %s AND stripe_event_created = %s
           AND status NOT IN ('canceled', 'incomplete_expired')
           FOR UPDATE
        """,
        (subscription_id, as_of),
    )
    return await cursor.fetchone() is not None


async def record_invoice_status(conn, *, subscription_id: str, invoice_id: str, invoice_status: str | None) -> None:
    """The status of the subscription's latest invoice as Stripe has it now (after a tie);
    an older invoice's status is not the latest one's."""
    await conn.execute(
        """
        UPDATE subscriptions SET latest_invoice_status = %s, updated_at = now()
         WHERE stripe_subscription_id = %s AND latest_invoice_id = %s
        """,
        (invoice_status, subscription_id, invoice_id),
    )


async def link_order(conn, order_id, subscription_id: str) -> None:
    """The order whose checkout started this subscription."""
    await conn.execute(
        "UPDATE orders SET stripe_subscription_id = %s, updated_at = now() WHERE id = %s",
        (subscription_id, order_id),
    )


async def list_for_customer(conn, stripe_customer_id: str | None) -> list[dict]:
    """A customer's subscriptions with their plan from the catalog, newest first."""
    if not stripe_customer_id:
        return []
    cursor = await conn.execute(
        """
        SELECT s.stripe_subscription_id, s.status, s.stripe_price_id, s.quantity, s.current_period_end,
               s.cancel_at_period_end, s.canceled_at, s.latest_invoice_status, s.created_at,
               p.name AS product_name, pr.unit_amount, pr.currency, pr.recurring_interval
          FROM subscriptions s
          LEFT JOIN prices pr ON pr.stripe_price_id = s.stripe_price_id
          LEFT JOIN products p ON p.id = pr.product_id
         WHERE s.stripe_customer_id = %s
         ORDER BY s.created_at DESC
        """,
        (stripe_customer_id,),
    )
    return await cursor.fetchall()


def subscription_json(row: dict) -> dict:
    def iso(value):
        return value.isoformat() if value is not None else None

    return {
        "id": row["stripe_subscription_id"],
        "status": row["status"],
        "plan": {
            "price_id": row["stripe_price_id"],
            "product_name": row["product_name"],
            "unit_amount": row["unit_amount"],
            "currency": row["currency"],
            "interval": row["recurring_interval"],
        },
        "quantity": row["quantity"],
        # The renewal date, unless it is set to end then.
        "current_period_end": iso(row["current_period_end"]),
        "cancel_at_period_end": row["cancel_at_period_end"],
        "canceled_at": iso(row["canceled_at"]),
        "latest_invoice_status": row["latest_invoice_status"],
    }
