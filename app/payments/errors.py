"""One error shape for every failure a client sees: {"error": {"code": ..., "message": ...}}.

Route code raises `ApiError`; the handlers registered by `create_app` turn it (and
Starlette's own 404/405, lost backing services, and a Redis that refuses writes) into that
shape: a backing service that fails is a 503 with Retry-After, never a 500.
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
import psycopg_pool
import redis.exceptions
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from payments.db import recheck_pool

log = structlog.get_logger("payments.errors")

# Codes for Starlette's own HTTP errors (unknown route, wrong method, ...).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


class ApiError(Exception):
    """An error the client can act on; `code` is stable, `message` is for people."""

    def __init__(self, status_code: int, code: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def error_response(status_code: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse(error_body(code, message), status_code=status_code, headers=dict(headers or {}))


def _wants_html(request: Request) -> bool:
    # Pages get an HTML error page; the API (and anything not asking for HTML) gets JSON.
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


def _respond(request: Request, status_code: int, code: str, message: str,
             headers: Mapping[str, str] | None) -> Response:
    templates = getattr(request.app.state, "templates", None)
    if templates is not None and _wants_html(request):
        return templates.TemplateResponse(request, "error.html", {"status_code": status_code, "code": code,
                                          "message": message}, status_code=status_code, headers=dict(headers or {}))
    return error_response(status_code, code, message, headers)


async def handle_api_error(request: Request, exc: ApiError) -> Response:
    return _respond(request, exc.status_code, exc.code, exc.message, exc.headers)


async def handle_http_exception(request: Request, exc: HTTPException) -> Response:
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return _respond(request, exc.status_code, code, str(exc.detail), exc.headers)


async def handle_backend_down(request: Request, exc: Exception) -> Response:
    # PostgreSQL or Redis is unreachable: the request may succeed later, so 503 not 500.
    if isinstance(exc, psycopg.OperationalError) and getattr(request.app.state, "db", None) is not None:
        recheck_pool(request.app.state.db)
    return error_response(503, "service_unavailable", "A backing service is unavailable, try again shortly.",
                          {"Retry-After": "5"})


async def handle_redis_refused(request: Request, exc: redis.exceptions.RedisError) -> Response:
    # Redis answers but refuses the command: under `noeviction` a full Redis refuses every
    # write (OOM), so sessions and rate-limit counters cannot be written. The request may
    # succeed once memory is freed: 503, and an error in the log for whoever runs Redis.
    log.error("redis_refused", error=f"{type(exc).__name__}: {str(exc)[:200]}", path=request.url.path)
    if isinstance(exc, redis.exceptions.OutOfMemoryError) or str(exc).startswith("OOM"):
        message = "The session store is full and refuses new data; try again shortly."
    else:
        message = "The session store refused the request; try again shortly."
    return error_response(503, "session_store_unavailable", message, {"Retry-After": "5"})


EXCEPTION_HANDLERS = {
    ApiError: handle_api_error,
    HTTPException: handle_http_exception,
    redis.exceptions.ConnectionError: handle_backend_down,
    redis.exceptions.TimeoutError: handle_backend_down,
    # Any other Redis error (OOM, a read-only replica, an aborted transaction): its MRO
    # reaches RedisError after the two above.
    redis.exceptions.RedisError: handle_redis_refused,
    psycopg.OperationalError: handle_backend_down,
    psycopg_pool.PoolTimeout: handle_backend_down,
}
