"""POST /api/webhooks/stripe: Stripe's event deliveries.

400 for anything not signed by Stripe within 300 s (recorded as a security event,
nothing else stored); 200 for a processed, duplicate or unhandled event; 500 when a
handler fails, so Stripe delivers it again later.
"""

from __future__ import annotations

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from payments import audit
from payments.errors import error_response
from payments.http import client_ip
from payments.metrics import STRIPE_WEBHOOK_EVENTS_TOTAL
from payments.webhooks.processor import HandlerFailed, process_event
from payments.webhooks.signature import InvalidWebhook, verify_event

log = structlog.get_logger("payments.webhooks")

# The type label of a delivery we could not verify: its claimed type is not trusted.
UNVERIFIED_TYPE = "unverified"


async def stripe_webhook(request: Request) -> JSONResponse:
    state = request.app.state
    payload = await request.body()  # BodyLimitMiddleware caps it at 1 MiB
    try:
        event = verify_event(payload, request.headers.get("stripe-signature"), state.settings.stripe_webhook_secret)
    except InvalidWebhook as exc:
        STRIPE_WEBHOOK_EVENTS_TOTAL.labels(type=UNVERIFIED_TYPE, outcome="bad_signature").inc()
        log.warning("webhook_rejected", reason=str(exc))
        async with state.db.connection() as conn:
            await audit.record(conn, action="security.webhook_bad_signature", ip=client_ip(request),
                               details={"reason": str(exc)[:300]})
        return error_response(400, "invalid_signature", "The webhook signature could not be verified.")

    try:
        outcome = await process_event(state.db, event, redis=state.redis, stripe=state.stripe)
    except HandlerFailed:
        STRIPE_WEBHOOK_EVENTS_TOTAL.labels(type=event["type"], outcome="error").inc()
        return error_response(500, "webhook_handler_failed", "The event could not be processed; it will be retried.")
    STRIPE_WEBHOOK_EVENTS_TOTAL.labels(type=event["type"], outcome=outcome).inc()
    return JSONResponse({"received": True, "outcome": outcome})


routes = [Route("/api/webhooks/stripe", stripe_webhook, methods=["POST"])]
