"""Failed Stripe webhooks an operator sees and settles: `python -m payments webhooks failed |
replay | ignore` and the admin endpoints under /api/admin/webhooks/ (payments/webhooks/operator.py).

Failures are made the way production makes them: a signed delivery whose handler raises
(the product.created handler is swapped in this process, as in test_webhook_backlog_metrics.py).
The CLI runs as its own process with the real handlers, as after a deploy of the fix.
Time passing is simulated by moving the recorded failures into the past."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from payments.webhooks.handlers import HANDLERS
from tests.app.payments_support import (  # noqa: F401  (fixtures)
    create_user, deliver, failing_ids, make_event, product_event, query, scrape, sign_in)

REPO = Path(__file__).resolve().parents[2]
UNPROCESSED = "stripe_webhook_events_unprocessed"
OLDEST_AGE = "stripe_webhook_oldest_unprocessed_age_seconds"
ERROR = "RuntimeError: catalog store unavailable"


def run_cli(*args, env):
    return subprocess.run([sys.executable, "-m", "payments", *args], cwd=REPO / "app",
                          env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=120)


async def failed_delivery(deliver, failing_ids, *, attempts: int = 1) -> dict:
    event = product_event()
    failing_ids.add(event["id"])
    for _ in range(attempts):
        assert (await deliver(event)).status_code == 500
    return event


async def age_failures(app, event_id: str, seconds: int) -> None:
    await query(app, "UPDATE webhook_failures SET failed_at = failed_at - make_interval(secs => %s)"
                     " WHERE event_id = %s RETURNING id", (seconds, event_id))


async def product_exists(app, event: dict) -> bool:
    rows = await query(app, "SELECT 1 FROM products WHERE stripe_product_id = %s", (event["data"]["object"]["id"],))
    return bool(rows)


async def audit_rows(app, action: str) -> list[dict]:
    return await query(app, "SELECT user_id, host(ip) AS ip, details FROM audit_logs WHERE action = %s ORDER BY id",
                       (action,))


async def test_failed_webhook_is_listed_replayed_by_the_cli_after_the_fix_and_the_backlog_drops_to_zero(
        app, client, deliver, failing_ids, settings_env):
    event = await failed_delivery(deliver, failing_ids, attempts=2)
    await age_failures(app, event["id"], 300)
    assert (await scrape(client))[UNPROCESSED] == 1

    listed = run_cli("webhooks", "failed", env={"DATABASE_URL": settings_env["DATABASE_URL"]})
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["ID", "TYPE", "ATTEMPTS", "AGE", "ERROR"]
    assert row.split()[:3] == [event["id"], "product.created", "2"] and row.endswith(ERROR)
    assert row.split()[3].startswith("5m")  # 300 s and the few the test took
    as_json = json.loads(run_cli("webhooks", "failed", "--json", env=settings_env).stdout)["events"]
    assert [(e["id"], e["type"], e["attempts"], e["error"]) for e in as_json] == [
        (event["id"], "product.created", 2, ERROR)]
    assert 300 <= as_json[0]["age_seconds"] < 330

    # The CLI's process has the real handler: the cause is fixed there.
    replayed = run_cli("webhooks", "replay", event["id"], env=settings_env)

    assert replayed.returncode == 0, replayed.stderr
    assert f"{event['id']} (product.created): processed" in replayed.stdout
    assert await product_exists(app, event)
    found = await scrape(client)
    assert (found[UNPROCESSED], found[OLDEST_AGE]) == (0, 0)
    assert run_cli("webhooks", "failed", env=settings_env).stdout.strip() == "no failed webhook events"
    [audited] = await audit_rows(app, "admin.webhook_replayed")
    assert audited["user_id"] is None
    assert audited["details"]["event_id"] == event["id"] and audited["details"]["via"] == "cli"
    assert audited["details"]["outcome"] == "processed" and audited["details"]["operator"]
    # Stripe's own retry arriving later finds it applied.
    failing_ids.discard(event["id"])
    assert (await deliver(event)).json()["outcome"] == "duplicate"


async def test_replay_refuses_an_unknown_or_already_processed_event_with_a_clear_error(
        app, deliver, failing_ids, settings_env):
    unknown = run_cli("webhooks", "replay", "evt_does_not_exist", env=settings_env)
    assert unknown.returncode == 1
    assert "No failed webhook event evt_does_not_exist" in unknown.stderr
    assert "webhook_event_not_found" in unknown.stderr and "Traceback" not in unknown.stderr

    # Failed once, then applied by Stripe's retry: nothing left to replay.
    event = await failed_delivery(deliver, failing_ids)
    failing_ids.discard(event["id"])
    assert (await deliver(event)).json()["outcome"] == "processed"
    done = run_cli("webhooks", "replay", event["id"], env=settings_env)
    assert done.returncode == 1
    assert f"Event {event['id']} is already processed" in done.stderr
    assert "webhook_event_already_processed" in done.stderr
    assert await audit_rows(app, "admin.webhook_replayed") == []


async def test_ignore_requires_a_reason_settles_the_event_unapplied_and_is_audited(
        app, client, deliver, failing_ids, settings_env):
    event = await failed_delivery(deliver, failing_ids)
    await age_failures(app, event["id"], 120)
    env = {"DATABASE_URL": settings_env["DATABASE_URL"]}

    missing = run_cli("webhooks", "ignore", event["id"], env=env)
    assert missing.returncode == 2 and "--reason" in missing.stderr
    blank = run_cli("webhooks", "ignore", event["id"], "--reason", "   ", env=env)
    assert blank.returncode == 1 and "reason_required" in blank.stderr
    assert (await scrape(client))[UNPROCESSED] == 1

    ignored = run_cli("webhooks", "ignore", event["id"], "--reason", "test product, deleted in Stripe", env=env)

    assert ignored.returncode == 0, ignored.stderr
    assert f"{event['id']} (product.created): ignored" in ignored.stdout
    assert await query(app, "SELECT status, ignored_reason FROM stripe_events WHERE id = %s", (event["id"],)) == [
        {"status": "ignored", "ignored_reason": "test product, deleted in Stripe"}]
    [audited] = await audit_rows(app, "admin.webhook_ignored")
    assert audited["details"]["reason"] == "test product, deleted in Stripe"
    assert audited["details"]["event_id"] == event["id"] and audited["details"]["via"] == "cli"
    assert (await scrape(client))[UNPROCESSED] == 0
    again = run_cli("webhooks", "ignore", event["id"], "--reason", "twice", env=env)
    assert again.returncode == 1 and "is already ignored" in again.stderr
    # Settled: Stripe's retry, now succeeding, is a duplicate and applies nothing.
    failing_ids.discard(event["id"])
    assert (await deliver(event)).json()["outcome"] == "duplicate"
    assert not await product_exists(app, event)


async def test_admin_lists_and_replays_a_failed_webhook_and_the_replay_is_audited(
        app, client, deliver, failing_ids, sign_in):
    admin_user, admin = await sign_in(admin=True)
    event = await failed_delivery(deliver, failing_ids, attempts=3)

    listed = await admin.get("/api/admin/webhooks/failed")

    assert listed.status_code == 200
    [shown] = listed.json()["events"]
    assert (shown["id"], shown["type"], shown["attempts"], shown["error"]) == (
        event["id"], "product.created", 3, ERROR)
    assert shown["age_seconds"] >= 0 and shown["first_failed_at"] <= shown["last_failed_at"]

    failing_ids.discard(event["id"])  # the fix is deployed
    replayed = await admin.post(f"/api/admin/webhooks/{event['id']}/replay", json={})

    assert (replayed.status_code, replayed.json()) == (
        200, {"id": event["id"], "type": "product.created", "outcome": "processed"})
    assert await product_exists(app, event)
    assert (await admin.get("/api/admin/webhooks/failed")).json() == {"events": []}
    [audited] = await audit_rows(app, "admin.webhook_replayed")
    assert audited["user_id"] == admin_user["id"] and audited["details"]["via"] == "api"
    again = await admin.post(f"/api/admin/webhooks/{event['id']}/replay", json={})
    assert (again.status_code, again.json()["error"]["code"]) == (409, "webhook_event_already_processed")
    unknown = await admin.post("/api/admin/webhooks/evt_nope/replay", json={})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "webhook_event_not_found")


async def test_a_replay_that_fails_again_answers_the_error_counts_an_attempt_and_is_audited(
        app, deliver, failing_ids, sign_in):
    _, admin = await sign_in(admin=True)
    event = await failed_delivery(deliver, failing_ids)

    response = await admin.post(f"/api/admin/webhooks/{event['id']}/replay", json={})

    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "webhook_replay_failed" and ERROR in error["message"]
    [shown] = (await admin.get("/api/admin/webhooks/failed")).json()["events"]
    assert shown["attempts"] == 2
    [audited] = await audit_rows(app, "admin.webhook_replay_failed")
    assert audited["details"]["error"] == ERROR and audited["details"]["outcome"] == "error"
    assert await audit_rows(app, "admin.webhook_replayed") == []


async def test_a_replay_racing_stripes_retry_applies_the_event_once(app, deliver, failing_ids, sign_in, monkeypatch):
    _, admin = await sign_in(admin=True)
    event = await failed_delivery(deliver, failing_ids)
    failing_ids.discard(event["id"])
    applied = []
    working = HANDLERS["product.created"]

    async def counting(context, evt):
        applied.append(evt["id"])
        await asyncio.sleep(0.2)  # both in flight at once: the second waits on the event's row
        await working(context, evt)

    monkeypatch.setitem(HANDLERS, "product.created", counting)

    replayed, retried = await asyncio.gather(admin.post(f"/api/admin/webhooks/{event['id']}/replay", json={}),
                                             deliver(event))

    assert await query(app, "SELECT count(*) AS n FROM products WHERE stripe_product_id = %s",
                       (event["data"]["object"]["id"],)) == [{"n": 1}]
    assert applied == [event["id"]]  # the handler ran once
    # Whichever came second found the event applied: a duplicate delivery, or a refused replay.
    outcomes = (replayed.status_code, replayed.json().get("outcome"), retried.json()["outcome"])
    assert outcomes in ((200, "processed", "duplicate"), (409, None, "processed"))


async def test_admin_ignore_requires_a_reason_and_records_the_admin(app, deliver, failing_ids, sign_in):
    admin_user, admin = await sign_in(admin=True)
    event = await failed_delivery(deliver, failing_ids)

    for body in ({}, {"reason": ""}, {"reason": "  "}, {"reason": 42}):
        refused = await admin.post(f"/api/admin/webhooks/{event['id']}/ignore", json=body)
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, "reason_required"), body
    ignored = await admin.post(f"/api/admin/webhooks/{event['id']}/ignore", json={"reason": "duplicate of evt_1"})

    assert (ignored.status_code, ignored.json()) == (
        200, {"id": event["id"], "type": "product.created", "outcome": "ignored", "reason": "duplicate of evt_1"})
    [audited] = await audit_rows(app, "admin.webhook_ignored")
    assert audited["user_id"] == admin_user["id"] and audited["details"]["reason"] == "duplicate of evt_1"
    assert (await admin.get("/api/admin/webhooks/failed")).json() == {"events": []}


async def test_admin_webhook_endpoints_refuse_anonymous_non_admin_and_form_calls(
        app, client, deliver, failing_ids, sign_in):
    event = await failed_delivery(deliver, failing_ids)
    failing_ids.discard(event["id"])
    _, buyer = await sign_in()
    _, admin = await sign_in(admin=True)
    replay, ignore = f"/api/admin/webhooks/{event['id']}/replay", f"/api/admin/webhooks/{event['id']}/ignore"

    assert (await client.get("/api/admin/webhooks/failed")).status_code == 401
    assert (await client.post(replay, json={})).status_code == 401
    assert (await client.post(ignore, json={"reason": "x"})).status_code == 401
    for response in (await buyer.get("/api/admin/webhooks/failed"), await buyer.post(replay, json={}),
                     await buyer.post(ignore, json={"reason": "x"})):
        assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden")
    # What a cross-site form in an admin's browser could send.
    for response in (await admin.post(replay, data={"x": "1"}), await admin.post(ignore, data={"reason": "x"})):
        assert (response.status_code, response.json()["error"]["code"]) == (415, "unsupported_media_type")

    # Nothing was replayed, ignored or audited.
    assert [e["id"] for e in (await admin.get("/api/admin/webhooks/failed")).json()["events"]] == [event["id"]]
    assert not await product_exists(app, event)
    assert await query(app, "SELECT action FROM audit_logs WHERE action LIKE 'admin.webhook%%'") == []


async def test_an_event_that_failed_because_stripe_was_unreachable_is_replayed_with_stripes_current_state(
        app, deliver, settings, client_for, sign_stripe_payload, settings_env):
    """The issue's case: a handler that re-fetches from Stripe (a same-second tie of
    subscription events) while Stripe is unreachable. The failing delivery goes to an app
    whose STRIPE_API_BASE points at a closed port; the CLI's replay reaches localstripe."""
    from tests.app.test_subscriptions import stripe_subscription
    from tests.support.services import free_port

    sub = await stripe_subscription(app, await create_user(app))
    now = int(time.time())
    assert (await deliver(make_event("customer.subscription.created", {**sub, "status": "incomplete"},
                                     created=now))).status_code == 200
    stripe_down = await client_for(settings, stripe_api_base=f"http://127.0.0.1:{free_port()}",
                                   stripe_max_network_retries=0, stripe_timeout_seconds=2)
    updated = make_event("customer.subscription.updated", sub, created=now)  # the same second: a tie
    payload = json.dumps(updated).encode()
    failed = await stripe_down.post("/api/webhooks/stripe", content=payload, headers={
        "Content-Type": "application/json",
        "Stripe-Signature": sign_stripe_payload(payload, settings.stripe_webhook_secret, None)})
    assert failed.status_code == 500
    status = "SELECT status FROM subscriptions WHERE stripe_subscription_id = %s"
    assert await query(app, status, (sub["id"],)) == [{"status": "incomplete"}]

    replayed = run_cli("webhooks", "replay", updated["id"], env=settings_env)

    assert replayed.returncode == 0, replayed.stderr
    current = await app.state.stripe.v1.subscriptions.retrieve_async(sub["id"])
    assert await query(app, status, (sub["id"],)) == [{"status": current["status"]}] == [{"status": "active"}]
