"""Idempotency-Key on the endpoints that create orders and payments."""

from __future__ import annotations

import json

import pytest

from payments import idempotency
from tests.app.payments_support import count, local_price, query, sign_in  # noqa: F401  (fixtures)

PATH = "/api/payment-intents"


async def post(client, body, key: str | None = "key-1", path: str = PATH):
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return await client.post(path, content=json.dumps(body), headers=headers)


async def test_same_key_and_body_replays_the_stored_response(app, sign_in):
    _, client = await sign_in()
    price = await local_price(app)
    body = {"items": [{"price_id": price["id"], "quantity": 1}]}

    first = await post(client, body)
    # Same JSON, other key order and spacing: still the same request.
    second = await client.post(PATH, content=json.dumps({"items": [{"quantity": 1, "price_id": price["id"]}]},
                                                        indent=2),
                               headers={"Content-Type": "application/json", "Idempotency-Key": "key-1"})

    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await count(app, "orders") == 1
    rows = await query(app, "SELECT status, response_status FROM idempotency_keys")
    assert rows == [{"status": "done", "response_status": 201}]


async def test_same_key_with_a_different_body_is_409(app, sign_in):
    _, client = await sign_in()
    price = await local_price(app)
    await post(client, {"items": [{"price_id": price["id"], "quantity": 1}]})

    response = await post(client, {"items": [{"price_id": price["id"], "quantity": 2}]})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert await count(app, "orders") == 1


async def test_same_key_on_another_endpoint_is_409(app, sign_in):
    _, client = await sign_in()
    price = await local_price(app)
    body = {"mode": "payment", "items": [{"price_id": price["id"]}]}
    await post(client, body)

    response = await post(client, body, path="/api/checkout/sessions")

    assert (response.status_code, response.json()["error"]["code"]) == (409, "idempotency_key_reused")


async def test_key_still_in_flight_is_409(app, sign_in):
    user, client = await sign_in()
    price = await local_price(app)
    body = {"items": [{"price_id": price["id"]}]}
    # The first request with this key is still running (its claim is committed, its
    # response not yet stored).
    async with app.state.db.connection() as conn:
        claim = await idempotency.reserve(conn, user_id=user["id"], key="key-1",
                                          req_hash=idempotency.request_hash("POST", PATH, body))
    assert claim is None

    response = await post(client, body)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_in_flight"
    assert await count(app, "orders") == 0


async def test_abandoned_in_flight_key_can_be_taken_over(app, sign_in):
    user, client = await sign_in()
    price = await local_price(app)
    body = {"items": [{"price_id": price["id"]}]}
    async with app.state.db.connection() as conn:
        await idempotency.reserve(conn, user_id=user["id"], key="key-1",
                                  req_hash=idempotency.request_hash("POST", PATH, body))
        await conn.execute("UPDATE idempotency_keys SET created_at = now() - interval '1 hour'")

    response = await post(client, body)

    assert response.status_code == 201
    assert await count(app, "orders") == 1


async def test_a_failed_request_releases_its_key(app, sign_in):
    _, client = await sign_in()
    body = {"items": [{"price_id": "price_not_yet_synced"}]}

    failed = await post(client, body)
    assert (failed.status_code, failed.json()["error"]["code"]) == (400, "unknown_price")
    assert await count(app, "idempotency_keys") == 0

    # The catalog catches up; the client retries with the same key and gets an order.
    from payments.catalog import store

    async with app.state.db.connection() as conn:
        await store.upsert_product(conn, {"id": "prod_late", "name": "Late", "active": True, "updated": 1})
        await store.upsert_price(conn, {"id": "price_not_yet_synced", "product": "prod_late", "unit_amount": 300,
                                        "currency": "usd", "active": True, "created": 1})
    retried = await post(client, body)
    assert retried.status_code == 201
    assert "Idempotent-Replayed" not in retried.headers


async def test_keys_belong_to_one_user(app, sign_in):
    _, alice = await sign_in()
    _, bob = await sign_in()
    price = await local_price(app)
    body = {"items": [{"price_id": price["id"]}]}

    first = await post(alice, body)
    second = await post(bob, body)

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["order_id"] != second.json()["order_id"]


async def test_without_a_key_each_request_creates_an_order(app, sign_in):
    _, client = await sign_in()
    price = await local_price(app)
    body = {"items": [{"price_id": price["id"]}]}

    await post(client, body, key=None)
    await post(client, body, key=None)

    assert await count(app, "orders") == 2
    assert await count(app, "idempotency_keys") == 0


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "caf\u00e9"])
async def test_malformed_key_is_400(app, sign_in, key):
    _, client = await sign_in()
    price = await local_price(app)

    response = await client.post(PATH, content=json.dumps({"items": [{"price_id": price["id"]}]}),
                                 headers={"Content-Type": "application/json",
                                          "Idempotency-Key": key.encode("utf-8")})

    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_idempotency_key")
    assert await count(app, "orders") == 0


def test_request_hash_depends_on_content_not_formatting():
    body = {"items": [{"price_id": "p", "quantity": 1}], "mode": "payment"}
    same = {"mode": "payment", "items": [{"quantity": 1, "price_id": "p"}]}
    assert idempotency.request_hash("POST", PATH, body) == idempotency.request_hash("post", PATH, same)
    assert idempotency.request_hash("POST", PATH, body) != idempotency.request_hash("POST", "/other", body)
    assert idempotency.request_hash("POST", PATH, body) != idempotency.request_hash(
        "POST", PATH, {**body, "mode": "subscription"})
