"""POST /api/admin/orders/{id}/refund and the charge.refunded webhook.

Payments and refunds happen in localstripe (behind the Stripe stub). localstripe emits
no charge.refunded event, so the test builds it from the refunded charge as localstripe
reports it, and delivers it signed.
"""

from __future__ import annotations

import json
import uuid

from tests.app.payments_support import (  # noqa: F401  (fixtures)
    catalog_price,
    create_user,
    deliver,
    make_event,
    metric,
    order_status,
    pending_order,
    query,
    sign_in,
)


async def paid_order_in_localstripe(app, client, deliver) -> dict:
    """An order paid through localstripe, marked paid by its payment_intent.succeeded."""
    price = await catalog_price(app, unit_amount=4200)
    created = await client.post("/api/payment-intents", content=json.dumps({"items": [{"price_id": price["id"]}]}),
                                headers={"Content-Type": "application/json"})
    assert created.status_code == 201, created.text
    body = created.json()
    stripe = app.state.stripe
    await stripe.v1.payment_intents.update_async(body["payment_intent_id"], {"payment_method": "pm_card_visa"})
    intent = await stripe.v1.payment_intents.confirm_async(body["payment_intent_id"])
    assert (await deliver(make_event("payment_intent.succeeded", intent.to_dict(for_json=True)))).status_code == 200
    assert await order_status(app, body["order_id"]) == "paid"
    return {"order_id": body["order_id"], "payment_intent": intent}


async def test_admin_refund_goes_to_stripe_and_charge_refunded_marks_the_order(app, sign_in, deliver):
    _, buyer = await sign_in()
    _, admin = await sign_in(admin=True)
    paid = await paid_order_in_localstripe(app, buyer, deliver)
    before = metric("stripe_payments_total", status="refunded", currency="usd")

    response = await admin.post(f"/api/admin/orders/{paid['order_id']}/refund", json={})

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["order_status"] == "paid"  # until Stripe confirms by webhook
    refund = await app.state.stripe.v1.refunds.retrieve_async(body["refund_id"])
    assert refund["amount"] == 4200 and refund["metadata"]["order_id"] == paid["order_id"]
    assert await order_status(app, paid["order_id"]) == "paid"

    # Stripe sends latest_charge as an id, localstripe inlines the object: accept both.
    latest_charge = paid["payment_intent"]["latest_charge"]
    charge_id = latest_charge if isinstance(latest_charge, str) else latest_charge["id"]
    charge = await app.state.stripe.v1.charges.retrieve_async(charge_id)
    assert charge["refunded"] is True
    response = await deliver(make_event("charge.refunded", charge.to_dict(for_json=True)))

    assert response.status_code == 200
    assert await order_status(app, paid["order_id"]) == "refunded"
    assert metric("stripe_payments_total", status="refunded", currency="usd") == before + 1
    payments = await query(app, "SELECT status, amount_refunded FROM payments")
    assert payments == [{"status": "refunded", "amount_refunded": 4200}]
    actions = [r["action"] for r in await query(app, "SELECT action FROM audit_logs ORDER BY id")]
    assert "admin.refund_requested" in actions and "payment.refunded" in actions


async def test_refunding_twice_reports_the_same_single_refund(app, sign_in, deliver):
    _, buyer = await sign_in()
    _, admin = await sign_in(admin=True)
    paid = await paid_order_in_localstripe(app, buyer, deliver)

    first = await admin.post(f"/api/admin/orders/{paid['order_id']}/refund", json={})
    second = await admin.post(f"/api/admin/orders/{paid['order_id']}/refund", json={})

    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["refund_id"] == second.json()["refund_id"]
    refunds = await app.state.stripe.v1.refunds.list_async({"payment_intent": paid["payment_intent"]["id"]})
    assert len(refunds["data"]) == 1


async def test_refund_request_carries_an_idempotency_key_from_the_order_id(app, sign_in, deliver, monkeypatch):
    _, buyer = await sign_in()
    _, admin = await sign_in(admin=True)
    paid = await paid_order_in_localstripe(app, buyer, deliver)
    service = app.state.stripe.v1.refunds
    seen = []
    original = service.create_async

    async def recording(params, options=None):
        seen.append(options)
        return await original(params, options)

    monkeypatch.setattr(service, "create_async", recording)

    await admin.post(f"/api/admin/orders/{paid['order_id']}/refund", json={})

    assert seen == [{"idempotency_key": f"order-{paid['order_id']}-refund"}]


async def test_refund_refuses_a_form_post_and_asks_stripe_nothing(app, sign_in, deliver):
    """What a cross-site form in an admin's browser could send."""
    _, buyer = await sign_in()
    _, admin = await sign_in(admin=True)
    paid = await paid_order_in_localstripe(app, buyer, deliver)

    response = await admin.post(f"/api/admin/orders/{paid['order_id']}/refund", data={"amount": "4200"})

    assert (response.status_code, response.json()["error"]["code"]) == (415, "unsupported_media_type")
    refunds = await app.state.stripe.v1.refunds.list_async({"payment_intent": paid["payment_intent"]["id"]})
    assert refunds["data"] == []
    assert await query(app, "SELECT stripe_refund_id FROM orders WHERE id = %s", (paid["order_id"],)) == [
        {"stripe_refund_id": None}]


async def test_refund_is_for_admins_only(app, sign_in, client):
    user, buyer = await sign_in()
    order = await pending_order(app, user)

    assert (await client.post(f"/api/admin/orders/{order['id']}/refund", json={})).status_code == 401
    response = await buyer.post(f"/api/admin/orders/{order['id']}/refund", json={})
    assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden")


async def test_unpaid_order_cannot_be_refunded(app, sign_in):
    user = await create_user(app)
    order = await pending_order(app, user)
    _, admin = await sign_in(admin=True)

    response = await admin.post(f"/api/admin/orders/{order['id']}/refund", json={})

    assert (response.status_code, response.json()["error"]["code"]) == (409, "order_not_paid")


async def test_refund_of_unknown_order_is_404(sign_in):
    _, admin = await sign_in(admin=True)
    for order_id in (uuid.uuid4(), "not-a-uuid"):
        response = await admin.post(f"/api/admin/orders/{order_id}/refund", json={})
        assert (response.status_code, response.json()["error"]["code"]) == (404, "order_not_found")


async def test_partial_refund_is_recorded_without_refunding_the_order(app, deliver):
    user = await create_user(app)
    order = await pending_order(app, user, unit_amount=1000)
    intent_id = order["stripe_payment_intent_id"]
    await deliver(make_event("payment_intent.succeeded", {
        "id": intent_id, "object": "payment_intent", "amount": 1000, "currency": "usd",
        "latest_charge": "ch_partial", "metadata": {"order_id": str(order["id"])}}))
    charge = {"id": "ch_partial", "object": "charge", "amount": 1000, "amount_refunded": 400, "refunded": False,
              "currency": "usd", "payment_intent": intent_id, "metadata": {}}

    response = await deliver(make_event("charge.refunded", charge))

    assert response.status_code == 200
    assert await order_status(app, order["id"]) == "paid"
    assert await query(app, "SELECT status, amount_refunded FROM payments") == [
        {"status": "succeeded", "amount_refunded": 400}]


async def test_late_success_event_does_not_undo_a_refund(app, deliver):
    user = await create_user(app)
    order = await pending_order(app, user, unit_amount=1000)
    intent = {"id": order["stripe_payment_intent_id"], "object": "payment_intent", "amount": 1000,
              "currency": "usd", "latest_charge": "ch_1", "metadata": {"order_id": str(order["id"])}}
    succeeded = make_event("payment_intent.succeeded", intent)
    refunded = make_event("charge.refunded", {"id": "ch_1", "object": "charge", "amount": 1000,
                                              "amount_refunded": 1000, "refunded": True, "currency": "usd",
                                              "payment_intent": intent["id"]})

    await deliver(succeeded)
    await deliver(refunded)
    await deliver(make_event("payment_intent.succeeded", intent))  # a redelivery under a new id

    assert await order_status(app, order["id"]) == "refunded"
    assert await query(app, "SELECT status FROM payments") == [{"status": "refunded"}]


async def test_refund_event_arriving_before_the_success_event_still_refunds_the_order(app, deliver):
    """Stripe does not deliver in order: charge.refunded may come first. The refund must
    stick, and the late success must not turn the order back into a paid one."""
    user = await create_user(app)
    order = await pending_order(app, user, unit_amount=1000)
    intent = {"id": order["stripe_payment_intent_id"], "object": "payment_intent", "amount": 1000,
              "currency": "usd", "latest_charge": "ch_early", "metadata": {"order_id": str(order["id"])}}
    refunded = make_event("charge.refunded", {"id": "ch_early", "object": "charge", "amount": 1000,
                                              "amount_refunded": 1000, "refunded": True, "currency": "usd",
                                              "payment_intent": intent["id"]})

    assert (await deliver(refunded)).status_code == 200
    assert await order_status(app, order["id"]) == "refunded"
    assert (await deliver(make_event("payment_intent.succeeded", intent))).status_code == 200

    assert await order_status(app, order["id"]) == "refunded"
    assert await query(app, "SELECT status, amount_refunded FROM payments") == [
        {"status": "refunded", "amount_refunded": 1000}]
