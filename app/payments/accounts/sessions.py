"""Server-side sessions in Redis; the cookie holds only a random id.

Redis stores the session under a hash of the id, so a copy of Redis holds no usable
cookie. Expiry slides: every authenticated request renews the TTL. The cookie is
HttpOnly, SameSite=Lax (cross-site POSTs arrive without it, which is what protects the
JSON API from CSRF) and Secure outside APP_ENV=dev.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time

from starlette.requests import Request
from starlette.responses import Response

from payments.accounts.users import get_user
from payments.errors import ApiError

COOKIE_NAME = "sid"
_NOT_LOADED = object()


def _key(session_id: str) -> str:
    return "session:" + hashlib.sha256(session_id.encode()).hexdigest()


async def create_session(redis, user_id: int, ttl_seconds: int) -> str:
    session_id = secrets.token_urlsafe(32)
    payload = json.dumps({"user_id": user_id, "created_at": int(time.time())})
    await redis.set(_key(session_id), payload, ex=ttl_seconds)
    return session_id


async def load_session(redis, session_id: str, ttl_seconds: int) -> dict | None:
    raw = await redis.getex(_key(session_id), ex=ttl_seconds)  # read and renew in one step
    return None if raw is None else json.loads(raw)


async def destroy_session(redis, session_id: str) -> None:
    await redis.delete(_key(session_id))


def set_session_cookie(response: Response, session_id: str, *, secure: bool) -> None:
    # No Max-Age: the browser forgets it on close; Redis decides when it expires.
    response.set_cookie(COOKIE_NAME, session_id, httponly=True, secure=secure, samesite="lax", path="/")


def clear_session_cookie(response: Response, *, secure: bool) -> None:
    response.delete_cookie(COOKIE_NAME, httponly=True, secure=secure, samesite="lax", path="/")


def session_id_from(request: Request) -> str | None:
    value = request.cookies.get(COOKIE_NAME)
    # token_urlsafe(32) is 43 characters; anything far off is not ours.
    if not value or len(value) > 64:
        return None
    return value


async def current_user(request: Request) -> dict | None:
    """The signed-in user (a users row without the hash) or None; cached per request."""
    cached = getattr(request.state, "user", _NOT_LOADED)
    if cached is not _NOT_LOADED:
        return cached
    user = None
    session_id = session_id_from(request)
    if session_id:
        state = request.app.state
        session = await load_session(state.redis, session_id, state.settings.session_ttl_seconds)
        if session:
            async with state.db.connection() as conn:
                user = await get_user(conn, session["user_id"])
    request.state.user = user
    return user


async def require_user(request: Request) -> dict:
    user = await current_user(request)
    if user is None:
        raise ApiError(401, "unauthenticated", "Sign in first.")
    return user


async def require_admin(request: Request) -> dict:
    user = await require_user(request)
    if not user["is_admin"]:
        raise ApiError(403, "forbidden", "Only administrators may do this.")
    return user
