"""Starting a payment: hosted Checkout Sessions, PaymentIntents for the embedded card
form, and the page with that form (/checkout/{slug}).

Neither the redirect back from Checkout nor the browser's confirmCardPayment marks an
order paid: only a verified webhook does (routes/webhooks.py).
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from payments.accounts.sessions import current_user, require_user
from payments.errors import ApiError
from payments.http import public_url, read_json
from payments.idempotency import Claim, run_idempotent
from payments.orders import service, stripe_calls
from payments.orders.placement import StripeObjectCalls, place_order
from payments.routes.catalog import load_product
from payments.routes.pages import render


async def create_checkout_session(request: Request) -> Response:
    """POST {"mode": "payment"|"subscription", "items": [{"price_id", "quantity"}]}."""
    user = await require_user(request)
    body = await read_json(request)
    mode = service.parse_mode(body.get("mode"))
    lines = service.parse_line_items(body)
    state = request.app.state
    calls = StripeObjectCalls(
        create=lambda order, customer_id: stripe_calls.create_checkout_session(
            state.stripe, order=order, customer_id=customer_id,
            success_url=public_url(request, "/success?session_id={CHECKOUT_SESSION_ID}"),
            cancel_url=public_url(request, "/cancel")),
        retrieve=lambda session_id: stripe_calls.retrieve_checkout_session(state.stripe, session_id))

    async def handler(claim: Claim | None) -> tuple[int, dict]:
        order, session = await place_order(state, user=user, mode=mode, flow="checkout_session",
                                           lines=lines, stripe_object=calls, claim=claim)
        return 201, {"order_id": str(order["id"]), "status": order["status"],
                     "checkout_session_id": session["id"], "url": session["url"]}

    return await run_idempotent(request, user_id=user["id"], body=body, handler=handler)


async def create_payment_intent(request: Request) -> Response:
    """POST {"items": [{"price_id", "quantity"}]}: one-time prices only."""
    user = await require_user(request)
    body = await read_json(request)
    lines = service.parse_line_items(body)
    state = request.app.state
    calls = StripeObjectCalls(
        create=lambda order, customer_id: stripe_calls.create_payment_intent(
            state.stripe, order=order, customer_id=customer_id),
        retrieve=lambda intent_id: stripe_calls.retrieve_payment_intent(state.stripe, intent_id))

    async def handler(claim: Claim | None) -> tuple[int, dict]:
        order, intent = await place_order(state, user=user, mode="payment", flow="payment_intent",
                                          lines=lines, stripe_object=calls, claim=claim)
        return 201, {"order_id": str(order["id"]), "status": order["status"],
                     "payment_intent_id": intent["id"], "client_secret": intent["client_secret"],
                     "amount": order["amount_total"], "currency": order["currency"]}

    return await run_idempotent(request, user_id=user["id"], body=body, handler=handler)


async def checkout_page(request: Request) -> Response:
    """The embedded card form for a one-time price, or a Subscribe button that goes to
    hosted Checkout for a recurring one (`?price=` picks the price)."""
    slug = request.path_params["slug"]
    product, _ = await load_product(request, slug) if len(slug) <= 100 else (None, False)
    if product is None or not product["prices"]:
        raise ApiError(404, "product_not_found", "No such product.")
    wanted = request.query_params.get("price")
    price = next((p for p in product["prices"] if p["id"] == wanted), product["prices"][0])
    if await current_user(request) is None:
        here = f"/checkout/{slug}?price={price['id']}"
        return RedirectResponse(f"/sign-in?next={quote(here, safe='')}", status_code=303)
    return await render(request, "checkout.html", {"product": product, "price": price})


routes = [
    Route("/api/checkout/sessions", create_checkout_session, methods=["POST"]),
    Route("/api/payment-intents", create_payment_intent, methods=["POST"]),
    Route("/checkout/{slug}", checkout_page, methods=["GET"]),
]
