"""A buyer pays for a product in a real browser, and the order becomes paid by webhook.

Chromium (Debian's, driven by Playwright) against the app under hypercorn (`live_server`),
with localstripe behind the Stripe stub: localstripe's fake Stripe.js replaces Stripe
Elements in the checkout page (its card element is plain inputs; the Stripe stub lets its
confirmCardPayment confirm with that card, and a 3-D Secure test card shows a simulated
authentication step), and localstripe then sends the signed `payment_intent.succeeded`
webhook to the app. The real Stripe.js and API cannot be
reached from here; localstripe is the stand-in.

The load balancer's Content-Security-Policy is in force on every app response (there is no
load balancer here: the test adds the header, rendered from roles/nginx_lb as shipped), and
any console error or CSP violation fails the test.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.app import csp

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
    # A response the test fulfills (add_header_to_app_responses) comes from no network
    # address, so Local Network Access takes the app's pages for public ones and blocks their
    # scripts from the Stripe stub on 127.0.0.1. Neither the lab (one loopback origin) nor
    # production (public to public) meets that check; it has nothing to do with the CSP.
    "--disable-features=LocalNetworkAccessChecks",
]
PRODUCT_SLUG = "notebook"  # from the demo catalog (`python -m payments seed`)
SUBSCRIPTION_SLUG = "pro-membership"
PASSWORD = "correct horse battery staple"
# Runs before any page script (Playwright injects it, outside the page's CSP): every
# violation the browser reports becomes a console error, which fails the test.
REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`CSP violation: ${event.effectiveDirective} blocked ${event.blockedURI || "inline"}`
                + ` at ${event.sourceFile}:${event.lineNumber}`);
});
"""


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


def policy_with_stub(stripe_origin: str) -> str:
    """The production policy, with the Stripe stub's origin where Stripe's origins are.

    In the lab the fake Stripe.js, the API it calls and the hosted pages are served through
    the load balancer from the site's own origin (inventories/lab: stripe_js_url under
    /localstripe/), so 'self' covers them and the shipped policy is used unchanged. Here
    there is no load balancer: the stub listens on an origin of its own, standing in for
    js.stripe.com and api.stripe.com, so this copy, and only this copy, lists it beside them.
    """
    return csp.with_sources(csp.shipped_policy("production"), ("script-src", "connect-src", "frame-src"),
                            stripe_origin)


@dataclass
class Shop:
    """A browser page on the live server, the LB's policy on every app response."""

    server: object
    page: object
    policy: str
    stripe_origin: str
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    policed: list[str] = field(default_factory=list)  # app URLs answered with the policy

    def report(self) -> str:
        return ("browser console:\n" + "\n".join(self.console)
                + "\nserver log:\n" + self.server.service.log_tail(40))

    def assert_clean(self, allowed: tuple[str, ...] = ()) -> None:
        """No console error, no CSP violation (but those matching an `allowed` pattern)."""
        errors = [e for e in self.errors if not any(re.search(pattern, e) for pattern in allowed)]
        assert errors == [], "console errors or CSP violations:\n" + "\n".join(errors)
        assert self.policed, "no app response went through the policy route"

    def sign_up(self, next_path: str) -> str:
        email = f"buyer-{uuid.uuid4().hex[:8]}@example.com"
        self.page.goto(f"/sign-up?next={next_path}")
        self.page.get_by_label("Email").fill(email)
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Create account").click()
        self.page.wait_for_url(f"**{next_path}")
        return email


def add_header_to_app_responses(page, app_url: str, policy: str, seen: list[str]) -> None:
    """Every response from `app_url` reaches the page with `policy` as its CSP header, the
    way the load balancer sends it.

    Chromium's Fetch domain, at the response stage: each response of the app, redirect hops
    and the requests they lead to included, is paused and handed on with the header added.
    Not Playwright's page.route: its handler never sees the request a redirect leads to
    (the page after sign-up would arrive without the policy). Nor Fetch.continueResponse:
    Chromium shows a CSP header added that way but does not enforce it.
    """
    cdp = page.context.new_cdp_session(page)

    def paused(event):
        status = event["responseStatusCode"]
        if 300 <= status < 400:  # the browser follows it; the next request is paused too
            cdp.send("Fetch.continueRequest", {"requestId": event["requestId"]})
            return
        body = cdp.send("Fetch.getResponseBody", {"requestId": event["requestId"]})
        headers = [h for h in event.get("responseHeaders", []) if h["name"].lower() != "content-security-policy"]
        seen.append(event["request"]["url"])
        cdp.send("Fetch.fulfillRequest", {
            "requestId": event["requestId"], "responseCode": status,
            "responseHeaders": [*headers, {"name": "Content-Security-Policy", "value": policy}],
            "body": body["body"] if body["base64Encoded"] else base64.b64encode(body["body"].encode()).decode()})

    cdp.on("Fetch.requestPaused", paused)
    cdp.send("Fetch.enable", {"patterns": [{"urlPattern": f"{app_url}/*", "requestStage": "Response"}]})


@pytest.fixture
def shop(seeded_live_server, browser, stripe_api_base):
    server = seeded_live_server
    stripe_origin = "{0.scheme}://{0.netloc}".format(urlsplit(stripe_api_base))
    policy = policy_with_stub(stripe_origin)
    context = browser.new_context(base_url=server.url)
    shop = Shop(server, None, policy, stripe_origin)
    context.add_init_script(REPORT_CSP_VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(15_000)
    shop.page = page
    add_header_to_app_responses(page, server.url, policy, shop.policed)

    def on_console(message):
        shop.console.append(f"{message.type}: {message.text}")
        # Only the app's pages: the stub's hosted pages stand in for Stripe's, not ours.
        if message.type == "error" and page.url.startswith(server.url + "/"):
            shop.errors.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: shop.errors.append(f"uncaught: {error}"))
    yield shop
    context.close()


def test_the_checkout_page_gets_the_load_balancers_policy(shop):
    """The header this test relies on is there, and it is the strict one."""
    shop.sign_up(f"/products/{PRODUCT_SLUG}")
    response = shop.page.goto(f"/checkout/{PRODUCT_SLUG}")
    assert response.headers["content-security-policy"] == shop.policy
    assert "'unsafe-inline'" not in shop.policy and "script-src 'self'" in shop.policy
    # checkout.js ran under it: the fake Stripe.js card element is mounted.
    try:
        shop.page.get_by_placeholder("number").wait_for()
    except Exception:
        pytest.fail("no card element; " + "\n".join(shop.errors) + "\n" + shop.report())
    shop.assert_clean()


@pytest.mark.parametrize("card_number, three_d_secure", [
    ("4242424242424242", False),
    ("4000002500003155", True),  # localstripe asks for a 3-D Secure step first
], ids=["card", "card-with-3ds"])
def test_card_payment_in_the_browser_marks_the_order_paid_by_webhook(shop, card_number, three_d_secure):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = shop.page
    # A buyer with an account.
    email = shop.sign_up(f"/products/{PRODUCT_SLUG}")

    # Product page, then the embedded checkout.
    page.get_by_role("link", name="Buy", exact=True).click()
    page.wait_for_url(f"**/checkout/{PRODUCT_SLUG}**")
    fill_card(page, card_number)
    page.get_by_role("button", name=re.compile(r"^Pay\b")).click()

    if three_d_secure:
        # localstripe's fake Stripe.js shows a simulated 3-D Secure step.
        page.get_by_role("button", name="Complete authentication").click()
    try:
        page.wait_for_url("**/success**")
    except PlaywrightTimeout:
        pytest.fail(f"no redirect to /success; page says {page.inner_text('main')!r}; " + shop.report())

    status = wait_for_order_status(shop.server.settings.database_url, email, "paid", timeout=30)
    assert status == "paid", f"order status {status!r}; " + shop.report()
    shop.assert_clean()


def test_a_declined_card_shows_the_error_and_lets_the_buyer_retry(shop):
    page = shop.page
    email = shop.sign_up(f"/checkout/{PRODUCT_SLUG}")
    fill_card(page, "4000000000000341")  # localstripe declines charging it
    page.get_by_role("button", name=re.compile(r"^Pay\b")).click()

    error = page.get_by_role("alert")
    try:
        error.filter(has_text=re.compile(r"\S")).wait_for()
    except Exception:
        pytest.fail(f"no error shown; page says {page.inner_text('main')!r}; " + shop.report())
    assert "declined" in error.inner_text().lower(), error.inner_text()
    assert page.get_by_role("button", name=re.compile(r"^Pay\b")).is_enabled()
    assert urlsplit(page.url).path == f"/checkout/{PRODUCT_SLUG}"
    assert wait_for_order_status(shop.server.settings.database_url, email, "paid", timeout=1) != "paid"
    # The browser logs the API's 402 as a failed load; nothing else may be logged.
    shop.assert_clean(allowed=(r"Failed to load resource: the server responded with a status of 402",))


def test_hosted_checkout_button_goes_to_stripes_page(shop):
    page = shop.page
    email = shop.sign_up(f"/checkout/{PRODUCT_SLUG}")
    page.get_by_role("button", name="Use Stripe's hosted checkout instead").click()
    page.wait_for_url(lambda url: url.startswith(f"{shop.stripe_origin}/checkout/pay/"))
    assert latest_order(shop.server.settings.database_url, email) == ("pending", "checkout_session", "payment")
    shop.assert_clean()


def test_subscribe_then_manage_billing(shop):
    """Subscribe goes to hosted Checkout; the account page then offers the billing portal."""
    page = shop.page
    email = shop.sign_up("/account")
    assert page.get_by_role("button", name="Manage billing").count() == 0  # no Stripe customer yet

    page.goto(f"/products/{SUBSCRIPTION_SLUG}")
    page.get_by_role("link", name="Subscribe", exact=True).click()
    page.wait_for_url(f"**/checkout/{SUBSCRIPTION_SLUG}**")
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_url(lambda url: url.startswith(f"{shop.stripe_origin}/checkout/pay/"))
    assert latest_order(shop.server.settings.database_url, email) == ("pending", "checkout_session", "subscription")

    page.goto("/account")
    page.get_by_role("button", name="Manage billing").click()
    page.wait_for_url(lambda url: url.startswith(f"{shop.stripe_origin}/billing_portal/"))
    shop.assert_clean()


def fill_card(page, card_number: str) -> None:
    # localstripe's card element: one text input per field, named by its placeholder.
    page.get_by_placeholder("number").fill(card_number)
    page.get_by_placeholder("exp_month").fill("12")
    page.get_by_placeholder("exp_year").fill("34")
    page.get_by_placeholder("cvc").fill("123")
    page.get_by_placeholder("postal_code").fill("42424")


def latest_order(database_url: str, email: str) -> tuple | None:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT o.status, o.flow, o.mode FROM orders o JOIN users u ON u.id = o.user_id "
            "WHERE u.email = %s ORDER BY o.created_at DESC LIMIT 1", (email,)).fetchone()
