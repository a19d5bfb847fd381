"""Subscriptions mirrored from customer.subscription.* and invoice.* events, GET
/api/subscriptions, subscription checkout completion and POST /api/billing-portal.

localstripe emits no customer.subscription.updated and has no billing portal: the events
are built here and signed as Stripe would, and the portal comes from the Stripe stub.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.app.payments_support import (  # noqa: F401  (fixtures)
    create_user,
    deliver,
    local_price,
    make_event,
    pending_order,
    query,
    sign_in,
)


def subscription(customer: str, *, status: str = "active", price_id: str = "price_plan", period_end: int | None = None,
                 subscription_id: str = "sub_1", cancel_at_period_end: bool = False) -> dict:
    return {
        "id": subscription_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": None,
        "current_period_end": period_end or int(time.time()) + 30 * 86400,
        "latest_invoice": "in_1",
        "items": {"object": "list", "data": [{"id": "si_1", "quantity": 1, "price": {"id": price_id}}]},
    }


async def customer_for(app, user: dict) -> str:
    customer_id = f"cus_{uuid.uuid4().hex[:14]}"
    await query(app, "UPDATE users SET stripe_customer_id = %s WHERE id = %s RETURNING id", (customer_id, user["id"]))
    return customer_id


async def stored(app, subscription_id: str = "sub_1") -> dict:
    rows = await query(app, "SELECT status, current_period_end, cancel_at_period_end, stripe_price_id,"
                            " latest_invoice_status FROM subscriptions WHERE stripe_subscription_id = %s",
                       (subscription_id,))
    return rows[0]


async def test_account_api_shows_plan_status_and_renewal_date(app, sign_in, deliver):
    user, client = await sign_in()
    customer = await customer_for(app, user)
    price = await local_price(app, unit_amount=900, interval="month")
    renewal = int(time.time()) + 30 * 86400

    response = await deliver(make_event("customer.subscription.created",
                                        subscription(customer, price_id=price["id"], period_end=renewal)))
    assert response.status_code == 200

    subs = (await client.get("/api/subscriptions")).json()["subscriptions"]
    assert len(subs) == 1
    assert subs[0]["status"] == "active"
    assert subs[0]["plan"]["price_id"] == price["id"]
    assert subs[0]["plan"]["product_name"].startswith("Local ")
    assert (subs[0]["plan"]["unit_amount"], subs[0]["plan"]["interval"]) == (900, "month")
    assert subs[0]["current_period_end"].startswith(time.strftime("%Y-%m-%d", time.gmtime(renewal)))


async def test_other_customers_subscriptions_are_not_shown(app, sign_in, deliver):
    alice, _ = await sign_in()
    _, bob_client = await sign_in()
    await deliver(make_event("customer.subscription.created", subscription(await customer_for(app, alice))))

    assert (await bob_client.get("/api/subscriptions")).json()["subscriptions"] == []


async def test_older_subscription_event_arriving_late_does_not_move_state_back(app, deliver):
    customer = await customer_for(app, await create_user(app))
    now = int(time.time())
    newer = make_event("customer.subscription.updated",
                       subscription(customer, status="active", period_end=now + 60 * 86400), created=now)
    older = make_event("customer.subscription.created",
                       subscription(customer, status="incomplete", period_end=now + 30 * 86400), created=now - 120)

    assert (await deliver(newer)).status_code == 200
    assert (await deliver(older)).status_code == 200

    row = await stored(app)
    assert row["status"] == "active"
    assert int(row["current_period_end"].timestamp()) == now + 60 * 86400


async def stripe_subscription(app, user: dict) -> dict:
    """A subscription that exists in localstripe (active: its customer has a card), for
    the user as that customer; localstripe takes a plan where Stripe takes a price."""
    stripe = app.state.stripe
    product = await stripe.v1.products.create_async({"name": f"Plan {uuid.uuid4().hex[:8]}"})
    plan = await stripe.v1.plans.create_async({"amount": 900, "currency": "usd", "interval": "month",
                                               "product": product["id"]})
    customer = await stripe.v1.customers.create_async({"email": user["email"]})
    card = await stripe.v1.payment_methods.create_async(
        {"type": "card", "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}})
    await stripe.v1.payment_methods.attach_async(card["id"], {"customer": customer["id"]})
    await stripe.v1.customers.update_async(customer["id"], {"invoice_settings": {"default_payment_method": card["id"]}})
    created = await stripe.v1.subscriptions.create_async({"customer": customer["id"], "items": [{"plan": plan["id"]}]})
    await query(app, "UPDATE users SET stripe_customer_id = %s WHERE id = %s RETURNING id",
                (customer["id"], user["id"]))
    return created.to_dict()


@pytest.mark.parametrize("arrival", [("created", "updated"), ("updated", "created")])
async def test_same_second_events_in_either_order_leave_stripes_current_state(app, deliver, arrival):
    # Both orders: ignoring a tie passes only the second, applying it only the first; the
    # re-fetch from Stripe passes both.
    sub = await stripe_subscription(app, await create_user(app))
    assert sub["status"] == "active"
    now = int(time.time())
    # Stripe sends "created" (incomplete) and then "updated" (active) within one second.
    events = {"created": make_event("customer.subscription.created", {**sub, "status": "incomplete"}, created=now),
              "updated": make_event("customer.subscription.updated", sub, created=now)}

    for name in arrival:
        assert (await deliver(events[name])).status_code == 200

    current = await app.state.stripe.v1.subscriptions.retrieve_async(sub["id"])
    assert (await stored(app, sub["id"]))["status"] == current["status"] == "active"


async def test_same_second_invoice_event_leaves_stripes_current_state(app, deliver):
    sub = await stripe_subscription(app, await create_user(app))
    now = int(time.time())
    # localstripe paid the first invoice; a failure of it delivered in the same second
    # as the update cannot say which came last.
    failed = {"id": sub["latest_invoice"], "object": "invoice", "subscription": sub["id"],
              "customer": sub["customer"], "status": "open"}
    await deliver(make_event("customer.subscription.updated", sub, created=now))

    assert (await deliver(make_event("invoice.payment_failed", failed, created=now))).status_code == 200

    invoice = await app.state.stripe.v1.invoices.retrieve_async(sub["latest_invoice"])
    row = await stored(app, sub["id"])
    assert (row["status"], row["latest_invoice_status"]) == ("active", invoice["status"]) == ("active", "paid")


async def test_same_second_event_is_retried_when_stripe_cannot_say_the_current_state(app, deliver):
    """sub_1 is unknown to localstripe, so the re-fetch after the tie fails."""
    customer = await customer_for(app, await create_user(app))
    now = int(time.time())
    await deliver(make_event("customer.subscription.updated", subscription(customer, status="active"), created=now))
    late = make_event("customer.subscription.created", subscription(customer, status="incomplete"), created=now)

    response = await deliver(late)

    assert response.status_code == 500
    assert (await stored(app))["status"] == "active"
    # Rolled back, so Stripe's retry of the event is applied, not taken for a duplicate.
    assert await query(app, "SELECT id FROM stripe_events WHERE id = %s", (late["id"],)) == []


async def test_canceled_subscription_stays_canceled(app, deliver):
    customer = await customer_for(app, await create_user(app))
    now = int(time.time())
    await deliver(make_event("customer.subscription.deleted", subscription(customer, status="canceled"), created=now))
    # An update Stripe sent before the cancellation arrives afterwards.
    await deliver(make_event("customer.subscription.updated",
                             subscription(customer, status="active", cancel_at_period_end=True), created=now - 5))

    row = await stored(app)
    assert row["status"] == "canceled" and row["cancel_at_period_end"] is False


async def test_newer_update_is_applied(app, deliver):
    customer = await customer_for(app, await create_user(app))
    now = int(time.time())
    await deliver(make_event("customer.subscription.created", subscription(customer), created=now - 60))
    await deliver(make_event("customer.subscription.updated",
                             subscription(customer, cancel_at_period_end=True), created=now))

    assert (await stored(app))["cancel_at_period_end"] is True


async def test_invoice_payment_failure_and_recovery(app, deliver):
    customer = await customer_for(app, await create_user(app))
    now = int(time.time())
    await deliver(make_event("customer.subscription.created", subscription(customer), created=now - 100))
    invoice = {"id": "in_2", "object": "invoice", "subscription": "sub_1", "customer": customer, "status": "open"}

    await deliver(make_event("invoice.payment_failed", invoice, created=now - 50))
    assert (await stored(app))["status"] == "past_due"

    await deliver(make_event("invoice.paid", {**invoice, "status": "paid"}, created=now))
    row = await stored(app)
    assert (row["status"], row["latest_invoice_status"]) == ("active", "paid")

    # The failure is delivered again, late: it must not make the subscription past_due again.
    await deliver(make_event("invoice.payment_failed", invoice, created=now - 50))
    assert (await stored(app))["status"] == "active"


async def test_invoice_with_the_new_api_shape_finds_its_subscription(app, deliver):
    customer = await customer_for(app, await create_user(app))
    now = int(time.time())
    await deliver(make_event("customer.subscription.created", subscription(customer), created=now - 10))
    invoice = {"id": "in_3", "object": "invoice", "customer": customer, "status": "open",
               "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_1"}}}

    await deliver(make_event("invoice.payment_failed", invoice, created=now))

    assert (await stored(app))["status"] == "past_due"


async def test_subscription_checkout_completion_pays_and_links_the_order(app, deliver):
    user = await create_user(app)
    customer = await customer_for(app, user)
    order = await pending_order(app, user, flow="checkout_session", mode="subscription")
    session = {"id": "cs_test_sub", "object": "checkout.session", "mode": "subscription", "payment_status": "paid",
               "customer": customer, "subscription": "sub_1", "payment_intent": None,
               "metadata": {"order_id": str(order["id"])}, "amount_total": order["amount_total"], "currency": "usd"}

    response = await deliver(make_event("checkout.session.completed", session))

    assert response.status_code == 200
    rows = await query(app, "SELECT status, stripe_subscription_id FROM orders")
    assert rows == [{"status": "paid", "stripe_subscription_id": "sub_1"}]


async def test_billing_portal_session_for_a_customer(app, sign_in):
    user, client = await sign_in()
    customer = await app.state.stripe.v1.customers.create_async({"email": user["email"]})
    await query(app, "UPDATE users SET stripe_customer_id = %s WHERE id = %s RETURNING id",
                (customer["id"], user["id"]))

    response = await client.post("/api/billing-portal", json={})

    assert response.status_code == 201, response.text
    assert "/billing_portal/bps_" in response.json()["url"]


async def test_billing_portal_without_a_customer_is_409(sign_in):
    _, client = await sign_in()
    response = await client.post("/api/billing-portal", headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()["error"]["code"]) == (409, "no_billing_account")


async def test_billing_portal_refuses_a_form_post(app, sign_in, monkeypatch):
    """What a cross-site form could send: refused before Stripe is asked for a portal."""
    user, client = await sign_in()
    await customer_for(app, user)
    asked = []
    monkeypatch.setattr(app.state.stripe.v1.billing_portal.sessions, "create_async",
                        lambda *args, **kwargs: asked.append(args))

    response = await client.post("/api/billing-portal", data={"return_url": "https://evil.example/"})

    assert (response.status_code, response.json()["error"]["code"]) == (415, "unsupported_media_type")
    assert asked == []


async def test_subscription_endpoints_need_a_signed_in_user(client):
    assert (await client.get("/api/subscriptions")).status_code == 401
    assert (await client.post("/api/billing-portal", json={})).status_code == 401


async def test_account_page_shows_plan_status_and_renewal_date(app, sign_in, deliver):
    user, client = await sign_in()
    customer = await customer_for(app, user)
    price = await local_price(app, unit_amount=900, interval="month")
    renewal = int(time.time()) + 30 * 86400
    await deliver(make_event("customer.subscription.created",
                             subscription(customer, price_id=price["id"], period_end=renewal)))

    html = (await client.get("/account")).text

    assert "Local prod_" in html  # the plan's product name from the catalog
    assert "<dd>active</dd>" in html
    assert "Renews on" in html and time.strftime("%Y-%m-%d", time.gmtime(renewal)) in html
