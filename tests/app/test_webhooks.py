"""POST /api/webhooks/stripe: signature checks, the stripe_events ledger (duplicates,
concurrent deliveries), unhandled types, handler failures and retries, out-of-order
delivery, and the effects of each event family on orders and the catalog."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import psycopg
import pytest

from payments.webhooks import processor
from payments.webhooks.handlers import HANDLERS
from tests.app.payments_support import (  # noqa: F401  (fixtures)
    count,
    deliver,
    make_event,
    metric,
    order_status,
    payment_intent_object,
    pending_order,
    query,
    create_user,
    sign_in,
)


# -- verification -------------------------------------------------------------------------


async def audit_actions(app) -> list[str]:
    return [row["action"] for row in await query(app, "SELECT action FROM audit_logs ORDER BY id")]


async def test_bad_signature_is_400_and_nothing_is_stored(app, deliver):
    user = await create_user(app)
    order = await pending_order(app, user)
    event = make_event("payment_intent.succeeded", payment_intent_object(order))

    response = await deliver(event, secret="whsec_not_the_right_secret")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert await count(app, "stripe_events") == 0
    assert await order_status(app, order["id"]) == "pending"
    assert "security.webhook_bad_signature" in await audit_actions(app)


async def test_bad_signature_is_400_even_when_postgresql_is_down(app, deliver, monkeypatch, capsys):
    @contextlib.asynccontextmanager
    async def database_down(*args, **kwargs):
        raise psycopg.OperationalError("connection refused")
        yield

    monkeypatch.setattr(app.state.db, "connection", database_down)
    capsys.readouterr()

    response = await deliver(make_event("product.created", {"id": "prod_x", "name": "X"}), secret="whsec_wrong")

    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_signature")
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    warning = next(r for r in records if r.get("event") == "webhook_bad_signature_not_audited")
    assert warning["level"] == "warning" and "connection refused" in warning["error"]


async def test_missing_signature_header_is_400_and_nothing_is_stored(app, client):
    event = make_event("product.created", {"id": "prod_x", "name": "X"})

    response = await client.post("/api/webhooks/stripe", content=json.dumps(event),
                                 headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert await count(app, "stripe_events") == 0
    assert await count(app, "products") == 0
    rows = await query(app, "SELECT details FROM audit_logs WHERE action = 'security.webhook_bad_signature'")
    assert "missing" in rows[0]["details"]["reason"]


async def test_stale_timestamp_is_400_even_with_a_valid_signature(app, deliver):
    event = make_event("product.created", {"id": "prod_x", "name": "X"})

    response = await deliver(event, timestamp=int(time.time()) - 301)

    assert response.status_code == 400
    assert await count(app, "stripe_events") == 0
    assert await count(app, "products") == 0
    assert "security.webhook_bad_signature" in await audit_actions(app)


async def test_tampered_payload_is_400(app, deliver, sign_stripe_payload, settings):
    event = make_event("product.created", {"id": "prod_x", "name": "X"})
    signature = sign_stripe_payload(json.dumps(event).encode(), settings.stripe_webhook_secret)
    event["data"]["object"]["name"] = "Changed"

    response = await deliver(event, signature=signature)

    assert response.status_code == 400
    assert await count(app, "stripe_events") == 0


async def test_rejected_delivery_is_counted_in_metrics(deliver):
    before = metric("stripe_webhook_events_total", type="unverified", outcome="bad_signature")
    await deliver(make_event("product.created", {"id": "prod_x", "name": "X"}), secret="whsec_wrong")
    assert metric("stripe_webhook_events_total", type="unverified", outcome="bad_signature") == before + 1


async def test_a_thousand_bad_signatures_add_one_counted_audit_row_and_a_thousand_to_the_counter(app, deliver):
    before = metric("stripe_webhook_events_total", type="unverified", outcome="bad_signature")
    event = make_event("product.created", {"id": "prod_x", "name": "X"})

    answers = [await deliver(event, secret="whsec_flood") for _ in range(1000)]

    assert {a.status_code for a in answers} == {400}
    assert metric("stripe_webhook_events_total", type="unverified", outcome="bad_signature") == before + 1000
    rows = await query(app, "SELECT ip, details FROM audit_logs WHERE action = 'security.webhook_bad_signature'")
    # One row per address per minute; a run that crosses its row's minute starts a second.
    assert 1 <= len(rows) <= 2
    assert sum(row["details"]["count"] for row in rows) == 1000
    assert rows[0]["details"]["window_seconds"] == 60 and "reason" in rows[0]["details"]


async def test_concurrent_bad_signatures_lose_no_count(app, deliver):
    event = make_event("product.created", {"id": "prod_x", "name": "X"})

    answers = await asyncio.gather(*(deliver(event, secret="whsec_flood") for _ in range(200)))

    assert {a.status_code for a in answers} == {400}
    rows = await query(app, "SELECT details FROM audit_logs WHERE action = 'security.webhook_bad_signature'")
    assert len(rows) <= 3
    assert sum(row["details"]["count"] for row in rows) == 200


async def test_bad_signatures_are_counted_per_source_address_and_minute(app, settings, client_for):
    client = await client_for(settings, trusted_proxy_hops=1)

    for address in ["203.0.113.7"] * 3 + ["198.51.100.9"] * 2:
        await client.post("/api/webhooks/stripe", content=b"{}", headers={
            "Content-Type": "application/json", "Stripe-Signature": "t=1,v1=bad", "X-Forwarded-For": address})
    # The first address's row is older than its minute: the next one starts a new row.
    await query(app, "UPDATE audit_logs SET created_at = now() - interval '61 seconds'"
                     " WHERE ip = '203.0.113.7' RETURNING id")
    await client.post("/api/webhooks/stripe", content=b"{}", headers={
        "Content-Type": "application/json", "Stripe-Signature": "t=1,v1=bad", "X-Forwarded-For": "203.0.113.7"})

    rows = await query(app, "SELECT host(ip) AS ip, (details ->> 'count')::int AS count FROM audit_logs"
                            " WHERE action = 'security.webhook_bad_signature' ORDER BY id")
    assert rows == [{"ip": "203.0.113.7", "count": 3}, {"ip": "198.51.100.9", "count": 2},
                    {"ip": "203.0.113.7", "count": 1}]


# -- ledger ---------------------------------------------------------------------------------


async def test_verified_event_is_stored_with_its_payload(app, deliver):
    event = make_event("product.created", {"id": "prod_ledger", "name": "Ledger", "active": True,
                                           "updated": 1_700_000_000})

    response = await deliver(event)

    assert response.status_code == 200
    assert response.json()["outcome"] == "processed"
    rows = await query(app, "SELECT id, type, status, payload, processed_at FROM stripe_events")
    assert len(rows) == 1
    assert rows[0]["id"] == event["id"] and rows[0]["type"] == "product.created"
    assert rows[0]["status"] == "processed" and rows[0]["processed_at"] is not None
    assert rows[0]["payload"] == event


async def test_unhandled_event_type_is_200_and_stored_as_ignored(app, deliver):
    event = make_event("customer.tax_id.created", {"id": "txi_1"})

    response = await deliver(event)
    again = await deliver(event)

    assert response.status_code == 200
    assert response.json()["outcome"] == "ignored"
    rows = await query(app, "SELECT status FROM stripe_events WHERE id = %s", (event["id"],))
    assert rows == [{"status": "ignored"}]
    assert (again.status_code, again.json()["outcome"]) == (200, "duplicate")


async def test_duplicate_webhook_is_applied_once(app, deliver):
    user = await create_user(app)
    order = await pending_order(app, user)
    event = make_event("payment_intent.succeeded", payment_intent_object(order))
    before = metric("stripe_payments_total", status="succeeded", currency="usd")

    first = await deliver(event)
    second = await deliver(event)

    assert (first.status_code, second.status_code) == (200, 200)
    assert (first.json()["outcome"], second.json()["outcome"]) == ("processed", "duplicate")
    assert await order_status(app, order["id"]) == "paid"
    assert metric("stripe_payments_total", status="succeeded", currency="usd") == before + 1
    audits = await query(app, "SELECT count(*) AS n FROM audit_logs WHERE action = 'payment.succeeded'")
    assert audits[0]["n"] == 1


async def test_concurrent_duplicate_deliveries_are_applied_once(app, deliver):
    user = await create_user(app)
    order = await pending_order(app, user)
    event = make_event("payment_intent.succeeded", payment_intent_object(order))
    before = metric("stripe_payments_total", status="succeeded", currency="usd")

    responses = await asyncio.gather(deliver(event), deliver(event))

    assert [r.status_code for r in responses] == [200, 200]
    assert sorted(r.json()["outcome"] for r in responses) == ["duplicate", "processed"]
    assert metric("stripe_payments_total", status="succeeded", currency="usd") == before + 1
    assert await count(app, "payments") == 1


async def test_concurrent_deliveries_wait_for_the_first_and_do_not_apply_twice(app):
    """Forces the overlap: the first delivery's handler is still running (its row
    uncommitted) when the second one arrives."""
    calls = []
    first_is_inside = asyncio.Event()

    async def slow_handler(context, event):
        calls.append(event["id"])
        first_is_inside.set()
        await asyncio.sleep(0.5)

    event = make_event("test.slow", {"id": "obj_1"})
    handlers = {"test.slow": slow_handler}
    first = asyncio.create_task(processor.process_event(app.state.db, event, handlers=handlers))
    await first_is_inside.wait()
    second = await processor.process_event(app.state.db, event, handlers=handlers)

    assert (await first, second) == ("processed", "duplicate")
    assert calls == [event["id"]]


async def test_failed_handler_is_500_recorded_and_a_retry_applies_it(app, deliver, monkeypatch):
    user = await create_user(app)
    order = await pending_order(app, user)
    event = make_event("payment_intent.succeeded", payment_intent_object(order))
    real_handler = HANDLERS["payment_intent.succeeded"]
    attempts = []

    async def fails_once(context, event):
        attempts.append(event["id"])
        await real_handler(context, event)  # its writes must be rolled back
        if len(attempts) == 1:
            raise RuntimeError("fulfilment service unavailable")

    monkeypatch.setitem(HANDLERS, "payment_intent.succeeded", fails_once)
    before = metric("stripe_payments_total", status="succeeded", currency="usd")

    failed = await deliver(event)

    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "webhook_handler_failed"
    assert await order_status(app, order["id"]) == "pending"
    assert await count(app, "stripe_events") == 0
    assert await count(app, "payments") == 0
    failures = await query(app, "SELECT event_id, event_type, error FROM webhook_failures")
    assert len(failures) == 1
    assert failures[0]["event_id"] == event["id"]
    assert failures[0]["event_type"] == "payment_intent.succeeded"
    assert "RuntimeError: fulfilment service unavailable" in failures[0]["error"]
    assert metric("stripe_payments_total", status="succeeded", currency="usd") == before

    retried = await deliver(event)

    assert retried.status_code == 200
    assert retried.json()["outcome"] == "processed"
    assert await order_status(app, order["id"]) == "paid"
    assert metric("stripe_payments_total", status="succeeded", currency="usd") == before + 1
    assert await count(app, "webhook_failures") == 1  # the history stays


# -- payment events -----------------------------------------------------------------------


async def test_payment_failed_marks_a_pending_order_failed(app, deliver):
    user = await create_user(app)
    order = await pending_order(app, user)
    intent = payment_intent_object(order, status="requires_payment_method",
                                   error={"code": "card_declined", "message": "Your card was declined."})
    before = metric("stripe_payments_total", status="failed", currency="usd")

    response = await deliver(make_event("payment_intent.payment_failed", intent))

    assert response.status_code == 200
    rows = await query(app, "SELECT status, failure_reason FROM orders WHERE id = %s", (order["id"],))
    assert rows == [{"status": "failed", "failure_reason": "Your card was declined."}]
    payments = await query(app, "SELECT status, failure_code FROM payments")
    assert payments == [{"status": "failed", "failure_code": "card_declined"}]
    assert metric("stripe_payments_total", status="failed", currency="usd") == before + 1


async def test_late_failure_event_does_not_move_a_paid_order_back(app, deliver):
    user = await create_user(app)
    order = await pending_order(app, user)
    now = int(time.time())
    succeeded = make_event("payment_intent.succeeded", payment_intent_object(order), created=now)
    failed = make_event("payment_intent.payment_failed",
                        payment_intent_object(order, status="requires_payment_method",
                                              error={"code": "card_declined", "message": "declined"}),
                        created=now - 30)

    assert (await deliver(succeeded)).status_code == 200
    assert (await deliver(failed)).status_code == 200

    assert await order_status(app, order["id"]) == "paid"
    payments = await query(app, "SELECT status FROM payments")
    assert payments == [{"status": "succeeded"}]


async def test_success_after_a_failed_attempt_marks_the_order_paid(app, deliver):
    user = await create_user(app)
    order = await pending_order(app, user)
    now = int(time.time())
    await deliver(make_event("payment_intent.payment_failed",
                             payment_intent_object(order, status="requires_payment_method",
                                                   error={"code": "card_declined", "message": "declined"}),
                             created=now - 30))
    await deliver(make_event("payment_intent.succeeded", payment_intent_object(order), created=now))

    assert await order_status(app, order["id"]) == "paid"


async def test_payment_for_a_different_amount_does_not_fulfil_the_order(app, deliver):
    user = await create_user(app)
    order = await pending_order(app, user, unit_amount=5000)
    intent = payment_intent_object(order, amount=50)

    response = await deliver(make_event("payment_intent.succeeded", intent))

    assert response.status_code == 200
    assert await order_status(app, order["id"]) == "pending"
    assert "security.payment_amount_mismatch" in await audit_actions(app)


def foreign_payment_intent(intent_id: str = "pi_not_ours") -> dict:
    """A PaymentIntent without our order id in its metadata (an invoice's, the dashboard's)."""
    return {"id": intent_id, "object": "payment_intent", "amount": 100, "currency": "usd",
            "metadata": {}, "latest_charge": None}


async def test_payment_intent_of_no_order_of_ours_is_acknowledged(app, deliver):
    event = make_event("payment_intent.succeeded", foreign_payment_intent())

    response = await deliver(event)
    again = await deliver(event)

    assert response.status_code == 200
    assert response.json()["outcome"] == "processed"
    assert (again.status_code, again.json()["outcome"]) == (200, "duplicate")
    rows = await query(app, "SELECT id, status, payload FROM stripe_events")
    assert rows == [{"id": event["id"], "status": "processed", "payload": event}]
    assert await count(app, "payments") == 0


async def test_concurrent_deliveries_of_an_event_of_no_order_record_it_once(app, deliver):
    event = make_event("payment_intent.payment_failed", foreign_payment_intent())

    responses = await asyncio.gather(deliver(event), deliver(event))

    assert [r.status_code for r in responses] == [200, 200]
    assert sorted(r.json()["outcome"] for r in responses) == ["duplicate", "processed"]
    assert await count(app, "stripe_events") == 1


async def test_payment_intent_without_our_metadata_is_matched_by_its_stored_id(app, deliver):
    """No order id in the metadata: the one-statement path must still find the order
    that stored the PaymentIntent's id, and apply the event in a transaction."""
    user = await create_user(app)
    order = await pending_order(app, user)
    intent = {**payment_intent_object(order), "metadata": {}}

    response = await deliver(make_event("payment_intent.succeeded", intent))

    assert (response.status_code, response.json()["outcome"]) == (200, "processed")
    assert await order_status(app, order["id"]) == "paid"
    assert await count(app, "payments") == 1
    assert await count(app, "stripe_events") == 1


async def test_refund_of_a_charge_of_no_order_of_ours_is_recorded(app, deliver):
    charge = {"id": "ch_not_ours", "object": "charge", "amount": 100, "amount_refunded": 100,
              "refunded": True, "currency": "usd", "payment_intent": "pi_not_ours", "metadata": {}}

    response = await deliver(make_event("charge.refunded", charge))

    assert (response.status_code, response.json()["outcome"]) == (200, "processed")
    assert await count(app, "stripe_events") == 1
    assert await count(app, "payments") == 0


async def test_checkout_session_completed_marks_the_order_paid(app, deliver):
    user = await create_user(app)
    order = await pending_order(app, user, flow="checkout_session")
    session = {"id": "cs_test_1", "object": "checkout.session", "mode": "payment", "payment_status": "paid",
               "payment_intent": "pi_from_checkout", "subscription": None, "client_reference_id": str(order["id"]),
               "metadata": {"order_id": str(order["id"])}, "amount_total": order["amount_total"],
               "currency": "usd"}

    response = await deliver(make_event("checkout.session.completed", session))

    assert response.status_code == 200
    rows = await query(app, "SELECT status, stripe_checkout_session_id, stripe_payment_intent_id FROM orders")
    assert rows == [{"status": "paid", "stripe_checkout_session_id": "cs_test_1",
                     "stripe_payment_intent_id": "pi_from_checkout"}]


@pytest.mark.parametrize("paid_event, amount_total, currency", [
    ("checkout.session.completed", 50, "usd"),
    ("checkout.session.completed", None, "eur"),  # the order's amount in another currency
    ("checkout.session.async_payment_succeeded", 50, "usd"),
])
async def test_checkout_session_for_a_different_amount_does_not_fulfil_the_order(app, deliver, paid_event,
                                                                                  amount_total, currency):
    user = await create_user(app)
    order = await pending_order(app, user, unit_amount=5000, flow="checkout_session")
    session = {"id": "cs_test_short", "object": "checkout.session", "mode": "payment", "payment_status": "paid",
               "payment_intent": "pi_short", "metadata": {"order_id": str(order["id"])},
               "amount_total": order["amount_total"] if amount_total is None else amount_total,
               "currency": currency}

    response = await deliver(make_event(paid_event, session))

    assert response.status_code == 200
    assert await order_status(app, order["id"]) == "pending"
    rows = await query(app, "SELECT details FROM audit_logs WHERE action = 'security.payment_amount_mismatch'")
    assert [row["details"]["received"] for row in rows] == [[session["amount_total"], currency]]


async def test_unpaid_completed_session_waits_for_the_async_payment(app, deliver):
    user = await create_user(app)
    order = await pending_order(app, user, flow="checkout_session")
    session = {"id": "cs_test_2", "object": "checkout.session", "mode": "payment", "payment_status": "unpaid",
               "payment_intent": "pi_delayed", "metadata": {"order_id": str(order["id"])},
               "amount_total": order["amount_total"], "currency": "usd"}

    await deliver(make_event("checkout.session.completed", session))
    assert await order_status(app, order["id"]) == "pending"

    await deliver(make_event("checkout.session.async_payment_succeeded", {**session, "payment_status": "paid"}))
    assert await order_status(app, order["id"]) == "paid"


async def test_expired_checkout_session_fails_a_pending_order(app, deliver):
    user = await create_user(app)
    order = await pending_order(app, user, flow="checkout_session")
    session = {"id": "cs_test_3", "object": "checkout.session", "mode": "payment", "status": "expired",
               "payment_status": "unpaid", "metadata": {"order_id": str(order["id"])}}

    await deliver(make_event("checkout.session.expired", session))

    rows = await query(app, "SELECT status, failure_reason FROM orders")
    assert rows == [{"status": "failed", "failure_reason": "checkout session expired"}]


# -- catalog events -------------------------------------------------------------------------


async def test_product_and_price_events_update_the_catalog_and_its_cache(app, client, deliver):
    now = int(time.time())
    # Warm the cache with the empty catalog.
    assert (await client.get("/api/products")).json()["products"] == []

    await deliver(make_event("product.created", {"id": "prod_hook", "name": "Hook Mug", "active": True,
                                                 "updated": now, "metadata": {}}, created=now))
    await deliver(make_event("price.created", {"id": "price_hook", "product": "prod_hook", "unit_amount": 900,
                                               "currency": "usd", "active": True, "recurring": None,
                                               "created": now}, created=now))

    products = (await client.get("/api/products")).json()["products"]
    assert [p["name"] for p in products] == ["Hook Mug"]
    assert [p["id"] for p in products[0]["prices"]] == ["price_hook"]

    await deliver(make_event("product.deleted", {"id": "prod_hook", "name": "Hook Mug"}, created=now + 1))
    assert (await client.get("/api/products")).json()["products"] == []


async def test_older_product_event_does_not_overwrite_a_newer_one(app, deliver):
    now = int(time.time())
    await deliver(make_event("product.updated", {"id": "prod_order", "name": "New name", "active": True,
                                                 "updated": now}, created=now))
    await deliver(make_event("product.updated", {"id": "prod_order", "name": "Old name", "active": True,
                                                 "updated": now - 60}, created=now - 60))

    rows = await query(app, "SELECT name FROM products WHERE stripe_product_id = 'prod_order'")
    assert rows == [{"name": "New name"}]


async def test_late_product_event_does_not_revive_a_deleted_product(app, client, deliver):
    now = int(time.time())
    product = {"id": "prod_gone", "name": "Gone Mug", "active": True, "metadata": {}}
    price = {"id": "price_gone", "object": "price", "product": "prod_gone", "unit_amount": 900,
             "currency": "usd", "active": True, "recurring": None, "created": now - 60}
    await deliver(make_event("product.created", {**product, "updated": now - 60}, created=now - 60))
    await deliver(make_event("price.created", price, created=now - 60))
    await deliver(make_event("product.deleted", {**product, "deleted": True}, created=now))

    # Sent before the deletion, delivered after it.
    await deliver(make_event("product.updated", {**product, "updated": now - 30}, created=now - 30))
    await deliver(make_event("price.updated", price, created=now - 30))

    rows = await query(app, "SELECT p.active AS product_active, pr.active AS price_active"
                            " FROM products p JOIN prices pr ON pr.product_id = p.id")
    assert rows == [{"product_active": False, "price_active": False}]
    assert (await client.get("/api/products")).json()["products"] == []


async def test_product_deleted_before_it_was_created_stays_hidden(app, deliver):
    now = int(time.time())
    await deliver(make_event("product.deleted", {"id": "prod_early", "name": "Early", "deleted": True},
                             created=now))
    await deliver(make_event("product.created", {"id": "prod_early", "name": "Early", "active": True,
                                                 "updated": now - 10}, created=now - 10))

    rows = await query(app, "SELECT active FROM products WHERE stripe_product_id = 'prod_early'")
    assert rows == [{"active": False}]


@pytest.mark.parametrize("body", [b"not json at all", b"[]", b'{"id": "evt_1"}'])
async def test_signed_payload_that_is_not_an_event_is_400(app, deliver, body):
    response = await deliver(body)
    assert response.status_code == 400
    assert await count(app, "stripe_events") == 0
