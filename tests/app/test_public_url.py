"""Absolute URLs the app hands to Stripe (Checkout's success and cancel URLs, the billing
portal's return URL) start with PUBLIC_BASE_URL, whatever the request's Host header says;
only in dev without the setting does the request's base URL stand in.

Stripe is localstripe behind the Stripe stub (roles/lab_services/files/stripe_stub.py):
the real Stripe API cannot be reached from here.
"""

from __future__ import annotations

import json

import pytest

from tests.app.payments_support import catalog_price, query, sign_in  # noqa: F401  (fixture)

PUBLIC = "https://shop.example.com"


@pytest.fixture
def settings_env(settings_env):
    return {**settings_env, "PUBLIC_BASE_URL": PUBLIC}


async def start_checkout(app, client, mode: str, **headers) -> dict:
    price = await catalog_price(app, unit_amount=700, interval="month" if mode == "subscription" else None)
    response = await client.post("/api/checkout/sessions",
                                 content=json.dumps({"mode": mode, "items": [{"price_id": price["id"]}]}),
                                 headers={"Content-Type": "application/json", **headers})
    assert response.status_code == 201, response.text
    return await app.state.stripe.v1.checkout.sessions.retrieve_async(response.json()["checkout_session_id"])


@pytest.mark.parametrize("mode", ["payment", "subscription"])
async def test_checkout_returns_to_the_configured_public_url(app, sign_in, mode):
    _, client = await sign_in()
    session = await start_checkout(app, client, mode)
    assert session["success_url"] == f"{PUBLIC}/success?session_id={{CHECKOUT_SESSION_ID}}"
    assert session["cancel_url"] == f"{PUBLIC}/cancel"


async def test_a_forged_host_header_does_not_choose_the_return_url(app, sign_in):
    _, client = await sign_in()
    session = await start_checkout(app, client, "payment", Host="evil.example")
    assert session["success_url"].startswith(f"{PUBLIC}/success?")
    assert "evil.example" not in session["success_url"] + session["cancel_url"]


async def test_billing_portal_returns_to_the_account_page_on_the_public_url(app, sign_in, monkeypatch):
    user, client = await sign_in()
    customer = await app.state.stripe.v1.customers.create_async({"email": user["email"]})
    await query(app, "UPDATE users SET stripe_customer_id = %s WHERE id = %s RETURNING id",
                (customer["id"], user["id"]))
    sessions = app.state.stripe.v1.billing_portal.sessions
    asked = []
    original = sessions.create_async

    async def recording(params, options=None):
        asked.append(params)
        return await original(params, options)

    monkeypatch.setattr(sessions, "create_async", recording)

    response = await client.post("/api/billing-portal", json={}, headers={"Host": "evil.example"})

    assert response.status_code == 201, response.text
    assert [params["return_url"] for params in asked] == [f"{PUBLIC}/account"]


async def test_in_dev_without_the_setting_the_request_base_url_is_used(app, settings, client_for, sign_in):
    _, signed_in = await sign_in()
    assert settings.is_dev
    dev = await client_for(settings, public_base_url=None)
    # The session lives in the Redis both apps share: the same cookie signs the user in there.
    dev.cookies.update(signed_in.cookies)
    session = await start_checkout(app, dev, "payment")
    assert session["success_url"].startswith("http://testserver/success?")
