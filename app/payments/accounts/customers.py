"""Each user maps to exactly one Stripe customer, created on first need (checkout).

The create call carries an idempotency key derived from the user id, so two concurrent
checkouts by one user (or a retry after a timeout) yield the same customer.
"""

from __future__ import annotations


def customer_idempotency_key(user_id: int) -> str:
    return f"payments-customer-for-user-{user_id}"


async def ensure_stripe_customer(conn, stripe, user: dict) -> str:
    """The user's Stripe customer id, creating the customer and storing its id if needed."""
    if user.get("stripe_customer_id"):
        return user["stripe_customer_id"]
    cursor = await conn.execute("SELECT stripe_customer_id FROM users WHERE id = %s", (user["id"],))
    row = await cursor.fetchone()
    if row and row["stripe_customer_id"]:
        return row["stripe_customer_id"]

    customer = await stripe.v1.customers.create_async(
        {"email": user["email"], "metadata": {"user_id": str(user["id"])}},
        {"idempotency_key": customer_idempotency_key(user["id"])},
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
