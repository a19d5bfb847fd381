"""POST /api/webhooks/stripe: Stripe's event deliveries.

400 for anything not signed by Stripe within 300 s (counted in
`stripe_webhook_events_total{outcome="bad_signature"}`, and recorded as a security event
when PostgreSQL is up: one audit row per source address per minute, with the count, so a
flood cannot fill the table; nothing else stored); 200 for a processed, duplicate or unhandled event; 500 when a
handler fails, so Stripe delivers it again later.
"""

from __future__ import annotations

import orjson
import psycopg
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from payments import audit
from payments.errors import error_response
from payments.http import client_ip
from payments.metrics import STRIPE_WEBHOOK_EVENTS_TOTAL
from payments.webhooks.processor import DUPLICATE, IGNORED, PROCESSED, HandlerFailed, process_event
from payments.webhooks.signature import InvalidWebhook, verify_event

log = structlog.get_logger("payments.webhooks")

# The type label of a delivery we could not verify: its claimed type is not trusted.
UNVERIFIED_TYPE = "unverified"
# Bad signatures from one address share an audit row this long (its details.count).
BAD_SIGNATURE_AUDIT_WINDOW_SECONDS = 60

# Stripe sends many events a second: the answers are encoded once, the metric children
# looked up once per (type, outcome). Only verified types reach the cache, a set Stripe
# bounds.
_ANSWERS = {outcome: orjson.dumps({"received": True, "outcome": outcome})
            for outcome in (PROCESSED, DUPLICATE, IGNORED)}
_event_counters: dict[tuple[str, str], object] = {}


def _count(event_type: str, outcome: str) -> None:
    counter = _event_counters.get((event_type, outcome))
    if counter is None:
        counter = _event_counters[(event_type, outcome)] = STRIPE_WEBHOOK_EVENTS_TOTAL.labels(
            type=event_type, outcome=outcome)
    counter.inc()


async def _audit_bad_signature(request: Request, reason: str) -> None:
    # Best effort: the sender gets its 400 even when PostgreSQL is down (a 5xx would
    # invite retries of a delivery that can never be accepted).
    try:
        async with request.app.state.db.connection() as conn:
            await audit.record_counted(conn, action="security.webhook_bad_signature", ip=client_ip(request),
                                       details={"reason": reason[:300]}, window_seconds=BAD_SIGNATURE_AUDIT_WINDOW_SECONDS)
    except psycopg.Error as exc:  # the pool's timeout is one too
        log.warning("webhook_bad_signature_not_audited", error=f"{type(exc).__name__}: {exc}")


async def stripe_webhook(request: Request) -> Response:
    state = request.app.state
    payload = await request.body()  # BodyLimitMiddleware caps it at 1 MiB
    try:
        event = verify_event(payload, request.headers.get("stripe-signature"), state.settings.stripe_webhook_secret)
    except InvalidWebhook as exc:
        _count(UNVERIFIED_TYPE, "bad_signature")
        log.warning("webhook_rejected", reason=str(exc))
        await _audit_bad_signature(request, str(exc))
        return error_response(400, "invalid_signature", "The webhook signature could not be verified.")

    try:
        outcome = await process_event(state.db, event, redis=state.redis, stripe=state.stripe,
                                      claims=state.webhook_claims)
    except HandlerFailed:
        _count(event["type"], "error")
        return error_response(500, "webhook_handler_failed", "The event could not be processed; it will be retried.")
    _count(event["type"], outcome)
    return Response(_ANSWERS[outcome], media_type="application/json")


routes = [Route("/api/webhooks/stripe", stripe_webhook, methods=["POST"])]
