"""A buyer pays for a product in a real browser, and the order becomes paid by webhook.

Chromium (Debian's, driven by Playwright) against the app under hypercorn (`live_server`),
with localstripe behind the Stripe stub: localstripe's fake Stripe.js replaces Stripe
Elements in the checkout page (its card element is plain inputs; the Stripe stub lets its
confirmCardPayment confirm with that card, and a 3-D Secure test card shows a simulated
authentication step), and localstripe then sends the signed `payment_intent.succeeded`
webhook to the app. The real Stripe.js and API cannot be
reached from here; localstripe is the stand-in.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid

import psycopg
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
PRODUCT_SLUG = "notebook"  # from the demo catalog (`python -m payments seed`)


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package "
                    f"(scripts/bootstrap.sh does) or set CHROMIUM")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS,
                                             headless=True)
        yield browser
        browser.close()


@pytest.fixture
def seeded_live_server(live_server):
    """The demo catalog created in localstripe (through the stub) and in the database."""
    result = subprocess.run([sys.executable, "-m", "payments", "seed", "--stripe"],
                            env=live_server.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return live_server


def wait_for_order_status(database_url: str, email: str, wanted: str, timeout: float) -> str:
    """Poll the buyer's latest order until it reaches `wanted` (or time runs out)."""
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT o.status FROM orders o JOIN users u ON u.id = o.user_id "
                "WHERE u.email = %s ORDER BY o.created_at DESC LIMIT 1", (email,)).fetchone()
        status = row[0] if row else None
        if status == wanted:
            return status
        time.sleep(0.25)
    return status


@pytest.mark.parametrize("card_number, three_d_secure", [
    ("4242424242424242", False),
    ("4000002500003155", True),  # localstripe asks for a 3-D Secure step first
], ids=["card", "card-with-3ds"])
def test_card_payment_in_the_browser_marks_the_order_paid_by_webhook(
    seeded_live_server, browser, card_number, three_d_secure
):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    server = seeded_live_server
    email = f"buyer-{uuid.uuid4().hex[:8]}@example.com"
    page = browser.new_page(base_url=server.url)
    page.set_default_timeout(15_000)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))

    # A buyer with an account.
    page.goto(f"/sign-up?next=/products/{PRODUCT_SLUG}")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Create account").click()

    # Product page, then the embedded checkout.
    page.goto(f"/products/{PRODUCT_SLUG}")
    page.get_by_role("link", name="Buy", exact=True).click()
    page.wait_for_url(f"**/checkout/{PRODUCT_SLUG}**")

    # localstripe's card element: one text input per field, named by its placeholder.
    page.get_by_placeholder("number").fill(card_number)
    page.get_by_placeholder("exp_month").fill("12")
    page.get_by_placeholder("exp_year").fill("34")
    page.get_by_placeholder("cvc").fill("123")
    page.get_by_placeholder("postal_code").fill("42424")
    page.get_by_role("button", name=re.compile(r"^Pay\b")).click()

    if three_d_secure:
        # localstripe's fake Stripe.js shows a simulated 3-D Secure step.
        page.get_by_role("button", name="Complete authentication").click()
    try:
        page.wait_for_url("**/success**")
    except PlaywrightTimeout:
        pytest.fail(f"no redirect to /success; page says {page.inner_text('main')!r}; "
                    f"browser console:\n" + "\n".join(console))

    status = wait_for_order_status(server.settings.database_url, email, "paid", timeout=30)
    assert status == "paid", (
        f"order status {status!r}; browser console:\n" + "\n".join(console)
        + "\nserver log:\n" + server.service.log_tail(40))
