"""The payments table: one row per Stripe PaymentIntent of an order, from the webhooks.

A row's status only moves forward (failed/canceled -> succeeded -> refunded), like
the order's, so a late payment_failed cannot hide a success.
"""

from __future__ import annotations

# Later in this list wins; failed and canceled may replace each other.
_STATUS_RANK = "ARRAY['failed', 'canceled', 'succeeded', 'refunded']"


async def upsert_attempt(conn, *, order_id, payment_intent_id: str, status: str, amount: int, currency: str,
                         charge_id: str | None = None, failure_code: str | None = None,
                         failure_message: str | None = None) -> None:
    await conn.execute(
        f"""
        INSERT INTO payments (order_id, stripe_payment_intent_id, stripe_charge_id, status, amount,
                              currency, failure_code, failure_message)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (stripe_payment_intent_id) DO UPDATE SET
            stripe_charge_id = COALESCE(EXCLUDED.stripe_charge_id, payments.stripe_charge_id),
            status = EXCLUDED.status,
            failure_code = EXCLUDED.failure_code,
            failure_message = EXCLUDED.failure_message,
            updated_at = now()
        WHERE array_position({_STATUS_RANK}, EXCLUDED.status) >= array_position({_STATUS_RANK}, payments.status)
           OR payments.status IN ('failed', 'canceled') AND EXCLUDED.status IN ('failed', 'canceled')
        """,
        (order_id, payment_intent_id, charge_id, status, amount, currency.lower(), failure_code, failure_message),
    )


async def record_refund(conn, *, order_id, payment_intent_id: str, charge_id: str, amount: int,
                        amount_refunded: int, currency: str, fully_refunded: bool) -> None:
    """From charge.refunded: the refunded amount only grows, whatever the delivery order."""
    await conn.execute(
        """
        INSERT INTO payments (order_id, stripe_payment_intent_id, stripe_charge_id, status, amount,
                              amount_refunded, currency)
        VALUES (%s, %s, %s, CASE WHEN %s THEN 'refunded' ELSE 'succeeded' END, %s, %s, %s)
        ON CONFLICT (stripe_payment_intent_id) DO UPDATE SET
            stripe_charge_id = EXCLUDED.stripe_charge_id,
            amount_refunded = GREATEST(payments.amount_refunded, EXCLUDED.amount_refunded),
            status = CASE WHEN %s THEN 'refunded' ELSE payments.status END,
            updated_at = now()
        """,
        (order_id, payment_intent_id, charge_id, fully_refunded, amount, amount_refunded, currency.lower(),
         fully_refunded),
    )


async def list_for_order(conn, order_id) -> list[dict]:
    cursor = await conn.execute(
        """
        SELECT stripe_payment_intent_id, stripe_charge_id, status, amount, amount_refunded, currency,
               failure_code, failure_message, created_at, updated_at
          FROM payments WHERE order_id = %s ORDER BY id
        """,
        (order_id,),
    )
    return await cursor.fetchall()
