"""CSRF protection for the HTML form posts (sign-in, sign-up, sign-out, ...).

Signed double submit: a random value lives in an HttpOnly cookie and the form carries
HMAC(SESSION_SECRET, value + session id). A cross-site page can neither read the cookie
nor compute the HMAC, and binding the session id makes a token die with its session.
The JSON API needs no token: each POST made with the session, bodyless ones too, requires
Content-Type application/json (http.require_json_content_type), which a cross-site form
cannot send, and the SameSite=Lax session cookie is not sent on cross-site POSTs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

from payments.accounts.sessions import session_id_from
from payments.errors import ApiError

COOKIE_NAME = "csrf"
FORM_FIELD = "csrf_token"


def _sign(secret: str, cookie_value: str, session_id: str | None) -> str:
    message = f"{cookie_value}|{session_id or ''}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def issue_token(request: Request) -> tuple[str, str | None]:
    """(token for the form, new cookie value to set or None when the cookie exists)."""
    existing = request.cookies.get(COOKIE_NAME)
    cookie_value = existing if existing and len(existing) <= 64 else secrets.token_urlsafe(32)
    token = _sign(request.app.state.settings.session_secret, cookie_value, session_id_from(request))
    return token, None if cookie_value == existing else cookie_value


def set_csrf_cookie(response: Response, cookie_value: str | None, *, secure: bool) -> None:
    if cookie_value:
        response.set_cookie(COOKIE_NAME, cookie_value, httponly=True, secure=secure, samesite="lax", path="/")


def verify(request: Request, submitted) -> None:
    """403 unless `submitted` is the token issued for this browser and session."""
    cookie_value = request.cookies.get(COOKIE_NAME)
    if not cookie_value or not isinstance(submitted, str) or not submitted:
        raise ApiError(403, "csrf_failed", "The form has expired or did not come from this site; reload it.")
    expected = _sign(request.app.state.settings.session_secret, cookie_value, session_id_from(request))
    if not hmac.compare_digest(expected, submitted):
        raise ApiError(403, "csrf_failed", "The form has expired or did not come from this site; reload it.")
