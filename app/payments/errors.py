"""One error shape for every failure a client sees: {"error": {"code": ..., "message": ...}}.

Route code raises `ApiError`; the handlers registered by `create_app` turn it (and
Starlette's own 404/405, and lost backing services) into that shape.
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
import psycopg_pool
import redis.exceptions
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from payments.db import recheck_pool

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


EXCEPTION_HANDLERS = {
    ApiError: handle_api_error,
    HTTPException: handle_http_exception,
    redis.exceptions.ConnectionError: handle_backend_down,
    redis.exceptions.TimeoutError: handle_backend_down,
    psycopg.OperationalError: handle_backend_down,
    psycopg_pool.PoolTimeout: handle_backend_down,
}
