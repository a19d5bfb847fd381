"""A customer's browser at the lab's front door: Debian's Chromium, driven by Playwright,
against https://127.0.0.1:8443 (nginx on lb1, its TLS, headers and Content-Security-Policy in
force), trusting the load balancer's certificate as a customer's browser trusts a real one.

The certificate is put in an NSS database of the browser's own HOME (Chromium on Linux takes
its trust from there): certificate errors are not ignored, so a wrong or missing certificate
fails the test. Every page also reports Content-Security-Policy violations to the console,
and any console error or uncaught page error fails the flow that caused it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

HTTPS = "https://127.0.0.1:8443"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-quic", "--disable-sync",
]
PASSWORD = "correct horse battery staple"
LB_CERTIFICATE = "/etc/nginx/tls/lb.crt"
# What localstripe's fake Stripe.js and the Stripe stand-in accept as test cards.
CARD = "4242424242424242"
CARD_3DS = "4000002500003155"  # asks for a simulated 3-D Secure step first

FETCH_JSON = """
async ([method, path, headers]) => {
  const response = await fetch(path, {method, headers, credentials: "same-origin"});
  return {status: response.status, text: await response.text()};
}
"""
REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || "inline"} on ${location.pathname}`);
});
"""


def trusting_home(directory: Path, lb_host: str) -> Path:
    """A HOME whose NSS database trusts the load balancer's certificate (read from lb_host)."""
    certificate = subprocess.run(["docker", "exec", lb_host, "cat", LB_CERTIFICATE], check=True,
                                 capture_output=True, text=True, timeout=30).stdout
    pem = directory / "lb.crt"
    pem.write_text(certificate)
    nssdb = directory / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True, timeout=30)
    # "P": a trusted peer, the self-signed server certificate itself (the lab has no CA).
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "P,,", "-n", "payments-lab-lb", "-i", str(pem)],
                   check=True, timeout=30)
    return directory


class Problems:
    """Console errors, page errors and CSP violations seen by one browser context."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def watch(self, page) -> None:
        page.on("console", lambda m: self.seen.append(f"console {m.type}: {m.text} ({m.location.get('url')})")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.seen.append(f"page error: {e}"))

    @contextmanager
    def none_allowed(self, what: str):
        before = len(self.seen)
        yield
        new = self.seen[before:]
        assert not new, f"{what}: the browser reported:\n" + "\n".join(new)


class Customer:
    """One signed-in customer: a browser context with its own cookies."""

    def __init__(self, browser, home_url: str = HTTPS) -> None:
        self.context = browser.new_context(base_url=home_url)
        self.context.set_default_timeout(20_000)
        self.context.add_init_script(REPORT_CSP_VIOLATIONS)
        self.problems = Problems()
        self.context.on("page", self.problems.watch)
        self.page = self.context.new_page()
        self.email = f"frontdoor-{uuid.uuid4().hex[:10]}@example.com"

    def sign_up(self, *, wait_seconds: float = 150) -> None:
        """Through the sign-up form. The load balancer's auth zone limits sign-ups per
        address (5 a minute here, shared with other lab tests): a 429 is waited out, bounded."""
        deadline = time.monotonic() + wait_seconds
        while True:
            self.page.goto("/sign-up")
            if self.page.url.endswith("/sign-up") and self.page.get_by_label("Email").count():
                self.page.get_by_label("Email").fill(self.email)
                self.page.get_by_label("Password").fill(PASSWORD)
                with self.page.expect_navigation() as navigation:
                    self.page.get_by_role("button", name="Create account").click()
                if navigation.value is not None and navigation.value.status != 429:
                    break
            assert time.monotonic() < deadline, "sign-up was rate limited for too long"
            time.sleep(10)
        assert self.api("GET", "/api/me")["user"]["email"] == self.email

    def api(self, method: str, path: str, headers: dict | None = None) -> dict:
        """A JSON call made by the page itself (fetch, this customer's cookies, the browser's
        trust in the certificate), through the load balancer."""
        answer = self.page.evaluate(FETCH_JSON, [method, path, headers or {}])
        assert 200 <= answer["status"] < 300, f"{method} {path}: {answer['status']} {answer['text'][:300]}"
        return json.loads(answer["text"])

    def order(self, order_id: str) -> dict:
        return self.api("GET", f"/api/orders/{order_id}")["order"]

    def _poll(self, read, done, timeout: float):
        """read() until done(value) or the time is up (bounded); the last value either way."""
        deadline = time.monotonic() + timeout
        while True:
            value = read()
            if done(value) or time.monotonic() > deadline:
                return value
            time.sleep(0.5)

    def wait_for_order(self, order_id: str, status: str, timeout: float = 60) -> dict:
        """Only a webhook moves an order on; poll until it has."""
        return self._poll(lambda: self.order(order_id), lambda order: order["status"] == status, timeout)

    def wait_for_subscription(self, status: str, timeout: float = 60) -> list[dict]:
        """The customer's subscriptions, once one of them has `status` (set by webhook)."""
        return self._poll(lambda: self.api("GET", "/api/subscriptions")["subscriptions"],
                          lambda subscriptions: any(s["status"] == status for s in subscriptions), timeout)

    def fill_card(self, number: str) -> None:
        """localstripe's card element: one text input per field, named by its placeholder."""
        self.page.get_by_placeholder("number").fill(number)
        self.page.get_by_placeholder("exp_month").fill("12")
        self.page.get_by_placeholder("exp_year").fill("34")
        self.page.get_by_placeholder("cvc").fill("123")
        self.page.get_by_placeholder("postal_code").fill("42424")

    def pay_by_card(self, slug: str, number: str = CARD, *, three_d_secure: bool = False) -> str:
        """Product page, Buy, the embedded card form, Pay: the order id, once on /success."""
        page = self.page
        page.goto(f"/products/{slug}")
        page.get_by_role("link", name="Buy", exact=True).click()
        page.wait_for_url(f"**/checkout/{slug}**")
        self.fill_card(number)
        with page.expect_response(re.compile(r"/api/payment-intents$")) as created:
            page.get_by_role("button", name=re.compile(r"^Pay\b")).click()
        assert created.value.status == 201, created.value.text()
        if three_d_secure:
            page.get_by_role("button", name="Complete authentication").click()
        page.wait_for_url("**/success?order=*")
        return parse_qs(urlsplit(page.url).query)["order"][0]

    def pay_on_hosted_checkout(self, slug: str, button: str) -> str:
        """The product's checkout page, the hosted-checkout button, Stripe's page (the
        stand-in's), the card, Pay: the order id, once back on /success."""
        page = self.page
        page.goto(f"/products/{slug}")
        page.locator("a.buy").first.click()
        page.wait_for_url(f"**/checkout/{slug}**")
        with page.expect_response(re.compile(r"/api/checkout/sessions$")) as created:
            page.get_by_role("button", name=button).click()
        assert created.value.status == 201, created.value.text()
        page.wait_for_url("**/localstripe/checkout/pay/**")
        page.get_by_label("Card number").fill(CARD)
        page.get_by_role("button", name="Pay").click()
        page.wait_for_url(f"{HTTPS}/success?session_id=*")
        session_id = parse_qs(urlsplit(page.url).query)["session_id"][0]
        orders = self.api("GET", "/api/orders")["orders"]
        return next(o["id"] for o in orders if o["stripe_checkout_session_id"] == session_id)

    def close(self) -> None:
        self.context.close()


@contextmanager
def chromium(home: Path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True,
                                             env={**os.environ, "HOME": str(home)})
        try:
            yield browser
        finally:
            browser.close()
