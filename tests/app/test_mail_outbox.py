"""Transactional mail: outbox rows written with the change they tell about, delivered by
`python -m payments mail-worker` (its own process, as on the app hosts) to a real SMTP
server that records what it receives (aiosmtpd, on a loopback port). Real PostgreSQL.

The sink speaks plain SMTP on loopback (SMTP_STARTTLS=false), except in the test of
STARTTLS and login, where it requires both (a self-signed certificate for 127.0.0.1 that
the worker trusts through SMTP_CA_FILE)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from payments.mail import render
from tests.app.payments_support import (  # noqa: F401  (fixtures)
    create_user,
    deliver,
    make_event,
    order_status,
    payment_intent_object,
    pending_order,
    scrape,
    query,
)
from tests.support.services import free_port

REPO = Path(__file__).resolve().parents[2]
SENDER = "Shop <shop@mail.example.test>"


class Sink:
    """Records every message accepted; `on_message(message)` runs before the 250 answer."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.sessions: list[dict] = []
        self.on_message = None
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        with self._lock:
            self.messages.append(message)
            self.sessions.append({"tls": session.ssl is not None, "authenticated": session.authenticated,
                                  "login": getattr(session.auth_data, "login", None)})
        if self.on_message is not None:
            self.on_message(message)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_port():
    return free_port()


@pytest.fixture
def start_sink(smtp_port):
    """`sink = start_sink()`: the SMTP server on `smtp_port`, stopped after the test."""
    controllers = []

    def start(**smtp_options) -> Sink:
        sink = Sink()
        controller = Controller(sink, hostname="127.0.0.1", port=smtp_port, **smtp_options)
        controller.start()
        controllers.append(controller)
        return sink

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
def start_worker(database_url, smtp_port):
    """`process = start_worker()`: `python -m payments mail-worker`, SIGTERMed after the test."""
    processes = []

    def start(**extra) -> subprocess.Popen:
        env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": database_url, "SMTP_HOST": "127.0.0.1",
               "SMTP_PORT": str(smtp_port), "SMTP_STARTTLS": "false", "MAIL_FROM": SENDER,
               "SHOP_NAME": "Test Shop", "MAIL_POLL_SECONDS": "0.1", "MAIL_RETRY_BASE_SECONDS": "0.2",
               "MAIL_RETRY_MAX_SECONDS": "0.5", **extra}
        process = subprocess.Popen([sys.executable, "-m", "payments", "mail-worker"], cwd=REPO / "app", env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


async def eventually(predicate, *, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


async def outbox(app) -> list[dict]:
    return await query(app, "SELECT kind, recipient, status, attempts, last_error, message_token::text AS token"
                            " FROM mail_outbox ORDER BY id")


async def paid_order(app, deliver, *, concurrent_deliveries: int = 1) -> tuple[dict, dict]:
    user = await create_user(app)
    order = await pending_order(app, user, unit_amount=4200)
    event = make_event("payment_intent.succeeded", payment_intent_object(order))
    responses = await asyncio.gather(*(deliver(event) for _ in range(concurrent_deliveries)))
    outcomes = sorted(r.json()["outcome"] for r in responses)
    assert outcomes == sorted(["processed"] + ["duplicate"] * (concurrent_deliveries - 1))
    assert await order_status(app, order["id"]) == "paid"
    return user, order


async def test_a_paid_order_delivered_twice_concurrently_sends_exactly_one_receipt(
        app, client, deliver, start_sink, start_worker):
    sink = start_sink()
    user, order = await paid_order(app, deliver, concurrent_deliveries=2)
    # Another event reporting the same payment adds no second mail either.
    again = make_event("payment_intent.succeeded", payment_intent_object(order))
    assert (await deliver(again)).status_code == 200
    [row] = await outbox(app)
    assert (row["kind"], row["recipient"], row["status"]) == ("order_paid", user["email"], "pending")
    found = await scrape(client)
    assert found["mail_outbox_pending"] == 1 and found["mail_outbox_oldest_pending_age_seconds"] >= 0

    start_worker()

    assert await eventually(lambda: _sent(app))
    await asyncio.sleep(0.5)  # a few more rounds of the worker: nothing else goes out
    [message] = sink.messages
    assert message["To"] == user["email"] and message["From"] == SENDER
    assert message["Subject"] == "Your receipt"
    assert message["Message-ID"] == f"<outbox-{row['token']}@mail.example.test>"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert str(order["id"]) in text and "42.00 USD" in text and "Test Shop" in text
    assert "42.00 USD" in html and "<table>" in html
    found = await scrape(client)
    assert (found["mail_outbox_pending"], found["mail_outbox_oldest_pending_age_seconds"]) == (0, 0)


async def _sent(app) -> bool:
    rows = await outbox(app)
    return bool(rows) and all(r["status"] == "sent" for r in rows)


async def test_smtp_down_leaves_the_order_paid_and_the_mail_goes_out_when_it_returns(
        app, deliver, start_sink, start_worker):
    worker = start_worker()  # nothing listens on the SMTP port yet
    user, order = await paid_order(app, deliver)

    async def deferred():
        rows = await outbox(app)
        return rows if rows and rows[0]["attempts"] >= 2 else None

    [row] = await eventually(deferred)
    assert row["status"] == "pending" and "ConnectionRefused" in row["last_error"]
    assert await order_status(app, order["id"]) == "paid"

    sink = start_sink()

    assert await eventually(lambda: _sent(app))
    [message] = sink.messages
    assert message["To"] == user["email"]
    assert (await outbox(app))[0]["last_error"] is None
    assert worker.poll() is None  # it kept running through the outage


async def test_a_worker_killed_between_send_and_mark_resends_once_with_the_same_message_id(
        app, deliver, start_sink, start_worker):
    """The one duplicate the outbox allows (app/README.md): the server accepted the mail and
    the worker died before committing `sent`. It is killed from inside the sink, after the
    message arrived and before the server's 250 reaches it."""
    sink = start_sink()
    first = start_worker()
    sink.on_message = lambda message: (os.kill(first.pid, signal.SIGKILL), setattr(sink, "on_message", None))
    await paid_order(app, deliver)

    assert await asyncio.to_thread(first.wait, 20) == -signal.SIGKILL
    [row] = await outbox(app)
    assert row["status"] == "pending"  # its transaction died with the worker
    assert len(sink.messages) == 1

    start_worker()  # the restart

    assert await eventually(lambda: _sent(app))
    await asyncio.sleep(0.5)
    assert len(sink.messages) == 2
    assert sink.messages[0]["Message-ID"] == sink.messages[1]["Message-ID"] == \
        f"<outbox-{row['token']}@mail.example.test>"


@pytest.fixture
def tls_files(tmp_path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and its key (the sink's; the worker's CA)."""
    cert, key = tmp_path / "smtp.pem", tmp_path / "smtp.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return str(cert), str(key)


def accept_shop_secret(server, session, envelope, mechanism, auth_data):
    # handled=False: aiosmtpd itself answers a refusal (535).
    return AuthResult(success=auth_data.login == b"shop" and auth_data.password == b"s3cret", handled=False,
                      auth_data=auth_data)


async def test_the_worker_sends_over_starttls_with_a_login_and_retries_a_refused_one(
        app, deliver, start_sink, start_worker, tls_files):
    cert, key = tls_files
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    sink = start_sink(tls_context=server_tls, require_starttls=True, authenticator=accept_shop_secret,
                      auth_required=True, auth_require_tls=True)
    wrong = start_worker(SMTP_STARTTLS="true", SMTP_CA_FILE=cert, SMTP_USER="shop", SMTP_PASSWORD="wrong")
    await paid_order(app, deliver)

    async def refused():
        rows = await outbox(app)
        return rows if rows and rows[0]["attempts"] >= 2 else None

    [row] = await eventually(refused)
    assert row["status"] == "pending" and "SMTPAuthenticationError" in row["last_error"]  # retried, not failed
    assert sink.messages == []
    wrong.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(wrong.wait, 20) == 0

    start_worker(SMTP_STARTTLS="true", SMTP_CA_FILE=cert, SMTP_USER="shop", SMTP_PASSWORD="s3cret")

    assert await eventually(lambda: _sent(app))
    assert sink.sessions == [{"tls": True, "authenticated": True, "login": b"shop"}]


async def test_two_workers_share_the_outbox_and_send_each_mail_once(app, deliver, start_sink, start_worker):
    sink = start_sink()
    for _ in range(6):
        await paid_order(app, deliver)

    start_worker()
    start_worker()

    assert await eventually(lambda: _sent(app))
    await asyncio.sleep(0.5)
    ids = sorted(message["Message-ID"] for message in sink.messages)
    assert len(ids) == 6 and len(set(ids)) == 6


async def test_refunds_and_subscription_events_write_their_mails_once(app, deliver):
    user = await create_user(app)
    await query(app, "UPDATE users SET stripe_customer_id = 'cus_mail' WHERE id = %s RETURNING id", (user["id"],))
    order = await pending_order(app, user, unit_amount=1000)
    intent = payment_intent_object(order)
    await deliver(make_event("payment_intent.succeeded", intent))
    refunded = {"id": intent["latest_charge"], "object": "charge", "amount": 1000, "amount_refunded": 1000,
                "refunded": True, "currency": "usd", "payment_intent": intent["id"]}
    for _ in range(2):  # Stripe's event, then a copy under a new id
        assert (await deliver(make_event("charge.refunded", refunded))).status_code == 200
    subscription = {"id": "sub_mail", "object": "subscription", "customer": "cus_mail", "status": "active",
                    "items": {"data": []}}
    # Each event a second after the one before: no tie for the handlers to settle with Stripe.
    start = int(time.time()) - 100
    await deliver(make_event("customer.subscription.created", subscription, created=start))
    for n, (reason, invoice_id, event_type) in enumerate((("subscription_create", "in_1", "invoice.paid"),
                                                          ("subscription_create", "in_1", "invoice.payment_succeeded"),
                                                          ("subscription_cycle", "in_2", "invoice.paid"),
                                                          ("subscription_cycle", "in_3", "invoice.payment_failed")),
                                                         start=1):
        invoice = {"id": invoice_id, "object": "invoice", "customer": "cus_mail", "subscription": "sub_mail",
                   "billing_reason": reason, "status": "paid", "amount_paid": 900, "amount_due": 900,
                   "currency": "usd", "hosted_invoice_url": None}
        assert (await deliver(make_event(event_type, invoice, created=start + n))).status_code == 200
    deleted = make_event("customer.subscription.deleted", {**subscription, "status": "canceled"}, created=start + 10)
    assert (await deliver(deleted)).status_code == 200
    # A customer of no user of ours gets nothing.
    other = make_event("customer.subscription.deleted", {**subscription, "id": "sub_x", "customer": "cus_x"})
    assert (await deliver(other)).status_code == 200

    rows = await outbox(app)

    assert [(r["kind"], r["recipient"]) for r in rows] == [
        (kind, user["email"]) for kind in ("order_paid", "refund_issued", "subscription_started",
                                           "subscription_renewed", "subscription_payment_failed",
                                           "subscription_cancelled")]


@pytest.mark.parametrize("kind", render.SUBJECTS)
def test_every_mail_renders_as_text_and_escaped_html(kind):
    context = {"order_id": "o-1", "amount": 1999, "currency": "eur", "subscription_id": "sub_1",
               "invoice_id": "in_1", "hosted_invoice_url": "https://invoice.example/1",
               "items": [{"product_name": "<Mug & Co>", "quantity": 2, "unit_amount": 999}]}
    row = {"kind": kind, "recipient": "a@example.com", "context": context,
           "message_token": "00000000-0000-0000-0000-000000000001"}

    message = render.build_message(row, sender=SENDER, shop_name="Test Shop")

    assert message["Subject"] == render.SUBJECTS[kind]
    assert message["Message-ID"] == "<outbox-00000000-0000-0000-0000-000000000001@mail.example.test>"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Test Shop" in text and "Test Shop" in html
    if kind in ("order_paid",):
        assert "<Mug & Co>" in text and "&lt;Mug &amp; Co&gt;" in html and "<Mug" not in html


@pytest.mark.parametrize(("env", "named"), [
    ({"MAIL_FROM": SENDER}, "SMTP_HOST"),
    ({"SMTP_HOST": "127.0.0.1"}, "MAIL_FROM"),
    ({"SMTP_HOST": "127.0.0.1", "MAIL_FROM": SENDER, "SMTP_USER": "shop"}, "SMTP_PASSWORD"),
    ({"SMTP_HOST": "127.0.0.1", "MAIL_FROM": SENDER, "SMTP_STARTTLS": "maybe"}, "SMTP_STARTTLS"),
])
def test_mail_worker_refuses_to_start_with_a_setting_missing_or_malformed_and_names_it(database_url, env, named):
    result = subprocess.run([sys.executable, "-m", "payments", "mail-worker"], cwd=REPO / "app",
                            env={"PATH": "/usr/bin:/bin", "DATABASE_URL": database_url, **env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert named in result.stderr and "Traceback" not in result.stderr
