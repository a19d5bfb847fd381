"""A customer pays through the front door: every payment flow in a real browser, through the
load balancer, the way a customer reaches the shop (tests/lab/frontdoor.py).

Stand-ins, because the real Stripe cannot be reached from here: Stripe.js is localstripe's
fake (its card element is plain inputs; 3-D Secure is a simulated button), and Stripe's API,
hosted Checkout page and billing portal are the lab's Stripe stand-in on labsvc
(roles/lab_services/files/stripe_stub.py: localstripe plus prices, sessions, a hosted page
that is a plain card form, a portal page that only links back). The stand-in delivers
every webhook to the site's public name through the load balancer, over TLS verified
against its certificate, signed with the app's secret, as Stripe does. So what is proven
here: our pages under the production CSP, our API, the LB's routing, rate limits and TLS for
webhooks, and the app's handling of each event. Stripe's own pages and Stripe.js are not.

Orders turn paid, refunded or active only by webhook: each flow waits for that.
"""

from __future__ import annotations

import pytest

from tests.lab import frontdoor
from tests.lab.labtools import run_in

pytestmark = pytest.mark.lab

ONE_TIME = "notebook"
SUBSCRIPTION = "pro-membership"


@pytest.fixture(scope="module")
def browser(tmp_path_factory, lab):
    home = frontdoor.trusting_home(tmp_path_factory.mktemp("browser-home"), lab["lb"])
    with frontdoor.chromium(home) as browser:
        yield browser


@pytest.fixture(scope="module")
def customer(browser):
    customer = frontdoor.Customer(browser)
    with customer.problems.none_allowed("sign-up"):
        customer.sign_up()
    yield customer
    customer.close()


@pytest.mark.parametrize("card, three_d_secure", [
    (frontdoor.CARD, False),
    (frontdoor.CARD_3DS, True),
], ids=["card", "card-with-3ds"])
def test_card_payment_marks_the_order_paid_by_webhook(customer, card, three_d_secure):
    with customer.problems.none_allowed("card payment"):
        order_id = customer.pay_by_card(ONE_TIME, card, three_d_secure=three_d_secure)
        assert customer.page.get_by_role("heading").first.inner_text()
    order = customer.wait_for_order(order_id, "paid")
    assert (order["status"], order["flow"]) == ("paid", "payment_intent"), order


def test_hosted_checkout_for_a_product_marks_the_order_paid(customer):
    with customer.problems.none_allowed("hosted checkout"):
        order_id = customer.pay_on_hosted_checkout(ONE_TIME, "Use Stripe's hosted checkout instead")
    order = customer.wait_for_order(order_id, "paid")
    assert (order["status"], order["flow"]) == ("paid", "checkout_session"), order


def test_hosted_checkout_for_a_subscription_makes_it_active(customer):
    with customer.problems.none_allowed("subscription checkout"):
        order_id = customer.pay_on_hosted_checkout(SUBSCRIPTION, "Subscribe")
    order = customer.wait_for_order(order_id, "paid")
    assert (order["status"], order["mode"]) == ("paid", "subscription"), order
    subscriptions = customer.wait_for_subscription("active")
    assert [s["status"] for s in subscriptions] == ["active"], subscriptions
    with customer.problems.none_allowed("account page"):
        customer.page.goto("/account")
        assert "active" in customer.page.locator("main").inner_text()


def test_billing_portal_opens_and_returns_to_the_account(customer):
    page = customer.page
    with customer.problems.none_allowed("billing portal"):
        page.goto("/account")
        page.get_by_role("button", name="Manage billing").click()
        page.wait_for_url("**/localstripe/billing_portal/**")
        assert "billing portal" in page.get_by_role("heading").inner_text()
        page.get_by_role("link", name="Return to the shop").click()
        page.wait_for_url(f"{frontdoor.HTTPS}/account")


def test_admin_refund_marks_the_order_refunded_by_webhook(customer, browser, lab):
    with customer.problems.none_allowed("card payment"):
        order_id = customer.pay_by_card(ONE_TIME)
    assert customer.wait_for_order(order_id, "paid")["status"] == "paid"

    admin = frontdoor.Customer(browser)
    try:
        admin.sign_up()
        sql = f"UPDATE users SET is_admin = true WHERE email = '{admin.email}'"
        run_in(lab["db_primary"], "runuser", "-u", "postgres", "--", "psql", "-d", "payments", "-XAtq",
               "-v", "ON_ERROR_STOP=1", "-c", sql)
        refund = admin.api("POST", f"/api/admin/orders/{order_id}/refund",
                           headers={"Content-Type": "application/json"})
        assert refund["refund_status"] == "succeeded", refund
    finally:
        admin.close()
    order = customer.wait_for_order(order_id, "refunded")
    assert order["status"] == "refunded", order

