"""Accounts: sign-up, sign-in, sign-out, argon2 hashes, session cookies in Redis,
CSRF on the HTML forms, rate limits, and the one-Stripe-customer-per-user rule."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from payments.accounts import customers, sessions

PASSWORD = "correct horse battery"


async def sign_up(client, email="ada@example.com", password=PASSWORD):
    return await client.post("/api/auth/sign-up", json={"email": email, "password": password})


async def audit_actions(app) -> list[str]:
    async with app.state.db.connection() as conn:
        rows = await (await conn.execute("SELECT action FROM audit_logs ORDER BY id")).fetchall()
    return [row["action"] for row in rows]


async def test_sign_up_creates_user_and_signs_in(app, client):
    response = await sign_up(client, email="  Ada@Example.COM ")
    assert response.status_code == 201
    assert response.json()["user"]["email"] == "ada@example.com"
    assert "password_hash" not in response.json()["user"]
    me = await client.get("/api/me")
    assert me.status_code == 200 and me.json()["user"]["email"] == "ada@example.com"
    assert "user.signed_up" in await audit_actions(app)


async def test_password_is_stored_as_argon2id_hash(app, client):
    await sign_up(client)
    async with app.state.db.connection() as conn:
        row = await (await conn.execute("SELECT password_hash FROM users")).fetchone()
    assert row["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in row["password_hash"]


async def test_duplicate_email_is_409(client):
    await sign_up(client)
    response = await sign_up(client, email="ADA@example.com")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "email_taken"


async def test_sign_in_with_right_password_and_refusal_with_wrong(app, client):
    await sign_up(client)
    await client.post("/api/auth/sign-out", json={})
    wrong = await client.post("/api/auth/sign-in", json={"email": "ada@example.com", "password": "nope-nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_credentials"
    unknown = await client.post("/api/auth/sign-in", json={"email": "bob@example.com", "password": PASSWORD})
    assert unknown.status_code == 401 and unknown.json() == wrong.json()
    assert (await client.get("/api/me")).status_code == 401
    right = await client.post("/api/auth/sign-in", json={"email": "ada@example.com", "password": PASSWORD})
    assert right.status_code == 200
    assert (await client.get("/api/me")).status_code == 200
    assert (await audit_actions(app)).count("security.sign_in_failed") == 2


async def test_sign_out_ends_the_session_server_side(app, client):
    await sign_up(client)
    session_id = client.cookies.get(sessions.COOKIE_NAME)
    # No body at all is fine, as long as it is declared JSON.
    response = await client.post("/api/auth/sign-out", headers={"Content-Type": "application/json"})
    assert response.status_code == 204
    assert (await client.get("/api/me")).status_code == 401
    # Replaying the old cookie does not work either: the session is gone from Redis.
    client.cookies.set(sessions.COOKIE_NAME, session_id)
    assert (await client.get("/api/me")).status_code == 401


@pytest.mark.parametrize("headers, body", [
    ({"Content-Type": "application/x-www-form-urlencoded"}, b""),
    ({"Content-Type": "text/plain"}, b"{}"),
    ({}, b""),
], ids=["form", "text-plain", "no-content-type"])
async def test_json_sign_out_refuses_what_a_cross_site_form_can_send(client, headers, body):
    await sign_up(client)

    response = await client.post("/api/auth/sign-out", headers=headers, content=body)

    assert (response.status_code, response.json()["error"]["code"]) == (415, "unsupported_media_type")
    assert (await client.get("/api/me")).status_code == 200  # still signed in


async def test_cookie_holds_only_a_random_id_and_redis_holds_the_session(app, client):
    await sign_up(client)
    session_id = client.cookies.get(sessions.COOKIE_NAME)
    assert re.fullmatch(r"[A-Za-z0-9_-]{40,}", session_id)
    assert "ada" not in session_id
    keys = await app.state.redis.keys("session:*")
    assert len(keys) == 1 and session_id not in keys[0]  # stored under a hash of the id
    assert 0 < await app.state.redis.ttl(keys[0]) <= app.state.settings.session_ttl_seconds


async def test_new_sign_in_replaces_the_session_id(client):
    await sign_up(client)
    first = client.cookies.get(sessions.COOKIE_NAME)
    await client.post("/api/auth/sign-in", json={"email": "ada@example.com", "password": PASSWORD})
    second = client.cookies.get(sessions.COOKIE_NAME)
    assert first != second
    client.cookies.set(sessions.COOKIE_NAME, first)
    assert (await client.get("/api/me")).status_code == 401


def set_cookie_header(response, name):
    return next(value for value in response.headers.get_list("set-cookie") if value.startswith(f"{name}="))


async def test_session_cookie_is_httponly_lax_and_secure_in_production(settings, client_for):
    client = await client_for(settings, app_env="production")
    response = await sign_up(client)
    cookie = set_cookie_header(response, sessions.COOKIE_NAME).lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" in cookie and "path=/" in cookie


async def test_session_cookie_is_not_secure_in_dev(client):
    cookie = set_cookie_header(await sign_up(client), sessions.COOKIE_NAME).lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie


async def test_protected_endpoint_without_session_is_401(client):
    response = await client.get("/api/me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


# -- HTML forms and CSRF -----------------------------------------------------------------


def csrf_token_from(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


async def test_sign_up_form_with_csrf_token_signs_in_and_redirects(client):
    page = await client.get("/sign-up")
    assert page.status_code == 200
    token = csrf_token_from(page.text)
    response = await client.post("/sign-up", data={"csrf_token": token, "email": "form@example.com",
                                                   "password": PASSWORD, "next": "/account"})
    assert response.status_code == 303 and response.headers["location"] == "/account"
    account = await client.get("/account")
    assert account.status_code == 200 and "form@example.com" in account.text


async def test_form_post_without_csrf_token_is_refused(app, client):
    await client.get("/sign-up")  # has the CSRF cookie, but sends no token
    response = await client.post("/sign-up", data={"email": "evil@example.com", "password": PASSWORD})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"
    async with app.state.db.connection() as conn:
        assert await (await conn.execute("SELECT count(*) AS n FROM users")).fetchone() == {"n": 0}


async def test_form_post_with_forged_token_is_refused(client):
    await client.get("/sign-in")
    response = await client.post("/sign-in", data={"csrf_token": "0" * 64, "email": "a@example.com",
                                                   "password": PASSWORD})
    assert response.status_code == 403


async def test_token_from_another_browser_is_refused(app, client, client_for, settings):
    other = await client_for(settings)
    foreign_token = csrf_token_from((await other.get("/sign-in")).text)
    await client.get("/sign-in")  # our own CSRF cookie differs from the other browser's
    response = await client.post("/sign-in", data={"csrf_token": foreign_token, "email": "a@example.com",
                                                   "password": PASSWORD})
    assert response.status_code == 403


async def test_sign_in_form_shows_error_for_wrong_password(client):
    await sign_up(client)
    await client.post("/api/auth/sign-out", json={})
    token = csrf_token_from((await client.get("/sign-in")).text)
    response = await client.post("/sign-in", data={"csrf_token": token, "email": "ada@example.com",
                                                   "password": "wrong password"})
    assert response.status_code == 401
    assert "Wrong email or password" in response.text


async def test_sign_in_form_refuses_open_redirect(client):
    await sign_up(client)
    token = csrf_token_from((await client.get("/sign-in")).text)
    response = await client.post("/sign-in", data={"csrf_token": token, "email": "ada@example.com",
                                                   "password": PASSWORD, "next": "//evil.example/"})
    assert response.status_code == 303 and response.headers["location"] == "/account"


async def test_sign_out_form_needs_csrf(client):
    await sign_up(client)
    assert (await client.post("/sign-out", data={})).status_code == 403
    assert (await client.get("/api/me")).status_code == 200
    token = csrf_token_from((await client.get("/")).text)
    assert (await client.post("/sign-out", data={"csrf_token": token})).status_code == 303
    assert (await client.get("/api/me")).status_code == 401


# -- rate limits -------------------------------------------------------------------------


async def test_sign_in_attempts_per_email_are_limited_with_retry_after(app, client):
    limit = app.state.settings.auth_rate_limit_per_email
    for _ in range(limit):
        response = await client.post("/api/auth/sign-in", json={"email": "x@example.com", "password": "guess-123"})
        assert response.status_code == 401
    response = await client.post("/api/auth/sign-in", json={"email": "x@example.com", "password": "guess-123"})
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"
    retry_after = int(response.headers["retry-after"])
    assert 0 < retry_after <= app.state.settings.auth_rate_limit_window_seconds


async def test_sign_up_attempts_per_ip_are_limited(settings, client_for):
    client = await client_for(settings, auth_rate_limit_per_ip=3)
    statuses = [(await sign_up(client, email=f"user{n}@example.com")).status_code for n in range(4)]
    assert statuses == [201, 201, 201, 429]


async def test_forwarded_address_is_used_only_behind_a_trusted_proxy(settings, client_for):
    client = await client_for(settings, auth_rate_limit_per_ip=2, trusted_proxy_hops=1)
    for n in range(2):
        headers = {"X-Forwarded-For": "203.0.113.7"}
        response = await client.post("/api/auth/sign-up", headers=headers,
                                     json={"email": f"p{n}@example.com", "password": PASSWORD})
        assert response.status_code == 201
    # Another client address behind the same proxy has its own budget.
    other = await client.post("/api/auth/sign-up", headers={"X-Forwarded-For": "203.0.113.8"},
                              json={"email": "p9@example.com", "password": PASSWORD})
    assert other.status_code == 201


# -- Stripe customer ---------------------------------------------------------------------


async def test_ensure_stripe_customer_creates_one_customer_and_stores_it(app, client):
    user = (await sign_up(client)).json()["user"]
    async with app.state.db.connection() as conn:
        first = await customers.ensure_stripe_customer(conn, app.state.stripe, {"id": user["id"], "email": user["email"]})
        second = await customers.ensure_stripe_customer(conn, app.state.stripe, {"id": user["id"], "email": user["email"]})
        row = await (await conn.execute("SELECT stripe_customer_id FROM users WHERE id = %s", (user["id"],))).fetchone()
    assert first == second == row["stripe_customer_id"]
    assert first.startswith("cus_")
    customer = await app.state.stripe.v1.customers.retrieve_async(first)
    assert customer.email == "ada@example.com"


async def test_customer_key_is_stable_for_a_user_row_and_new_for_a_recreated_id(app, monkeypatch):
    """The keys are read from the call the app makes: localstripe does not implement
    Idempotency-Key, so this checks what the app sends, not how Stripe deduplicates it.
    A row dropped and inserted again with its id is what a point-in-time restore leads to."""
    stripe_customers = app.state.stripe.v1.customers
    sent = []
    original = stripe_customers.create_async

    async def recording(params, options=None):
        sent.append((params, options["idempotency_key"]))
        return await original(params, options)

    monkeypatch.setattr(stripe_customers, "create_async", recording)

    async def ensure(user_id: int, email: str) -> None:
        async with app.state.db.connection() as conn:
            await customers.ensure_stripe_customer(conn, app.state.stripe, {"id": user_id, "email": email})
            # Forget it, as a timed-out first attempt would: the retry must send the same key.
            await conn.execute("UPDATE users SET stripe_customer_id = NULL WHERE id = %s", (user_id,))

    async with app.state.db.connection() as conn:
        cursor = await conn.execute("INSERT INTO users (email, password_hash) VALUES ('old@example.com', 'x')"
                                    " RETURNING id, created_at")
        old = await cursor.fetchone()
    await ensure(old["id"], "old@example.com")
    await ensure(old["id"], "old@example.com")
    async with app.state.db.connection() as conn:
        await conn.execute("DELETE FROM users WHERE id = %s", (old["id"],))
        await conn.execute("INSERT INTO users (id, email, password_hash, created_at) OVERRIDING SYSTEM VALUE"
                           " VALUES (%s, 'new@example.com', 'x', %s)",
                           (old["id"], old["created_at"] + timedelta(hours=1)))
    await ensure(old["id"], "new@example.com")

    (first_params, first_key), (_, retry_key), (new_params, new_key) = sent
    assert first_key == retry_key != new_key
    assert first_params["metadata"] == new_params["metadata"] == {"user_id": str(old["id"])}
    assert new_params["email"] == "new@example.com"


@pytest.mark.parametrize("is_admin", [True, False])
async def test_require_admin_lets_only_admins_through(app, client, is_admin):
    from starlette.requests import Request

    from payments.errors import ApiError

    await sign_up(client)
    async with app.state.db.connection() as conn:
        await conn.execute("UPDATE users SET is_admin = %s", (is_admin,))
    cookie = f"{sessions.COOKIE_NAME}={client.cookies.get(sessions.COOKIE_NAME)}".encode()
    request = Request({"type": "http", "app": app, "headers": [(b"cookie", cookie)]})
    if is_admin:
        assert (await sessions.require_admin(request))["is_admin"] is True
    else:
        with pytest.raises(ApiError) as excinfo:
            await sessions.require_admin(request)
        assert excinfo.value.status_code == 403
