"""Orders and their line items: validation, pricing, creation and the status lifecycle.

Plain functions over a psycopg connection; the caller owns the transaction. Amounts
always come from the catalog in PostgreSQL, never from the client.

Status moves only forward (pending -> paid | failed | refunded, failed -> paid | refunded,
paid -> refunded), so a webhook that arrives late or twice can never move an order back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from payments.errors import ApiError

MODES = ("payment", "subscription")
MAX_LINE_ITEMS = 20
MAX_QUANTITY = 100
# Stripe refuses amounts over eight digits in most currencies.
MAX_AMOUNT_TOTAL = 99_999_999

ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    # -> refunded: Stripe may deliver charge.refunded before payment_intent.succeeded;
    # the refund must not be lost, and the late success then changes nothing.
    "pending": frozenset({"paid", "failed", "refunded"}),
    # A PaymentIntent may succeed after an earlier attempt on it failed.
    "failed": frozenset({"paid", "refunded"}),
    "paid": frozenset({"refunded"}),
    "refunded": frozenset(),
}

_ORDER_COLUMNS = """
    id, user_id, mode, flow, status, currency, amount_total, stripe_checkout_session_id,
    stripe_payment_intent_id, stripe_subscription_id, stripe_refund_id, failure_reason,
    created_at, updated_at, paid_at, refunded_at
"""

# The orders that stored a PaymentIntent's id, as a query another statement can embed
# (the webhook ledger's one-statement path for events of no order of ours).
ORDERS_OF_PAYMENT_INTENT = "SELECT 1 FROM orders WHERE stripe_payment_intent_id = %s"


@dataclass(frozen=True)
class LineRequest:
    stripe_price_id: str
    quantity: int


@dataclass(frozen=True)
class PricedLine:
    price_id: int
    stripe_price_id: str
    product_name: str
    quantity: int
    unit_amount: int
    currency: str


def _bad(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)


def parse_mode(value: Any) -> str:
    if value not in MODES:
        raise _bad("invalid_mode", "mode must be \"payment\" or \"subscription\".")
    return value


def parse_line_items(body: dict) -> list[LineRequest]:
    """`{"items": [{"price_id": "price_...", "quantity": 1}, ...]}` checked for shape only."""
    items = body.get("items")
    if not isinstance(items, list) or not items:
        raise _bad("invalid_items", "items must be a non-empty list.")
    if len(items) > MAX_LINE_ITEMS:
        raise _bad("invalid_items", f"An order has at most {MAX_LINE_ITEMS} items.")
    lines: list[LineRequest] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise _bad("invalid_items", f"items[{index}] must be an object.")
        price_id = item.get("price_id")
        if not isinstance(price_id, str) or not 1 <= len(price_id) <= 255:
            raise _bad("invalid_price", f"items[{index}].price_id must be a price id.")
        quantity = item.get("quantity", 1)
        # bool is an int in Python: `true` must not count as 1.
        if not isinstance(quantity, int) or isinstance(quantity, bool):
            raise _bad("invalid_quantity", f"items[{index}].quantity must be a whole number.")
        if not 1 <= quantity <= MAX_QUANTITY:
            raise _bad("invalid_quantity", f"items[{index}].quantity must be between 1 and {MAX_QUANTITY}.")
        if price_id in seen:
            raise _bad("duplicate_price", f"items[{index}] repeats price {price_id}; raise its quantity instead.")
        seen.add(price_id)
        lines.append(LineRequest(price_id, quantity))
    return lines


async def price_lines(conn, lines: list[LineRequest], *, mode: str) -> list[PricedLine]:
    """Look every line up in the catalog: unknown or inactive prices, a price of the wrong
    kind for `mode`, mixed currencies and oversized totals are refused with a 400."""
    cursor = await conn.execute(
        """
        SELECT pr.id, pr.stripe_price_id, pr.unit_amount, pr.currency, pr.recurring_interval,
               p.name AS product_name
          FROM prices pr
          JOIN products p ON p.id = pr.product_id
         WHERE pr.stripe_price_id = ANY(%s) AND pr.active AND p.active
        """,
        ([line.stripe_price_id for line in lines],),
    )
    found = {row["stripe_price_id"]: row for row in await cursor.fetchall()}
    priced: list[PricedLine] = []
    for line in lines:
        row = found.get(line.stripe_price_id)
        if row is None:
            raise _bad("unknown_price", f"No price {line.stripe_price_id} is for sale.")
        recurring = row["recurring_interval"] is not None
        if mode == "payment" and recurring:
            raise _bad("price_is_recurring", f"Price {line.stripe_price_id} is a subscription price.")
        if mode == "subscription" and not recurring:
            raise _bad("price_not_recurring", f"Price {line.stripe_price_id} is not a subscription price.")
        priced.append(PricedLine(row["id"], row["stripe_price_id"], row["product_name"], line.quantity,
                                 row["unit_amount"], row["currency"]))
    if len({line.currency for line in priced}) > 1:
        raise _bad("mixed_currencies", "Every item of an order must have the same currency.")
    if order_total(priced) > MAX_AMOUNT_TOTAL:
        raise _bad("amount_too_large", "The order total is larger than a single payment may be.")
    return priced


def order_total(lines: list[PricedLine]) -> int:
    return sum(line.unit_amount * line.quantity for line in lines)


async def create_order(conn, *, user_id: int, mode: str, flow: str, lines: list[PricedLine]) -> dict:
    """Insert the order and its items; call inside a transaction so neither exists alone."""
    cursor = await conn.execute(
        f"""
        INSERT INTO orders (user_id, mode, flow, currency, amount_total)
        VALUES (%s, %s, %s, %s, %s)
        RETURNING {_ORDER_COLUMNS}
        """,
        (user_id, mode, flow, lines[0].currency, order_total(lines)),
    )
    order = await cursor.fetchone()
    async with conn.cursor() as items_cursor:
        await items_cursor.executemany(
            """
            INSERT INTO order_items (order_id, price_id, stripe_price_id, product_name, quantity,
                                     unit_amount, currency)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            """,
            [(order["id"], line.price_id, line.stripe_price_id, line.product_name, line.quantity,
              line.unit_amount, line.currency) for line in lines],
        )
    return order


async def attach_stripe_ids(conn, order_id, *, checkout_session_id: str | None = None,
                            payment_intent_id: str | None = None) -> None:
    """Remember the Stripe object created for the order (COALESCE: never clear one)."""
    await conn.execute(
        """
        UPDATE orders
           SET stripe_checkout_session_id = COALESCE(stripe_checkout_session_id, %s),
               stripe_payment_intent_id = COALESCE(stripe_payment_intent_id, %s),
               updated_at = now()
         WHERE id = %s
        """,
        (checkout_session_id, payment_intent_id, order_id),
    )


async def get_order(conn, order_id, *, user_id: int | None = None, for_update: bool = False) -> dict | None:
    """One order (with `items`), or None; `user_id` restricts it to that user's orders."""
    if not _is_uuid(order_id):
        return None
    query = f"SELECT {_ORDER_COLUMNS} FROM orders WHERE id = %s"
    params: list[Any] = [order_id]
    if user_id is not None:
        query += " AND user_id = %s"
        params.append(user_id)
    if for_update:
        query += " FOR UPDATE"
    order = await (await conn.execute(query, params)).fetchone()
    if order is not None:
        order["items"] = await _items_of(conn, order["id"])
    return order


async def list_orders(conn, *, user_id: int, limit: int = 100) -> list[dict]:
    cursor = await conn.execute(
        f"SELECT {_ORDER_COLUMNS} FROM orders WHERE user_id = %s ORDER BY created_at DESC LIMIT %s",
        (user_id, limit),
    )
    orders = await cursor.fetchall()
    for order in orders:
        order["items"] = await _items_of(conn, order["id"])
    return orders


async def _items_of(conn, order_id) -> list[dict]:
    cursor = await conn.execute(
        "SELECT stripe_price_id, product_name, quantity, unit_amount, currency"
        " FROM order_items WHERE order_id = %s ORDER BY id",
        (order_id,),
    )
    return await cursor.fetchall()


async def find_order_for_stripe(conn, *, order_id: str | None = None, checkout_session_id: str | None = None,
                                payment_intent_id: str | None = None) -> dict | None:
    """The order a Stripe object belongs to, locked for update. Tries our own id from the
    object's metadata first, then the Stripe ids we stored."""
    for column, value in (("id", order_id if _is_uuid(order_id) else None),
                          ("stripe_checkout_session_id", checkout_session_id),
                          ("stripe_payment_intent_id", payment_intent_id)):
        if value:
            cursor = await conn.execute(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE {column} = %s FOR UPDATE", (value,))
            order = await cursor.fetchone()
            if order is not None:
                return order
    return None


async def transition(conn, order: dict, to_status: str, *, failure_reason: str | None = None) -> bool:
    """Move `order` (locked by the caller) to `to_status` if the lifecycle allows it.

    Returns False, changing nothing, for a move backwards or sideways (a late or
    repeated event): callers then skip their side effects too.
    """
    if to_status not in ALLOWED_TRANSITIONS[order["status"]]:
        return False
    await conn.execute(
        """
        UPDATE orders
           SET status = %s,
               failure_reason = CASE WHEN %s = 'failed' THEN %s ELSE failure_reason END,
               paid_at = CASE WHEN %s = 'paid' THEN now() ELSE paid_at END,
               refunded_at = CASE WHEN %s = 'refunded' THEN now() ELSE refunded_at END,
               updated_at = now()
         WHERE id = %s
        """,
        (to_status, to_status, failure_reason, to_status, to_status, order["id"]),
    )
    order["status"] = to_status
    return True


async def record_refund_requested(conn, order_id, refund_id: str) -> None:
    await conn.execute(
        "UPDATE orders SET stripe_refund_id = %s, updated_at = now() WHERE id = %s",
        (refund_id, order_id),
    )


async def record_creation_failure(conn, order_id, reason: str) -> None:
    """Stripe refused or could not be reached when the order was placed: the order failed."""
    await conn.execute(
        """
        UPDATE orders SET status = 'failed', failure_reason = %s, updated_at = now()
         WHERE id = %s AND status = 'pending'
        """,
        (reason, order_id),
    )


def order_json(order: dict) -> dict:
    """The public shape of an order in API responses."""
    def iso(value):
        return value.isoformat() if value is not None else None

    return {
        "id": str(order["id"]),
        "status": order["status"],
        "mode": order["mode"],
        "flow": order["flow"],
        "currency": order["currency"],
        "amount_total": order["amount_total"],
        "items": [
            {
                "price_id": item["stripe_price_id"],
                "product_name": item["product_name"],
                "quantity": item["quantity"],
                "unit_amount": item["unit_amount"],
                "currency": item["currency"],
            }
            for item in order.get("items", [])
        ],
        "stripe_checkout_session_id": order["stripe_checkout_session_id"],
        "stripe_payment_intent_id": order["stripe_payment_intent_id"],
        "created_at": iso(order["created_at"]),
        "paid_at": iso(order["paid_at"]),
        "refunded_at": iso(order["refunded_at"]),
    }


def _is_uuid(value) -> bool:
    if value is None:
        return False
    if isinstance(value, uuid.UUID):
        return True
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
