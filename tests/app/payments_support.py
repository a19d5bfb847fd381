"""Helpers and fixtures for the payments tests (orders, checkout, webhooks, refunds,
subscriptions). Test modules import the fixtures they use from here.

Users are inserted directly and signed in with a real Redis session (the sign-up flow
itself is covered by test_accounts.py); catalog prices are created in localstripe
behind the Stripe stub and written to PostgreSQL with the catalog's own upserts.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from payments.accounts.sessions import COOKIE_NAME, create_session
from payments.catalog import store
from payments.webhooks.handlers import HANDLERS


async def query(app, sql: str, params=()) -> list[dict]:
    async with app.state.db.connection() as conn:
        cursor = await conn.execute(sql, params)
        return await cursor.fetchall()


async def count(app, table: str) -> int:
    rows = await query(app, f"SELECT count(*) AS n FROM {table}")
    return rows[0]["n"]


async def create_user(app, *, admin: bool = False) -> dict:
    email = f"user-{uuid.uuid4().hex[:10]}@example.com"
    rows = await query(
        app,
        "INSERT INTO users (email, password_hash, is_admin) VALUES (%s, 'not-a-real-hash', %s)"
        " RETURNING id, email, is_admin, stripe_customer_id",
        (email, admin),
    )
    return rows[0]


@pytest.fixture
async def sign_in(app):
    """`user, client = await sign_in(admin=False)`: a new user and a client with their session."""
    clients: list[httpx.AsyncClient] = []

    async def make(*, admin: bool = False, user: dict | None = None):
        user = user or await create_user(app, admin=admin)
        session_id = await create_session(app.state.redis, user["id"], 600)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                                   cookies={COOKIE_NAME: session_id})
        clients.append(client)
        return user, client

    yield make
    for client in clients:
        await client.aclose()


async def catalog_price(app, *, unit_amount: int = 1500, currency: str = "usd", interval: str | None = None,
                        name: str | None = None) -> dict:
    """A product and price in Stripe (localstripe + stub), synced into the catalog tables."""
    stripe = app.state.stripe
    product = await stripe.v1.products.create_async({"name": name or f"Product {uuid.uuid4().hex[:8]}"})
    params: dict = {"product": product["id"], "unit_amount": unit_amount, "currency": currency}
    if interval:
        params["recurring"] = {"interval": interval}
    price = await stripe.v1.prices.create_async(params)
    async with app.state.db.connection() as conn:
        await store.upsert_product(conn, product)
        await store.upsert_price(conn, price)
    return price


async def local_price(app, *, unit_amount: int = 1500, currency: str = "usd", interval: str | None = None,
                      active: bool = True) -> dict:
    """A price in the catalog tables only, for tests that never send it to Stripe."""
    product_id = f"prod_{uuid.uuid4().hex[:12]}"
    price = {"id": f"price_{uuid.uuid4().hex[:12]}", "product": product_id, "unit_amount": unit_amount,
             "currency": currency, "active": active, "created": int(time.time()),
             "recurring": {"interval": interval} if interval else None}
    async with app.state.db.connection() as conn:
        await store.upsert_product(conn, {"id": product_id, "name": f"Local {product_id}", "active": True,
                                          "updated": int(time.time())})
        await store.upsert_price(conn, price)
    return price


def make_event(event_type: str, obj: dict, *, created: int | None = None, event_id: str | None = None) -> dict:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": event_type,
        "created": created if created is not None else int(time.time()),
        "api_version": "2024-06-20",
        "livemode": False,
        "data": {"object": obj},
    }


@pytest.fixture
def deliver(client, settings, sign_stripe_payload):
    """`await deliver(event)`: POST it to the webhook endpoint, signed as Stripe would."""

    async def send(event: dict | bytes, *, timestamp: int | None = None, secret: str | None = None,
                   signature: str | None = None) -> httpx.Response:
        payload = event if isinstance(event, bytes) else json.dumps(event).encode()
        header = signature or sign_stripe_payload(payload, secret or settings.stripe_webhook_secret, timestamp)
        return await client.post("/api/webhooks/stripe", content=payload,
                                 headers={"Content-Type": "application/json", "Stripe-Signature": header})

    return send


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def payment_intent_object(order: dict, *, intent_id: str | None = None, amount: int | None = None,
                          status: str = "succeeded", error: dict | None = None) -> dict:
    return {
        "id": intent_id or order.get("stripe_payment_intent_id") or f"pi_{uuid.uuid4().hex[:16]}",
        "object": "payment_intent",
        "amount": order["amount_total"] if amount is None else amount,
        "currency": order["currency"],
        "status": status,
        "latest_charge": f"ch_{uuid.uuid4().hex[:16]}",
        "metadata": {"order_id": str(order["id"])},
        "last_payment_error": error,
    }


async def pending_order(app, user: dict, *, unit_amount: int = 1500, quantity: int = 1,
                        flow: str = "payment_intent", mode: str = "payment") -> dict:
    """An order as the checkout endpoints leave it, without calling Stripe."""
    from payments.orders import service

    price = await local_price(app, unit_amount=unit_amount, interval="month" if mode == "subscription" else None)
    async with app.state.db.connection() as conn:
        async with conn.transaction():
            lines = await service.price_lines(conn, [service.LineRequest(price["id"], quantity)], mode=mode)
            order = await service.create_order(conn, user_id=user["id"], mode=mode, flow=flow, lines=lines)
            intent_id = f"pi_{uuid.uuid4().hex[:16]}"
            if flow == "payment_intent":
                await service.attach_stripe_ids(conn, order["id"], payment_intent_id=intent_id)
                order["stripe_payment_intent_id"] = intent_id
    return order


async def order_status(app, order_id) -> str:
    rows = await query(app, "SELECT status FROM orders WHERE id = %s", (order_id,))
    return rows[0]["status"]


async def scrape(client) -> dict[str, float]:
    """Unlabelled samples of one GET /metrics, by name."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    return {sample.name: sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples if not sample.labels}


def product_event() -> dict:
    """A product.created event for a product of its own."""
    product_id = f"prod_{uuid.uuid4().hex[:12]}"
    return make_event("product.created", {"id": product_id, "name": f"Product {product_id}"})


@pytest.fixture
def failing_ids(monkeypatch) -> set[str]:
    """Event ids whose product.created handler raises in this process (remove an id: fixed,
    so a retry or a replay succeeds)."""
    ids: set[str] = set()
    real_handler = HANDLERS["product.created"]

    async def fails_for_listed_ids(context, event):
        if event["id"] in ids:
            raise RuntimeError("catalog store unavailable")
        await real_handler(context, event)

    monkeypatch.setitem(HANDLERS, "product.created", fails_for_listed_ids)
    return ids
