"""GET /metrics reports the Stripe webhook backlog read from PostgreSQL at scrape time:
`stripe_webhook_events_unprocessed` and `stripe_webhook_oldest_unprocessed_age_seconds`
(payments/webhooks/backlog.py), and answers without them when PostgreSQL cannot.

Events reach the backlog the way production fills it: a signed delivery whose handler
raises. Time passing is simulated by moving the recorded failures into the past."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from payments.webhooks import backlog
from tests.app.payments_support import (  # noqa: F401  (fixtures)
    count, deliver, failing_ids, make_event, product_event, query, scrape)
from tests.support.services import free_port

UNPROCESSED = "stripe_webhook_events_unprocessed"
OLDEST_AGE = "stripe_webhook_oldest_unprocessed_age_seconds"
QUERY_ERRORS = "stripe_webhook_backlog_query_errors_total"


async def age_failures(app, event_id: str, seconds: int) -> None:
    """As if `seconds` had passed since the event's recorded failures."""
    await query(app, "UPDATE webhook_failures SET failed_at = failed_at - make_interval(secs => %s)"
                     " WHERE event_id = %s RETURNING id", (seconds, event_id))


async def test_backlog_is_zero_with_nothing_failed(client):
    found = await scrape(client)
    assert (found[UNPROCESSED], found[OLDEST_AGE]) == (0, 0)


async def test_failed_event_counts_after_the_grace_with_its_age_until_a_retry_applies_it(
        app, client, deliver, failing_ids):
    event = product_event()
    failing_ids.add(event["id"])

    assert (await deliver(event)).status_code == 500
    assert await count(app, "webhook_failures") == 1
    # Just failed: within the grace, not yet backlog.
    assert (await scrape(client))[UNPROCESSED] == 0

    await age_failures(app, event["id"], 300)
    found = await scrape(client)
    assert found[UNPROCESSED] == 1
    assert 300 <= found[OLDEST_AGE] < 330

    failing_ids.discard(event["id"])  # Stripe's retry now succeeds
    retried = await deliver(event)
    assert (retried.status_code, retried.json()["outcome"]) == (200, "processed")
    found = await scrape(client)
    assert (found[UNPROCESSED], found[OLDEST_AGE]) == (0, 0)


async def test_processed_and_unhandled_events_are_not_backlog_and_a_failing_one_counts_once(
        app, client, deliver, failing_ids):
    processed, unhandled, failing = product_event(), make_event("customer.created", {"id": "cus_x"}), product_event()
    failing_ids.add(failing["id"])
    assert (await deliver(processed)).json()["outcome"] == "processed"
    assert (await deliver(unhandled)).json()["outcome"] == "ignored"
    # Every retry of the event fails: two failures, one event, aged from the first.
    assert (await deliver(failing)).status_code == 500
    await age_failures(app, failing["id"], 600)
    assert (await deliver(failing)).status_code == 500
    await age_failures(app, failing["id"], 120)
    await query(app, "UPDATE stripe_events SET received_at = received_at - interval '1 hour' RETURNING id")

    found = await scrape(client)

    assert found[UNPROCESSED] == 1
    assert 720 <= found[OLDEST_AGE] < 750


async def test_oldest_age_is_that_of_the_oldest_of_several_failed_events(app, client, deliver, failing_ids):
    older, newer = product_event(), product_event()
    failing_ids.update({older["id"], newer["id"]})
    for event, age in ((older, 3600), (newer, 90)):
        assert (await deliver(event)).status_code == 500
        await age_failures(app, event["id"], age)

    found = await scrape(client)

    assert found[UNPROCESSED] == 2
    assert 3600 <= found[OLDEST_AGE] < 3630


async def test_metrics_answers_without_the_backlog_when_postgresql_is_unreachable(settings, client_for, capsys):
    # Nothing listens on this port: every connection attempt is refused.
    unreachable = f"postgresql://payments:secret@127.0.0.1:{free_port()}/payments"
    client = await client_for(settings, database_url=unreachable)
    before = (await scrape(client))[QUERY_ERRORS]
    await client.get("/livez")
    capsys.readouterr()

    started = time.monotonic()
    found = await scrape(client)
    elapsed = time.monotonic() - started

    assert elapsed < backlog.READ_DEADLINE_SECONDS
    assert UNPROCESSED not in found and OLDEST_AGE not in found
    assert found[QUERY_ERRORS] == before + 1
    assert "db_pool_max_connections" in found  # the other metrics are all there
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any(r.get("event") == "webhook_backlog_not_read" and r["level"] == "warning" for r in records)


async def test_a_blocked_backlog_query_is_cancelled_by_postgresql_and_metrics_still_answers(
        database_url, client, capsys):
    before = (await scrape(client))[QUERY_ERRORS]
    # A migration or a VACUUM FULL holding the table: the query waits on the lock.
    async with await psycopg.AsyncConnection.connect(database_url) as blocker:
        await blocker.execute("LOCK TABLE webhook_failures IN ACCESS EXCLUSIVE MODE")
        capsys.readouterr()
        started = time.monotonic()
        found = await scrape(client)
        elapsed = time.monotonic() - started
        await blocker.rollback()

    # PostgreSQL's statement_timeout ended it, before our own deadline would have.
    assert elapsed < backlog.READ_DEADLINE_SECONDS
    assert UNPROCESSED not in found and OLDEST_AGE not in found
    assert found[QUERY_ERRORS] == before + 1
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    failure = next(r for r in records if r.get("event") == "webhook_backlog_not_read")
    assert "QueryCanceled" in failure["error"]
    # The lock released, the next scrape reads the backlog again.
    assert (await scrape(client))[UNPROCESSED] == 0
