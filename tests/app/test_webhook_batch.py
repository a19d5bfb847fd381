"""Group commit of the webhook ledger's one-statement claims (payments/webhooks/batch.py):
concurrent events of no order of ours are recorded together in fewer statements, each
exactly once, while an event of one of our orders still runs its handler, and one event
PostgreSQL refuses fails alone."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from payments.webhooks import processor
from payments.webhooks.batch import ClaimBatcher
from tests.app.payments_support import (  # noqa: F401  (fixtures)
    count,
    create_user,
    deliver,
    make_event,
    metric,
    order_status,
    pending_order,
    query,
)


def foreign_intent() -> dict:
    """A PaymentIntent of no order of ours (no order id in its metadata, an id no order stored)."""
    return {"id": f"pi_{uuid.uuid4().hex[:16]}", "object": "payment_intent", "amount": 100, "currency": "usd",
            "metadata": {}, "latest_charge": None}


def foreign_refund() -> dict:
    return {"id": f"ch_{uuid.uuid4().hex[:16]}", "object": "charge", "amount": 100, "amount_refunded": 100,
            "refunded": True, "currency": "usd", "payment_intent": f"pi_{uuid.uuid4().hex[:16]}", "metadata": {}}


def unrelated_burst() -> list[dict]:
    """50 distinct events, each of the one-statement path: handled types of no order of
    ours (processed) and a type without a handler (ignored)."""
    return ([make_event("payment_intent.succeeded", foreign_intent()) for _ in range(20)]
            + [make_event("charge.refunded", foreign_refund()) for _ in range(10)]
            + [make_event("charge.refunded", {**foreign_refund(), "payment_intent": None}) for _ in range(5)]
            + [make_event("customer.tax_id.created", {"id": f"txi_{i}"}) for i in range(15)])


async def process_all(app, claims: ClaimBatcher, events: list[dict]) -> list:
    return await asyncio.gather(*(processor.process_event(app.state.db, event, claims=claims) for event in events),
                                return_exceptions=True)


async def stored_statuses(app) -> dict[str, str]:
    return {row["id"]: row["status"] for row in await query(app, "SELECT id, status FROM stripe_events")}


async def test_concurrent_events_of_no_order_are_recorded_once_in_fewer_statements(app):
    claims = ClaimBatcher(app.state.db)
    events = unrelated_burst()

    outcomes = await process_all(app, claims, events)

    expected = ["ignored" if event["type"] == "customer.tax_id.created" else "processed" for event in events]
    assert outcomes == expected
    assert await stored_statuses(app) == {event["id"]: outcome for event, outcome in zip(events, expected)}
    rows = await query(app, "SELECT id, payload FROM stripe_events WHERE id = %s", (events[0]["id"],))
    assert rows == [{"id": events[0]["id"], "payload": events[0]}]
    assert claims.events == len(events)
    assert 1 <= claims.statements < len(events)


async def test_a_statement_carries_at_most_max_batch_events(app):
    claims = ClaimBatcher(app.state.db, max_batch=8)
    events = unrelated_burst()

    outcomes = await process_all(app, claims, events)

    assert set(outcomes) == {"processed", "ignored"}
    assert await count(app, "stripe_events") == len(events)
    assert claims.statements >= -(-len(events) // 8)


@pytest.mark.parametrize("event_type, obj, outcome", [
    ("payment_intent.succeeded", foreign_intent(), "processed"),
    ("customer.tax_id.created", {"id": "txi_twice"}, "ignored"),
])
async def test_same_event_delivered_concurrently_in_one_burst_is_claimed_once(app, event_type, obj, outcome):
    claims = ClaimBatcher(app.state.db)
    event = make_event(event_type, obj)
    others = unrelated_burst()[:10]

    outcomes = await process_all(app, claims, [event, *others[:5], event, event, *others[5:], event])

    mine = [outcomes[i] for i in (0, 6, 7, 13)]
    assert sorted(mine) == sorted([outcome, "duplicate", "duplicate", "duplicate"])
    assert outcomes[1:6] + outcomes[8:13] == ["processed"] * 10
    assert await query(app, "SELECT status FROM stripe_events WHERE id = %s", (event["id"],)) == [{"status": outcome}]
    assert await count(app, "stripe_events") == 11
    # Delivered again after the burst: found by the primary key.
    assert await process_all(app, claims, [event]) == ["duplicate"]


async def test_events_of_our_orders_in_a_burst_run_their_handlers(app):
    """No order id in the metadata: only the batch statement's lookup of the stored
    PaymentIntent id can tell these events are ours."""
    user = await create_user(app)
    to_pay = await pending_order(app, user)
    to_refund = await pending_order(app, user)
    paid = make_event("payment_intent.succeeded", {
        "id": to_pay["stripe_payment_intent_id"], "object": "payment_intent", "amount": to_pay["amount_total"],
        "currency": to_pay["currency"], "status": "succeeded", "latest_charge": "ch_paid", "metadata": {}})
    refunded = make_event("charge.refunded", {
        "id": "ch_refunded", "object": "charge", "amount": to_refund["amount_total"],
        "amount_refunded": to_refund["amount_total"], "refunded": True, "currency": to_refund["currency"],
        "payment_intent": to_refund["stripe_payment_intent_id"], "metadata": {}})
    others = unrelated_burst()[:30]
    before = metric("stripe_payments_total", status="succeeded", currency="usd")
    claims = ClaimBatcher(app.state.db)

    outcomes = await process_all(app, claims, [*others[:10], paid, *others[10:20], refunded, paid, *others[20:]])

    assert sorted([outcomes[10], outcomes[22]]) == ["duplicate", "processed"]  # `paid`, twice
    assert outcomes[21] == "processed"
    assert outcomes[:10] + outcomes[11:21] + outcomes[23:] == ["processed"] * 30
    assert await order_status(app, to_pay["id"]) == "paid"
    assert await order_status(app, to_refund["id"]) == "refunded"
    assert metric("stripe_payments_total", status="succeeded", currency="usd") == before + 1
    payments = await query(app, "SELECT stripe_payment_intent_id, status FROM payments ORDER BY id")
    assert payments == [{"stripe_payment_intent_id": to_pay["stripe_payment_intent_id"], "status": "succeeded"},
                        {"stripe_payment_intent_id": to_refund["stripe_payment_intent_id"], "status": "refunded"}]
    assert await count(app, "stripe_events") == 32


async def test_an_event_postgresql_refuses_fails_alone_and_the_burst_is_recorded(app):
    """jsonb cannot hold the NUL character: that payload fails the batch statement, then
    its own claim; every other event of the burst is claimed alone and recorded."""
    claims = ClaimBatcher(app.state.db)
    poison = make_event("payment_intent.succeeded", {**foreign_intent(), "description": "nul \x00 byte"})
    others = unrelated_burst()[:20]

    outcomes = await process_all(app, claims, [*others[:10], poison, *others[10:]])

    assert isinstance(outcomes[10], processor.HandlerFailed)
    assert outcomes[:10] + outcomes[11:] == ["processed"] * 20
    assert set(await stored_statuses(app)) == {event["id"] for event in others}

    # The batcher carries on with the next burst.
    statements = claims.statements
    later = unrelated_burst()[:10]
    assert await process_all(app, claims, later) == ["processed"] * 10
    assert await count(app, "stripe_events") == 30
    assert claims.statements == statements + 1


async def test_poison_delivery_in_a_burst_is_500_and_the_others_200(app, deliver):
    poison = make_event("customer.tax_id.created", {"id": "txi_nul", "value": "\x00"})
    others = unrelated_burst()[:15]

    responses = await asyncio.gather(*(deliver(event) for event in [*others[:7], poison, *others[7:]]))

    assert responses[7].status_code == 500
    assert responses[7].json()["error"]["code"] == "webhook_handler_failed"
    assert [r.status_code for r in responses[:7] + responses[8:]] == [200] * 15
    assert set(await stored_statuses(app)) == {event["id"] for event in others}


async def test_concurrent_deliveries_through_the_endpoint_share_statements(app, deliver):
    events = unrelated_burst()

    responses = await asyncio.gather(*(deliver(event) for event in events))

    assert [r.json()["outcome"] for r in responses] == [
        "ignored" if event["type"] == "customer.tax_id.created" else "processed" for event in events]
    assert await count(app, "stripe_events") == len(events)
    claims = app.state.webhook_claims
    assert claims.events == len(events)
    assert claims.statements < len(events)


async def test_cancelled_deliveries_do_not_lose_the_others_results(app):
    """Clients go away: one while its claim is queued, then the one whose claim started the
    writer, while the statement is in flight. The statement still completes (every event
    of the burst is recorded), the others are answered, and the batcher goes on."""
    claims = ClaimBatcher(app.state.db)
    events = unrelated_burst()[:10]
    tasks = [asyncio.create_task(processor.process_event(app.state.db, event, claims=claims)) for event in events]
    await asyncio.sleep(0)  # every claim queued, the statement not sent yet
    tasks[3].cancel()
    while claims.statements == 0:
        await asyncio.sleep(0)
    tasks[0].cancel()

    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    assert isinstance(outcomes[0], asyncio.CancelledError) and isinstance(outcomes[3], asyncio.CancelledError)
    assert outcomes[1:3] + outcomes[4:] == ["processed"] * 8
    assert set(await stored_statuses(app)) == {event["id"] for event in events}
    assert claims.statements == 1
    assert await process_all(app, claims, unrelated_burst()[:5]) == ["processed"] * 5
