"""The stand-in's hosted pages: a Checkout Session's payment page and the billing portal.

Stripe's hosted Checkout collects the card on checkout.stripe.com, charges it (or starts
the subscription), marks the session complete, sends checkout.session.completed and sends
the buyer to the session's success_url. This page does the least that keeps that flow
honest: a plain form for the card (no script, so it passes the site's Content-Security-
Policy when the lab serves it through the load balancer), the charge or subscription made
in localstripe with that card, the session completed and its event sent, and a redirect to
success_url with `{CHECKOUT_SESSION_ID}` filled in. A declined card shows the page again
with Stripe's message; 3-D Secure is not simulated here (the embedded card form has it).
The billing portal page only shows the customer and a link back to return_url.
"""

from __future__ import annotations

import html

from stripe_stub_webhooks import new_event

CHECKOUT_SESSION_ID = "{CHECKOUT_SESSION_ID}"

PAY_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Pay · Stripe stand-in</title></head>
<body>
<h1>Stripe stand-in: hosted Checkout</h1>
<p>{mode}: {amount} {currency}</p>
<ul>{items}</ul>
{error}
<form method="post" action="">
  <label>Card number <input name="number" autocomplete="cc-number" required></label>
  <label>Expiry month <input name="exp_month" value="12" required></label>
  <label>Expiry year <input name="exp_year" value="2034" required></label>
  <label>CVC <input name="cvc" value="123" required></label>
  <button type="submit">Pay</button>
</form>
<p><a href="{cancel_url}">Back to the shop</a></p>
</body></html>
"""

PORTAL_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Billing portal · Stripe stand-in</title></head>
<body>
<h1>Stripe stand-in: billing portal</h1>
<p>Customer {customer}</p>
<p><a href="{return_url}">Return to the shop</a></p>
</body></html>
"""


class CardDeclined(Exception):
    pass


def pay_page(session: dict, error: str | None = None) -> str:
    items = "".join(
        f"<li>{item['quantity']} × {html.escape(item['price']['id'])}: {item['amount_total']}</li>"
        for item in session["_line_items"])
    return PAY_PAGE.format(
        mode=html.escape(session["mode"]), amount=session["amount_total"],
        currency=html.escape(session["currency"] or ""), items=items,
        error=f'<p role="alert">{html.escape(error)}</p>' if error else "",
        cancel_url=html.escape(session.get("cancel_url") or "", quote=True))


def portal_page(portal: dict) -> str:
    return PORTAL_PAGE.format(customer=html.escape(portal["customer"]),
                              return_url=html.escape(portal.get("return_url") or "", quote=True))


async def complete_checkout(stub, request, session: dict, form: dict) -> str:
    """Charge the card or start the subscription; returns the URL to send the buyer to."""
    card = {k: str(form.get(k, "")).replace(" ", "") for k in ("number", "exp_month", "exp_year", "cvc")}
    method = await stub.upstream_post(request, "/v1/payment_methods", {"type": "card", "card": card})
    if session["mode"] == "payment":
        await _charge(stub, request, session, method["id"])
    elif session["mode"] == "subscription":
        await _subscribe(stub, request, session, method["id"])
    session.update(status="complete", payment_status="paid", url=None)
    stub.store.put("checkout_sessions", session)
    stub.webhooks.send(new_event("checkout.session.completed", stub.public(session)))
    return session["success_url"].replace(CHECKOUT_SESSION_ID, session["id"])


async def _charge(stub, request, session: dict, payment_method: str) -> None:
    metadata = (session.get("_payment_intent_data") or {}).get("metadata") or {}
    intent = await stub.upstream_post(request, "/v1/payment_intents", {
        "amount": session["amount_total"], "currency": session["currency"],
        "customer": session.get("customer"), "metadata": metadata,
        "payment_method": payment_method})
    confirmed = await stub.upstream_post(request, f"/v1/payment_intents/{intent['id']}/confirm", {})
    if confirmed["status"] != "succeeded":
        raise CardDeclined(f"The payment is {confirmed['status']}.")
    session["payment_intent"] = intent["id"]


async def _subscribe(stub, request, session: dict, payment_method: str) -> None:
    customer = session.get("customer")
    if not customer:
        raise CardDeclined("A subscription needs a customer.")
    await stub.upstream_post(request, f"/v1/payment_methods/{payment_method}/attach", {"customer": customer})
    await stub.upstream_post(request, f"/v1/customers/{customer}",
                             {"invoice_settings": {"default_payment_method": payment_method}})
    items = []
    for item in session["_line_items"]:
        # localstripe subscribes to plans, not prices: a plan with the price's id and terms.
        await stub.ensure_plan(request, item["price"])
        items.append({"plan": item["price"]["id"], "quantity": item["quantity"]})
    metadata = (session.get("_subscription_data") or {}).get("metadata") or {}
    subscription = await stub.upstream_post(request, "/v1/subscriptions",
                                            {"customer": customer, "items": items, "metadata": metadata})
    if subscription["status"] not in ("active", "trialing"):
        raise CardDeclined(f"The subscription is {subscription['status']}.")
    session["subscription"] = subscription["id"]
