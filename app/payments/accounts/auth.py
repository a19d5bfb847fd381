"""Sign-up, sign-in and sign-out as plain steps shared by the JSON API and the forms."""

from __future__ import annotations

from starlette.requests import Request

from payments import audit
from payments.accounts import sessions, users
from payments.accounts.ratelimit import enforce_auth_limits
from payments.errors import ApiError
from payments.http import client_ip


async def _start_session(request: Request, user: dict) -> str:
    state = request.app.state
    # A fresh id at every sign-in: an id planted before sign-in never becomes valid.
    old = sessions.session_id_from(request)
    if old:
        await sessions.destroy_session(state.redis, old)
    return await sessions.create_session(state.redis, user["id"], state.settings.session_ttl_seconds)


async def sign_up(request: Request, email, password) -> tuple[dict, str]:
    """(user, session id) for a new account."""
    email = users.normalize_email(email)
    users.check_new_password(password)
    await enforce_auth_limits(request, "sign-up", email)
    async with request.app.state.db.connection() as conn:
        user = await users.create_user(conn, email, password)
        await audit.record(conn, action="user.signed_up", user_id=user["id"], ip=client_ip(request))
    return user, await _start_session(request, user)


async def sign_in(request: Request, email, password) -> tuple[dict, str]:
    """(user, session id); 401 for a wrong email or password, without saying which."""
    email = users.normalize_email(email)
    if not isinstance(password, str) or len(password) > users.MAX_PASSWORD_LENGTH:
        raise ApiError(422, "invalid_password", "Password must be a string of at most 1024 characters.")
    await enforce_auth_limits(request, "sign-in", email)
    ip = client_ip(request)
    async with request.app.state.db.connection() as conn:
        user = await users.authenticate(conn, email, password)
        if user is None:
            await audit.record(conn, action="security.sign_in_failed", ip=ip, details={"email": email})
        else:
            await audit.record(conn, action="user.signed_in", user_id=user["id"], ip=ip)
    # Raised after the block so the audit row above is committed, not rolled back.
    if user is None:
        raise ApiError(401, "invalid_credentials", "Wrong email or password.")
    return user, await _start_session(request, user)


async def sign_out(request: Request) -> None:
    state = request.app.state
    user = await sessions.current_user(request)
    session_id = sessions.session_id_from(request)
    if session_id:
        await sessions.destroy_session(state.redis, session_id)
    if user is not None:
        async with state.db.connection() as conn:
            await audit.record(conn, action="user.signed_out", user_id=user["id"], ip=client_ip(request))
