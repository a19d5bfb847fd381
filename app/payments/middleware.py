"""Pure ASGI middleware wired by `create_app`.

RequestContextMiddleware (outermost) gives each request an id, stamps X-App-Version
and X-Request-ID on every response, turns an unhandled exception into a JSON 500,
records the request metrics and writes one access-log line. BodyLimitMiddleware stops
reading a request body past 1 MiB.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payments import metrics
from payments.errors import ApiError, error_response

log = structlog.get_logger("payments.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
# Probes and scrapes arrive every few seconds; keep them out of the info-level log.
_QUIET_ROUTES = frozenset({"/livez", "/readyz", "/metrics"})
UNMATCHED_ROUTE = "<unmatched>"


def route_template(scope: Scope) -> str:
    """The matched route's path template (`/products/{slug}`), never the raw path:
    raw paths would give the metrics one label value per product or typo."""
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED_ROUTE


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, version: str) -> None:
        self.app = app
        self.version = version

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        incoming = Headers(scope=scope).get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        response_started = False
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-App-Version"] = self.version
                headers["X-Request-ID"] = request_id
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_headers)
            except Exception:
                log.exception("unhandled_error", method=scope["method"], path=scope["path"])
                if response_started:
                    raise
                response = error_response(500, "internal_error", "Something went wrong on our side.")
                await response(scope, receive, send_with_headers)
            finally:
                duration = time.perf_counter() - started
                route = route_template(scope)
                labels = {"method": scope["method"], "route": route, "status": str(status)}
                metrics.HTTP_REQUEST_DURATION_SECONDS.labels(**labels).observe(duration)
                metrics.HTTP_REQUESTS_TOTAL.labels(**labels).inc()
                emit = log.debug if route in _QUIET_ROUTES and status < 400 else log.info
                emit(
                    "request",
                    method=scope["method"],
                    route=route,
                    path=scope["path"],
                    status=status,
                    duration_ms=round(duration * 1000, 2),
                )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await error_response(400, "bad_request", "Content-Length is not a number.")(scope, receive, send)
                return
            if int(declared) > self.max_bytes:
                # Refuse before reading a byte of it.
                await error_response(413, "body_too_large", "The request body is larger than 1 MiB.")(
                    scope, receive, send)
                return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the endpoint's body read; the ApiError handler answers 413.
                    raise ApiError(413, "body_too_large", "The request body is larger than 1 MiB.")
            return message

        await self.app(scope, limited_receive, send)
