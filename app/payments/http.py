"""Request helpers shared by every route module."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from starlette.requests import Request

from payments.errors import ApiError

MAX_BODY_BYTES = 1024 * 1024  # 1 MiB, enforced for every request by BodyLimitMiddleware


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; no client of ours should send them.
    raise ValueError(f"{name} is not valid JSON")


def require_json_content_type(request: Request) -> None:
    """415 unless the request says application/json, also for a POST without a body
    (send none, or `{}`). A cross-site HTML form cannot send this type, and a cross-site
    fetch() must first pass a CORS preflight that nothing here allows: this is what keeps
    the JSON API out of CSRF's reach (accounts/csrf.py)."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")


async def read_json(request: Request, *, require_object: bool = True) -> Any:
    """The request body as JSON: 415 unless application/json, 413 over 1 MiB, 400 if malformed."""
    require_json_content_type(request)
    body = await request.body()  # BodyLimitMiddleware stops reading past MAX_BODY_BYTES
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, "body_too_large", "The request body is larger than 1 MiB.")
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "invalid_json", "The request body is not well-formed JSON.") from None
    if require_object and not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "The request body must be a JSON object.")
    return data


def client_ip(request: Request) -> str | None:
    """The client's address, trusting X-Forwarded-For only as far as the configured proxies."""
    hops = request.app.state.settings.trusted_proxy_hops
    peer = request.client.host if request.client else None
    if hops > 0:
        forwarded = [part.strip() for part in request.headers.get("x-forwarded-for", "").split(",") if part.strip()]
        # Each trusted proxy appends the address it saw; the client is `hops` from the end.
        if len(forwarded) >= hops:
            peer = forwarded[-hops]
    try:
        return str(ipaddress.ip_address(peer)) if peer else None
    except ValueError:
        return None


def public_url(request: Request, path: str) -> str:
    """An absolute URL on the site for `path` (starting with "/"): PUBLIC_BASE_URL + path.

    Only in dev, where PUBLIC_BASE_URL may be unset, does the request's own base URL stand
    in; behind a proxy that base is wrong (hypercorn sees http:// and the inner host), and
    the Host header is the client's to choose, so production never uses it."""
    base = request.app.state.settings.public_base_url
    if base is None:
        base = str(request.base_url).rstrip("/")
    return base + path
