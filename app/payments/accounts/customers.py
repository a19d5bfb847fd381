"""Each user maps to exactly one Stripe customer, created on first need (checkout).

The create call carries an idempotency key derived from the user row (its id and
created_at), so two concurrent checkouts by one user (or a retry after a timeout) yield
the same customer. The id alone is not enough: after a point-in-time restore the
sequence hands out ids again, and a new user reusing one within Stripe's 24 h key window
would get the old key with different parameters, which Stripe refuses.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def customer_idempotency_key(user_id: int, created_at: datetime) -> str:
    # Whole microseconds since the epoch, exactly (a float timestamp could round).
    created_us = (created_at - _EPOCH) // timedelta(microseconds=1)
    return f"payments-customer-for-user-{user_id}-{created_us}"


async def ensure_stripe_customer(conn, stripe, user: dict) -> str:
    """The user's Stripe customer id, creating the customer and storing its id if needed."""
    if user.get("stripe_customer_id"):
        return user["stripe_customer_id"]
    cursor = await conn.execute("SELECT stripe_customer_id, created_at FROM users WHERE id = %s", (user["id"],))
    row = await cursor.fetchone()
    if row is None:
        raise LookupError(f"user {user['id']} does not exist")
    if row["stripe_customer_id"]:
        return row["stripe_customer_id"]

    customer = await stripe.v1.customers.create_async(
        {"email": user["email"], "metadata": {"user_id": str(user["id"])}},
        {"idempotency_key": customer_idempotency_key(user["id"], row["created_at"])},
    )
    # Keep the first stored id if a concurrent request got there before us.
    cursor = await conn.execute(
        """
        UPDATE users SET stripe_customer_id = coalesce(stripe_customer_id, %s), updated_at = now()
        WHERE id = %s
        RETURNING stripe_customer_id
        """,
        (customer["id"], user["id"]),
    )
    row = await cursor.fetchone()
    user["stripe_customer_id"] = row["stripe_customer_id"]
    return row["stripe_customer_id"]
