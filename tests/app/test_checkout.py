"""Starting payments: POST /api/payment-intents (embedded card flow), POST
/api/checkout/sessions (hosted Checkout), the /checkout/{slug} page, and every kind of
bad input on those endpoints.

Stripe is localstripe behind the Stripe stub (roles/lab_services/files/stripe_stub.py), which adds
the prices and Checkout Sessions localstripe lacks: the real Stripe API cannot be
reached from here.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.app.payments_support import (  # noqa: F401  (fixtures)
    catalog_price,
    count,
    deliver,
    local_price,
    make_event,
    metric,
    order_status,
    query,
    sign_in,
)


async def post_json(client, path: str, body, **headers):
    return await client.post(path, content=json.dumps(body),
                             headers={"Content-Type": "application/json", **headers})


# -- the embedded flow, end to end --------------------------------------------------------


async def test_one_time_payment_through_localstripe_marks_the_order_paid(app, sign_in, deliver):
    user, client = await sign_in()
    price = await catalog_price(app, unit_amount=1250, currency="usd")
    stripe = app.state.stripe
    before = metric("stripe_payments_total", status="succeeded", currency="usd")

    created = await post_json(client, "/api/payment-intents", {"items": [{"price_id": price["id"], "quantity": 2}]})

    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["amount"], body["currency"], body["status"]) == (2500, "usd", "pending")
    assert body["client_secret"].startswith(body["payment_intent_id"] + "_secret_")
    intent = await stripe.v1.payment_intents.retrieve_async(body["payment_intent_id"])
    assert intent["amount"] == 2500 and intent["metadata"]["order_id"] == body["order_id"]
    customers = await query(app, "SELECT stripe_customer_id FROM users WHERE id = %s", (user["id"],))
    assert intent["customer"] == customers[0]["stripe_customer_id"] is not None

    # The buyer's card, as Stripe.js would attach and confirm it.
    await stripe.v1.payment_intents.update_async(intent["id"], {"payment_method": "pm_card_visa"})
    confirmed = await stripe.v1.payment_intents.confirm_async(intent["id"])
    assert confirmed["status"] == "succeeded"
    # Confirmation alone changes nothing here: only the webhook does.
    assert await order_status(app, body["order_id"]) == "pending"

    events = await stripe.v1.events.list_async({"type": "payment_intent.succeeded", "limit": 100})
    event = next(e for e in events["data"] if e["data"]["object"]["id"] == intent["id"])
    # localstripe signs and sends its events only to registered endpoints: deliver it
    # ourselves, signed with the app's secret, exactly as localstripe recorded it.
    response = await deliver(event.to_dict(for_json=True))

    assert response.status_code == 200, response.text
    assert await order_status(app, body["order_id"]) == "paid"
    assert metric("stripe_payments_total", status="succeeded", currency="usd") == before + 1
    order = (await client.get(f"/api/orders/{body['order_id']}")).json()["order"]
    assert order["status"] == "paid"
    assert order["items"] == [{"price_id": price["id"], "product_name": order["items"][0]["product_name"],
                               "quantity": 2, "unit_amount": 1250, "currency": "usd"}]


@pytest.mark.parametrize("path,body,service_path,action", [
    ("/api/payment-intents", {}, ("payment_intents",), "payment-intent"),
    ("/api/checkout/sessions", {"mode": "payment"}, ("checkout", "sessions"), "checkout-session"),
])
async def test_stripe_objects_are_created_with_an_idempotency_key_from_the_order_id(
        app, sign_in, monkeypatch, path, body, service_path, action):
    _, client = await sign_in()
    price = await catalog_price(app)
    service = app.state.stripe.v1
    for name in service_path:
        service = getattr(service, name)
    seen = []
    original = service.create_async

    async def recording(params, options=None):
        seen.append(options)
        return await original(params, options)

    monkeypatch.setattr(service, "create_async", recording)

    response = await post_json(client, path, {**body, "items": [{"price_id": price["id"]}]})

    assert response.status_code == 201, response.text
    assert seen == [{"idempotency_key": f"order-{response.json()['order_id']}-{action}"}]


async def test_order_lists_show_only_the_users_own_orders(app, sign_in):
    _, alice = await sign_in()
    _, bob = await sign_in()
    price = await local_price(app)
    created = await post_json(alice, "/api/payment-intents", {"items": [{"price_id": price["id"]}]})
    order_id = created.json()["order_id"]

    assert [o["id"] for o in (await alice.get("/api/orders")).json()["orders"]] == [order_id]
    assert (await bob.get("/api/orders")).json()["orders"] == []
    other = await bob.get(f"/api/orders/{order_id}")
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "order_not_found"
    assert (await bob.get("/api/orders/not-a-uuid")).status_code == 404


# -- hosted Checkout ----------------------------------------------------------------------


async def test_checkout_session_for_one_time_prices(app, sign_in):
    _, client = await sign_in()
    price = await catalog_price(app, unit_amount=700)

    response = await post_json(client, "/api/checkout/sessions",
                               {"mode": "payment", "items": [{"price_id": price["id"], "quantity": 3}]})

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["url"] and body["checkout_session_id"].startswith("cs_")
    session = await app.state.stripe.v1.checkout.sessions.retrieve_async(body["checkout_session_id"])
    assert session["mode"] == "payment" and session["amount_total"] == 2100
    assert session["metadata"]["order_id"] == body["order_id"] == session["client_reference_id"]
    assert session["success_url"].startswith("http://testserver/success")
    rows = await query(app, "SELECT status, amount_total, stripe_checkout_session_id FROM orders")
    assert rows == [{"status": "pending", "amount_total": 2100, "stripe_checkout_session_id": session["id"]}]


async def test_checkout_session_for_a_subscription(app, sign_in):
    _, client = await sign_in()
    price = await catalog_price(app, unit_amount=900, interval="month")

    response = await post_json(client, "/api/checkout/sessions",
                               {"mode": "subscription", "items": [{"price_id": price["id"]}]})

    assert response.status_code == 201, response.text
    session = await app.state.stripe.v1.checkout.sessions.retrieve_async(response.json()["checkout_session_id"])
    assert session["mode"] == "subscription"
    rows = await query(app, "SELECT mode, flow FROM orders")
    assert rows == [{"mode": "subscription", "flow": "checkout_session"}]


async def test_stripe_unreachable_is_503_and_the_order_stays_pending_for_the_retry(app, settings, client_for,
                                                                                   sign_in):
    user, _ = await sign_in()
    price = await local_price(app)
    broken = await client_for(settings, stripe_api_base="http://127.0.0.1:9")
    from payments.accounts.sessions import COOKIE_NAME, create_session

    broken.cookies.set(COOKIE_NAME, await create_session(app.state.redis, user["id"], 600))

    response = await post_json(broken, "/api/payment-intents", {"items": [{"price_id": price["id"]}]})

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "payment_provider_unavailable"
    assert response.headers["retry-after"] == "5"
    # No answer is not a refusal: Stripe may have made the object (test_idempotency.py resumes it).
    rows = await query(app, "SELECT o.status, count(i.id) AS items FROM orders o"
                            " JOIN order_items i ON i.order_id = o.id GROUP BY o.id")
    assert rows == [{"status": "pending", "items": 1}]


async def test_stripe_refusing_the_payment_intent_is_502_and_the_order_failed(app, sign_in, monkeypatch):
    import stripe

    from payments.orders import stripe_calls

    _, client = await sign_in()
    price = await local_price(app)

    async def refuse(*args, **kwargs):
        raise stripe.InvalidRequestError("Amount must be at least 50 cents", param="amount")

    monkeypatch.setattr(stripe_calls, "create_payment_intent", refuse)

    response = await post_json(client, "/api/payment-intents", {"items": [{"price_id": price["id"]}]})

    assert (response.status_code, response.json()["error"]["code"]) == (502, "payment_provider_error")
    assert "Amount" not in response.text  # Stripe's own words stay in the log
    rows = await query(app, "SELECT status, failure_reason FROM orders")
    assert rows == [{"status": "failed", "failure_reason": "stripe: InvalidRequestError"}]


# -- bad input ----------------------------------------------------------------------------

ENDPOINTS = [
    ("/api/payment-intents", {}),
    ("/api/checkout/sessions", {"mode": "payment"}),
]


@pytest.mark.parametrize("path,extra", ENDPOINTS)
@pytest.mark.parametrize("items,code", [
    (None, "invalid_items"),
    ([], "invalid_items"),
    ("price_1", "invalid_items"),
    ([{"price_id": "price_does_not_exist"}], "unknown_price"),
    ([{"price_id": 42}], "invalid_price"),
    ([{"price_id": "PRICE", "quantity": 0}], "invalid_quantity"),
    ([{"price_id": "PRICE", "quantity": -1}], "invalid_quantity"),
    ([{"price_id": "PRICE", "quantity": 10**12}], "invalid_quantity"),
    ([{"price_id": "PRICE", "quantity": 1.5}], "invalid_quantity"),
    ([{"price_id": "PRICE", "quantity": "2"}], "invalid_quantity"),
    ([{"price_id": "PRICE", "quantity": True}], "invalid_quantity"),
    ([{"price_id": "PRICE"}, {"price_id": "PRICE"}], "duplicate_price"),
    ([{"price_id": "PRICE"}] * 21, "invalid_items"),
])
async def test_bad_items_are_400_and_write_nothing(app, sign_in, path, extra, items, code):
    _, client = await sign_in()
    price = await local_price(app)
    if isinstance(items, list):
        items = [dict(item, price_id=price["id"]) if item.get("price_id") == "PRICE" else item for item in items]
    body = {**extra, **({} if items is None else {"items": items})}

    response = await post_json(client, path, body)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert set(response.json()["error"]) == {"code", "message"}
    assert await count(app, "orders") == 0 and await count(app, "order_items") == 0


@pytest.mark.parametrize("path,extra", ENDPOINTS)
async def test_inactive_and_unknown_product_prices_are_refused(app, sign_in, path, extra):
    _, client = await sign_in()
    inactive = await local_price(app, active=False)

    response = await post_json(client, path, {**extra, "items": [{"price_id": inactive["id"]}]})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_price"
    assert await count(app, "orders") == 0


@pytest.mark.parametrize("path", ["/api/payment-intents", "/api/checkout/sessions"])
async def test_malformed_json_wrong_type_and_huge_body_are_4xx(app, sign_in, path):
    _, client = await sign_in()

    malformed = await client.post(path, content=b'{"items": [', headers={"Content-Type": "application/json"})
    wrong_type = await client.post(path, content=b"items=1", headers={"Content-Type": "text/plain"})
    not_object = await post_json(client, path, [1, 2])
    huge = await client.post(path, content=b'{"items": "' + b"x" * (1024 * 1024) + b'"}',
                             headers={"Content-Type": "application/json"})

    assert (malformed.status_code, malformed.json()["error"]["code"]) == (400, "invalid_json")
    assert (wrong_type.status_code, wrong_type.json()["error"]["code"]) == (415, "unsupported_media_type")
    assert (not_object.status_code, not_object.json()["error"]["code"]) == (400, "invalid_body")
    assert (huge.status_code, huge.json()["error"]["code"]) == (413, "body_too_large")
    assert await count(app, "orders") == 0


async def test_amount_over_the_single_payment_limit_is_refused(app, sign_in):
    _, client = await sign_in()
    price = await local_price(app, unit_amount=99_999_999)

    response = await post_json(client, "/api/payment-intents", {"items": [{"price_id": price["id"], "quantity": 2}]})

    assert (response.status_code, response.json()["error"]["code"]) == (400, "amount_too_large")


async def test_mixed_currencies_are_refused(app, sign_in):
    _, client = await sign_in()
    usd, eur = await local_price(app, currency="usd"), await local_price(app, currency="eur")

    response = await post_json(client, "/api/payment-intents",
                               {"items": [{"price_id": usd["id"]}, {"price_id": eur["id"]}]})

    assert (response.status_code, response.json()["error"]["code"]) == (400, "mixed_currencies")


@pytest.mark.parametrize("mode,interval,code", [
    ("payment", "month", "price_is_recurring"),
    ("subscription", None, "price_not_recurring"),
    ("donation", None, "invalid_mode"),
    (None, None, "invalid_mode"),
])
async def test_price_kind_must_match_the_checkout_mode(app, sign_in, mode, interval, code):
    _, client = await sign_in()
    price = await local_price(app, interval=interval)

    response = await post_json(client, "/api/checkout/sessions", {"mode": mode, "items": [{"price_id": price["id"]}]})

    assert (response.status_code, response.json()["error"]["code"]) == (400, code)
    assert await count(app, "orders") == 0


async def test_subscription_price_cannot_be_paid_as_a_one_time_payment_intent(app, sign_in):
    _, client = await sign_in()
    price = await local_price(app, interval="year")

    response = await post_json(client, "/api/payment-intents", {"items": [{"price_id": price["id"]}]})

    assert (response.status_code, response.json()["error"]["code"]) == (400, "price_is_recurring")


@pytest.mark.parametrize("path", ["/api/payment-intents", "/api/checkout/sessions", "/api/orders"])
async def test_endpoints_need_a_signed_in_user(client, path):
    if path == "/api/orders":
        response = await client.get(path)
    else:
        response = await post_json(client, path, {"items": []})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


# -- the checkout page --------------------------------------------------------------------


async def test_checkout_page_renders_the_card_form_with_stripe_js(app, sign_in, settings):
    _, client = await sign_in()
    price = await local_price(app, unit_amount=1999)
    slug = (await query(app, "SELECT p.slug FROM products p JOIN prices pr ON pr.product_id = p.id"
                             " WHERE pr.stripe_price_id = %s", (price["id"],)))[0]["slug"]

    response = await client.get(f"/checkout/{slug}?price={price['id']}")

    assert response.status_code == 200
    html = response.text
    assert f'<script src="{settings.stripe_js_url}"></script>' in html
    # The page's script is a static file (the LB's CSP allows no inline script); it reads
    # the price and the publishable key from data- attributes.
    assert f'data-price-id="{price["id"]}"' in html
    assert f'data-publishable-key="{settings.stripe_publishable_key}"' in html
    script = await checkout_script(client, html)
    assert "Stripe(root.dataset.publishableKey)" in script
    assert 'elements().create("card")' in script and "confirmCardPayment" in script
    assert "/api/payment-intents" in script


async def test_checkout_page_for_a_recurring_price_offers_hosted_checkout(app, sign_in):
    _, client = await sign_in()
    price = await local_price(app, interval="month")
    slug = (await query(app, "SELECT slug FROM products ORDER BY id DESC LIMIT 1"))[0]["slug"]

    response = await client.get(f"/checkout/{slug}?price={price['id']}")

    assert response.status_code == 200
    assert '<button type="button" id="subscribe">Subscribe</button>' in response.text
    script = await checkout_script(client, response.text)
    assert 'goToHostedCheckout("subscription")' in script


async def checkout_script(client, html: str) -> str:
    """The text of checkout.js, as the page links it (with its digest)."""
    match = re.search(r'<script src="(/static/checkout\.js\?v=[0-9a-f]+)"></script>', html)
    assert match, "the page does not load /static/checkout.js"
    response = await client.get(match.group(1))
    assert response.status_code == 200 and "javascript" in response.headers["content-type"]
    return response.text


async def test_checkout_page_sends_anonymous_visitors_to_sign_in(app, client):
    await local_price(app)
    slug = (await query(app, "SELECT slug FROM products LIMIT 1"))[0]["slug"]

    response = await client.get(f"/checkout/{slug}")

    assert response.status_code == 303
    assert response.headers["location"].startswith("/sign-in?next=%2Fcheckout%2F")


async def test_checkout_page_for_an_unknown_product_is_404(sign_in):
    _, client = await sign_in()
    response = await client.get("/checkout/no-such-product")
    assert response.status_code == 404


# -- the per-user order limit ----------------------------------------------------------------


async def test_orders_over_the_per_user_limit_are_429_with_retry_after(app, settings, client_for, sign_in):
    from payments.accounts.sessions import COOKIE_NAME, create_session

    user, _ = await sign_in()
    other, _ = await sign_in()
    price = await local_price(app)
    limited = await client_for(settings, order_rate_limit_per_user=3, order_rate_limit_window_seconds=60)
    limited.cookies.set(COOKIE_NAME, await create_session(app.state.redis, user["id"], 600))
    body = {"items": [{"price_id": price["id"]}]}

    answers = [await post_json(limited, "/api/payment-intents", body, **{"Idempotency-Key": f"k{i}"})
               for i in range(3)]
    over = await post_json(limited, "/api/checkout/sessions", {"mode": "payment", **body})
    replay = await post_json(limited, "/api/payment-intents", body, **{"Idempotency-Key": "k0"})

    assert [a.status_code for a in answers] == [201, 201, 201]
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "order_rate_limited"
    assert "3 orders per 60 s" in over.json()["error"]["message"]
    assert 1 <= int(over.headers["retry-after"]) <= 60
    # A replay creates nothing and is not counted; the limit is per user.
    assert (replay.status_code, replay.json()) == (201, answers[0].json())
    limited.cookies.set(COOKIE_NAME, await create_session(app.state.redis, other["id"], 600))
    assert (await post_json(limited, "/api/payment-intents", body)).status_code == 201
    assert await count(app, "orders") == 4


async def test_a_request_refused_by_the_order_limit_releases_its_key(app, settings, client_for, sign_in):
    from payments.accounts.sessions import COOKIE_NAME, create_session

    user, _ = await sign_in()
    price = await local_price(app)
    limited = await client_for(settings, order_rate_limit_per_user=1)
    limited.cookies.set(COOKIE_NAME, await create_session(app.state.redis, user["id"], 600))
    body = {"items": [{"price_id": price["id"]}]}
    await post_json(limited, "/api/payment-intents", body, **{"Idempotency-Key": "first"})

    refused = await post_json(limited, "/api/payment-intents", body, **{"Idempotency-Key": "second"})

    assert refused.status_code == 429
    assert await query(app, "SELECT key FROM idempotency_keys ORDER BY key") == [{"key": "first"}]
    # Once the window has passed, the same key starts its order.
    await app.state.redis.delete(f"ratelimit:orders:user:{user['id']}")
    assert (await post_json(limited, "/api/payment-intents", body, **{"Idempotency-Key": "second"})).status_code == 201
