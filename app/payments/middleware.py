"""Pure ASGI middleware wired by `create_app`.

RequestContextMiddleware (outermost) gives each request an id, stamps X-App-Version
and X-Request-ID on every response, turns an unhandled exception into a JSON 500,
records the request metrics and writes one access-log line. BodyLimitMiddleware stops
reading a request body past 1 MiB.

Both run on every request, so they read raw header lists rather than building header
objects, and RequestContextMiddleware keeps its logger and metric children instead of
looking them up per request.
"""

from __future__ import annotations

import os
import re
import time

import structlog
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


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:  # ASGI servers lower-case header names
            return value.decode("latin-1")
    return None


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, version: str) -> None:
        self.app = app
        self.version_header = (b"x-app-version", version.encode("latin-1"))
        # Built after create_app configured logging, so it filters at the configured level.
        self.log = log.bind()
        # (method, route, status) -> (duration histogram, request counter): labels() per
        # request costs more than the observation itself.
        self._metric_children: dict[tuple[str, str, int], tuple] = {}

    def _record(self, method: str, route: str, status: int, duration: float) -> None:
        children = self._metric_children.get((method, route, status))
        if children is None:
            labels = {"method": method, "route": route, "status": str(status)}
            children = (metrics.HTTP_REQUEST_DURATION_SECONDS.labels(**labels),
                        metrics.HTTP_REQUESTS_TOTAL.labels(**labels))
            self._metric_children[(method, route, status)] = children
        children[0].observe(duration)
        children[1].inc()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else os.urandom(16).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        response_started = False
        started = time.perf_counter()
        extra_headers = (self.version_header, (b"x-request-id", request_id.encode()))

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra_headers]
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            self.log.exception("unhandled_error", method=scope["method"], path=scope["path"])
            if response_started:
                raise
            response = error_response(500, "internal_error", "Something went wrong on our side.")
            await response(scope, receive, send_with_headers)
        finally:
            duration = time.perf_counter() - started
            route = route_template(scope)
            self._record(scope["method"], route, status, duration)
            emit = self.log.debug if route in _QUIET_ROUTES and status < 400 else self.log.info
            emit(
                "request",
                method=scope["method"],
                route=route,
                path=scope["path"],
                status=status,
                duration_ms=round(duration * 1000, 2),
            )
            structlog.contextvars.reset_contextvars(**tokens)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        declared = _header(scope, b"content-length")
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
