"""A full Redis: sessions and sign-in counters share it with the catalog cache, under
`noeviction` as in production (roles/redis). Free-text search results are not cached, so
distinct queries cannot fill it; when it is full anyway, Redis's refusal is a 503 with a
clear error, never a 500.

The test Redis is the session's server: each test sets its memory limit and policy with
CONFIG SET and puts the old values back afterwards.
"""

from __future__ import annotations

import pytest

from payments.catalog import store
from tests.app.payments_support import sign_in  # noqa: F401  (fixture)

PASSWORD = "correct horse battery"


@pytest.fixture
async def redis_limit(app):
    """`await set_limit(extra_bytes)`: maxmemory = used memory + extra_bytes, noeviction."""
    redis = app.state.redis
    saved = {**await redis.config_get("maxmemory"), **await redis.config_get("maxmemory-policy")}

    async def set_limit(extra_bytes: int) -> int:
        used = (await redis.info("memory"))["used_memory"]
        await redis.config_set("maxmemory-policy", "noeviction")
        await redis.config_set("maxmemory", used + extra_bytes)
        return used + extra_bytes

    yield set_limit
    for name, value in saved.items():
        await redis.config_set(name, value)


async def seed_products(app, n: int = 20) -> None:
    async with app.state.db.connection() as conn:
        for i in range(n):
            await store.upsert_product(conn, {
                "id": f"prod_mug_{i}", "name": f"Ceramic Mug {i}", "active": True, "images": [], "metadata": {},
                "updated": 1_700_000_000, "description": "A ceramic mug for coffee and tea, " + "glazed " * 40})


async def test_many_distinct_searches_leave_redis_alone_and_sign_in_works(app, client, redis_limit):
    await seed_products(app)
    await client.post("/api/auth/sign-up", json={"email": "ada@example.com", "password": PASSWORD})
    await client.post("/api/auth/sign-out", json={})
    # Each query matches every mug (about 8 KB of JSON): cached, 2,000 of them would need 16 MB.
    await redis_limit(1024 * 1024)
    keys_before = await app.state.redis.dbsize()

    for n in range(2000):
        response = await client.get("/api/products", params={"q": f"mug -x{n}"})
        assert response.status_code == 200 and len(response.json()["products"]) == 20

    assert await app.state.redis.dbsize() == keys_before
    signed_in = await client.post("/api/auth/sign-in", json={"email": "ada@example.com", "password": PASSWORD})
    assert signed_in.status_code == 200, signed_in.text
    assert (await client.get("/api/me")).status_code == 200


async def test_a_full_redis_makes_sign_in_a_503_with_a_clear_error(app, client, redis_limit):
    await seed_products(app, 2)
    await client.post("/api/auth/sign-up", json={"email": "ada@example.com", "password": PASSWORD})
    await client.post("/api/auth/sign-out", json={})
    await redis_limit(-1024 * 1024)  # below what it holds: every write is refused (OOM)
    refused = await client.post("/api/auth/sign-in", json={"email": "ada@example.com", "password": PASSWORD})
    sign_up = await client.post("/api/auth/sign-up", json={"email": "bob@example.com", "password": PASSWORD})
    catalog = await client.get("/api/products")

    assert refused.status_code == 503
    assert refused.json() == {"error": {"code": "session_store_unavailable",
                                        "message": "The session store is full and refuses new data; try again shortly."}}
    assert refused.headers["retry-after"] == "5"
    assert (sign_up.status_code, sign_up.json()["error"]["code"]) == (503, "session_store_unavailable")
    # The catalog only loses its cache: PostgreSQL answers.
    assert catalog.status_code == 200 and len(catalog.json()["products"]) == 2


async def test_any_redis_refusal_on_the_session_path_is_a_503(app, sign_in, monkeypatch):
    import redis.exceptions

    user, client = await sign_in()

    async def refused(*args, **kwargs):
        raise redis.exceptions.ReadOnlyError("You can't write against a read only replica.")

    monkeypatch.setattr(app.state.redis, "getex", refused)

    response = await client.get("/api/me")

    assert response.status_code == 503
    assert response.json()["error"] == {"code": "session_store_unavailable",
                                         "message": "The session store refused the request; try again shortly."}
