"""GET /api/subscriptions and POST /api/billing-portal (Stripe's hosted portal, where the
customer changes card, plan or cancels; the changes come back as webhooks)."""

from __future__ import annotations

import uuid

import stripe
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from payments.accounts.sessions import require_user
from payments.errors import ApiError
from payments.http import public_url, require_json_content_type
from payments.orders.stripe_calls import idempotency_options, stripe_unavailable
from payments.subscriptions import service


async def list_subscriptions(request: Request) -> JSONResponse:
    user = await require_user(request)
    async with request.app.state.db.connection() as conn:
        rows = await service.list_for_customer(conn, user.get("stripe_customer_id"))
    return JSONResponse({"subscriptions": [service.subscription_json(row) for row in rows]})


async def create_billing_portal_session(request: Request) -> JSONResponse:
    require_json_content_type(request)  # no body; the type keeps cross-site forms out
    user = await require_user(request)
    customer_id = user.get("stripe_customer_id")
    if not customer_id:
        # Without a customer there is nothing to manage; do not create one just for this.
        raise ApiError(409, "no_billing_account", "You have no subscription or payment to manage yet.")
    params = {"customer": customer_id, "return_url": public_url(request, "/account")}
    # A portal session is short-lived and owned by no record of ours: one key per
    # request, so the library's own retries of this POST stay idempotent.
    options = idempotency_options("user", user["id"], f"billing-portal-{uuid.uuid4().hex}")
    try:
        portal = await request.app.state.stripe.v1.billing_portal.sessions.create_async(params, options)
    except stripe.StripeError as exc:
        raise stripe_unavailable(exc) from None
    return JSONResponse({"url": portal["url"]}, status_code=201)


routes = [
    Route("/api/subscriptions", list_subscriptions, methods=["GET"]),
    Route("/api/billing-portal", create_billing_portal_session, methods=["POST"]),
]
