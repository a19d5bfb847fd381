"""POST /api/admin/orders/{id}/refund: an administrator refunds a paid order in full.

The order becomes "refunded" when Stripe's charge.refunded webhook arrives; this
endpoint only asks Stripe. One refund per order however often it is called: a second
call reports the stored refund, and concurrent calls share an idempotency key derived
from the order id.
"""

from __future__ import annotations

import stripe
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from payments import audit
from payments.accounts.sessions import require_admin
from payments.errors import ApiError
from payments.http import client_ip, require_json_content_type
from payments.orders import service, stripe_calls


async def refund_order(request: Request) -> JSONResponse:
    require_json_content_type(request)  # no body; the type keeps cross-site forms out
    admin = await require_admin(request)
    state = request.app.state
    async with state.db.connection() as conn:
        order = await service.get_order(conn, request.path_params["order_id"])
    if order is None:
        raise ApiError(404, "order_not_found", "No such order.")
    if order["status"] not in ("paid", "refunded"):
        raise ApiError(409, "order_not_paid", f"Only paid orders can be refunded; this one is {order['status']}.")
    if not order["stripe_payment_intent_id"]:
        raise ApiError(409, "order_not_refundable", "This order has no payment at Stripe to refund.")

    try:
        if order["stripe_refund_id"]:
            # Asked before: report that refund instead of asking Stripe for another.
            refund = await state.stripe.v1.refunds.retrieve_async(order["stripe_refund_id"])
        else:
            refund = await stripe_calls.create_refund(state.stripe, order=order)
    except stripe.StripeError as exc:
        raise stripe_calls.stripe_unavailable(exc) from None

    if not order["stripe_refund_id"]:
        async with state.db.connection() as conn:
            await service.record_refund_requested(conn, order["id"], refund["id"])
            await audit.record(conn, action="admin.refund_requested", user_id=admin["id"], ip=client_ip(request),
                               details={"order_id": str(order["id"]), "refund_id": refund["id"],
                                        "amount": refund["amount"], "currency": refund["currency"]})
    return JSONResponse(
        {"order_id": str(order["id"]), "order_status": order["status"], "refund_id": refund["id"],
         "refund_status": refund["status"], "amount": refund["amount"], "currency": refund["currency"]},
        status_code=202,
    )


routes = [Route("/api/admin/orders/{order_id}/refund", refund_order, methods=["POST"])]
