"""Idempotency-Key on the endpoints that create orders and payments, and the retries it
makes safe: a lost Stripe answer, PostgreSQL failing after Stripe answered, a retry while
the first request runs, a worker that died holding the key.

The retry tests run against localstripe through `stripe_faults.StripeNetwork`, a stand-in
for Stripe's own idempotency (localstripe ignores Idempotency-Key) and for a network that
loses answers; the objects they count are localstripe's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import psycopg
import pytest

from payments import idempotency
from payments.config import Settings
from tests.app import stripe_faults
from tests.app.payments_support import catalog_price, count, local_price, query, sign_in  # noqa: F401  (fixtures)

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
                                          req_hash=idempotency.request_hash("POST", PATH, body), lock_seconds=60)
    assert isinstance(claim, idempotency.Claim) and claim.order_id is None

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
                                  req_hash=idempotency.request_hash("POST", PATH, body), lock_seconds=60)
        await conn.execute("UPDATE idempotency_keys SET locked_at = now() - interval '1 hour'")

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


# -- retries that resume the order ---------------------------------------------------------

FLOWS = [
    pytest.param("/api/payment-intents", {}, "/v1/payment_intents", id="payment-intent"),
    pytest.param("/api/checkout/sessions", {"mode": "payment"}, "/v1/checkout/sessions", id="checkout-session"),
]


async def order_body(app, extra: dict) -> dict:
    price = await catalog_price(app, unit_amount=1800)
    return {**extra, "items": [{"price_id": price["id"], "quantity": 2}]}


async def stripe_objects(app, user: dict, stripe_path: str) -> list[str]:
    """Ids of the PaymentIntents or Checkout Sessions Stripe (localstripe, the stub) holds
    for the user's customer."""
    rows = await query(app, "SELECT stripe_customer_id FROM users WHERE id = %s", (user["id"],))
    customer = rows[0]["stripe_customer_id"]
    stripe = app.state.stripe.v1
    if stripe_path == "/v1/checkout/sessions":
        listed = await stripe.checkout.sessions.list_async({"customer": customer, "limit": 100})
        return [session["id"] for session in listed["data"]]
    found, after = [], None
    while True:  # localstripe lists every PaymentIntent of the session's tests
        page = await stripe.payment_intents.list_async({"limit": 100, **({"starting_after": after} if after else {})})
        found += [intent["id"] for intent in page["data"] if intent["customer"] == customer]
        if not page["has_more"]:
            return found
        after = page["data"][-1]["id"]


def same_answer(first: dict, second: dict) -> bool:
    # The checkout URL or client secret, the Stripe id and the order: all the client uses.
    return {k: v for k, v in first.items() if k != "status"} == {k: v for k, v in second.items() if k != "status"}


@pytest.mark.parametrize("path,extra,stripe_path", FLOWS)
async def test_stripe_answer_lost_after_it_created_the_object_the_retry_resumes_it(
        app, sign_in, path, extra, stripe_path):
    user, client = await sign_in()
    body = await order_body(app, extra)
    network = await stripe_faults.install(app)
    # Every attempt of the library (1 + its retries, same key) reaches Stripe; no answer comes back.
    network.lose(stripe_path, times=app.state.settings.stripe_max_network_retries + 1)

    first = await post(client, body, path=path)

    assert (first.status_code, first.json()["error"]["code"]) == (503, "payment_provider_unavailable")
    orders = await query(app, "SELECT id, status, stripe_payment_intent_id, stripe_checkout_session_id FROM orders")
    assert [o["status"] for o in orders] == ["pending"]
    keys = await query(app, "SELECT status, order_id, locked_at FROM idempotency_keys")
    assert keys == [{"status": "in_flight", "order_id": orders[0]["id"], "locked_at": None}]

    retry = await post(client, body, path=path)
    again = await post(client, body, path=path)

    assert retry.status_code == 201, retry.text
    assert retry.json()["order_id"] == str(orders[0]["id"])
    assert (again.status_code, again.json(), again.headers["Idempotent-Replayed"]) == (201, retry.json(), "true")
    assert await count(app, "orders") == 1
    objects = await stripe_objects(app, user, stripe_path)
    assert len(objects) == 1 and objects[0] in retry.text
    assert network.forwarded.count(("post", stripe_path)) == 1


@pytest.mark.parametrize("path,extra,stripe_path", FLOWS)
async def test_database_failure_right_after_stripe_answered_the_retry_gets_the_same_object(
        app, sign_in, monkeypatch, path, extra, stripe_path):
    from payments.orders import service

    user, client = await sign_in()
    body = await order_body(app, extra)
    network = await stripe_faults.install(app)
    attach = service.attach_stripe_ids
    failures = []

    async def database_lost(conn, order_id, **ids):
        if not failures:
            failures.append(ids)
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return await attach(conn, order_id, **ids)

    monkeypatch.setattr(service, "attach_stripe_ids", database_lost)

    first = await post(client, body, path=path)

    assert (first.status_code, first.json()["error"]["code"]) == (503, "service_unavailable")
    created_id = next(iter(failures[0].values()))
    rows = await query(app, "SELECT status, stripe_payment_intent_id, stripe_checkout_session_id FROM orders")
    assert rows == [{"status": "pending", "stripe_payment_intent_id": None, "stripe_checkout_session_id": None}]

    retry = await post(client, body, path=path)
    again = await post(client, body, path=path)

    assert retry.status_code == 201, retry.text
    assert created_id in retry.text  # Stripe answered the repeated key with the object it made
    assert again.json() == retry.json()
    assert await count(app, "orders") == 1
    assert await stripe_objects(app, user, stripe_path) == [created_id]
    stored = await query(app, "SELECT stripe_payment_intent_id, stripe_checkout_session_id FROM orders")
    assert created_id in stored[0].values()


@pytest.mark.parametrize("path,extra,stripe_path", FLOWS)
async def test_a_retry_during_the_first_call_is_409_then_gets_the_same_answer(
        app, sign_in, path, extra, stripe_path):
    user, client = await sign_in()
    body = await order_body(app, extra)
    network = await stripe_faults.install(app)
    release = network.hold(stripe_path)

    first = asyncio.create_task(post(client, body, path=path))
    await asyncio.wait_for(network.reached(stripe_path).wait(), 10)
    during = await post(client, body, path=path)
    release.set()
    answered = await first
    after = await post(client, body, path=path)

    assert (during.status_code, during.json()["error"]["code"]) == (409, "idempotency_key_in_flight")
    assert during.headers["retry-after"]
    assert answered.status_code == 201, answered.text
    assert (after.status_code, after.json()) == (201, answered.json())
    assert await count(app, "orders") == 1
    assert len(await stripe_objects(app, user, stripe_path)) == 1


async def test_a_key_held_by_a_dead_worker_is_taken_over_after_the_lock_and_resumes_its_order(app, sign_in):
    user, client = await sign_in()
    body = await order_body(app, {})
    network = await stripe_faults.install(app)
    network.lose("/v1/payment_intents", times=app.state.settings.stripe_max_network_retries + 1)
    await post(client, body)  # an order, a PaymentIntent, no answer
    lock = app.state.settings.idempotency_lock_seconds
    # As if a worker had taken the key again and died in the middle.
    await query(app, "UPDATE idempotency_keys SET locked_at = now() - make_interval(secs => %s) RETURNING 1",
                (lock - 5,))

    while_locked = await post(client, body)
    await query(app, "UPDATE idempotency_keys SET locked_at = now() - make_interval(secs => %s) RETURNING 1",
                (lock + 1,))
    taken_over = await post(client, body)

    assert while_locked.status_code == 409
    assert taken_over.status_code == 201, taken_over.text
    assert await count(app, "orders") == 1
    assert len(await stripe_objects(app, user, "/v1/payment_intents")) == 1


async def test_an_order_without_its_stripe_object_is_not_resumed_after_stripes_key_window(app, sign_in):
    user, client = await sign_in()
    body = await order_body(app, {})
    network = await stripe_faults.install(app)
    network.lose("/v1/payment_intents", times=app.state.settings.stripe_max_network_retries + 1)
    await post(client, body)
    # Stripe forgets an idempotency key after 24 h: repeating the call could make a second object.
    await query(app, "UPDATE orders SET created_at = now() - interval '25 hours' RETURNING 1")

    late = await post(client, body)

    assert (late.status_code, late.json()["error"]["code"]) == (502, "payment_provider_error")
    assert [r["status"] for r in await query(app, "SELECT status FROM orders")] == ["failed"]
    assert network.forwarded.count(("post", "/v1/payment_intents")) == 1


async def test_a_refusal_is_the_answer_of_its_key_and_a_new_key_starts_a_new_order(app, sign_in, monkeypatch):
    import stripe

    from payments.orders import stripe_calls

    _, client = await sign_in()
    price = await local_price(app)
    body = {"items": [{"price_id": price["id"]}]}
    create = stripe_calls.create_payment_intent

    async def refuse_once(*args, **kwargs):
        monkeypatch.setattr(stripe_calls, "create_payment_intent", create)
        raise stripe.CardError("Your card was declined.", param=None, code="card_declined")

    monkeypatch.setattr(stripe_calls, "create_payment_intent", refuse_once)

    refused = await post(client, body)
    replayed = await post(client, body)
    new_key = await post(client, body, key="key-2")

    assert (refused.status_code, refused.json()["error"]["code"]) == (502, "payment_provider_error")
    assert (replayed.status_code, replayed.json(), replayed.headers["Idempotent-Replayed"]) == (
        502, refused.json(), "true")
    assert new_key.status_code == 201
    assert [r["status"] for r in await query(app, "SELECT status FROM orders ORDER BY created_at")] == [
        "failed", "pending"]


def test_the_key_lock_outlasts_the_longest_order_request_the_settings_allow(settings):
    # Customer and object call, each every attempt waiting out the timeout, plus backoff.
    for timeout, retries in ((20.0, 2), (45.0, 2), (20.0, 5), (0.5, 0)):
        changed = dataclasses.replace(settings, stripe_timeout_seconds=timeout, stripe_max_network_retries=retries)
        worst = 2 * ((retries + 1) * timeout + retries * 5.0)
        assert changed.order_stripe_deadline_seconds >= worst
        assert changed.idempotency_lock_seconds > changed.order_stripe_deadline_seconds
    assert Settings.idempotency_lock_seconds.fget(settings) == 170.0  # defaults: 2 x (3 x 20 + 2 x 5) + 30


def test_the_backoff_bound_is_the_stripe_librarys():
    import stripe

    from payments import config

    assert config.STRIPE_RETRY_DELAY_MAX_SECONDS == stripe.HTTPClient.MAX_DELAY
