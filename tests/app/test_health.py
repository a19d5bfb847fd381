"""Liveness, readiness and the health report, against real PostgreSQL, Redis and Stripe stub."""

from __future__ import annotations

from tests.support.services import free_port


async def test_livez_answers_while_the_process_runs(client):
    response = await client.get("/livez")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_200_when_postgres_and_redis_answer(client):
    response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["redis"]["status"] == "ok"


async def test_api_health_reports_version_uptime_and_each_check(client, settings):
    response = await client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["version"] == settings.app_version
    assert isinstance(body["uptime"], float) and body["uptime"] >= 0
    assert "uptime_seconds" not in body
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "ok", "redis": "ok", "stripe": "ok"}


async def test_redis_down_makes_readyz_503(settings, client_for):
    closed = f"redis://127.0.0.1:{free_port()}/0"
    client = await client_for(settings, redis_url=closed)
    response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["redis"]["status"] == "fail"
    assert body["checks"]["database"]["status"] == "ok"
    health = await client.get("/api/health")
    assert health.status_code == 503
    assert health.json()["status"] == "down"


async def test_database_down_makes_readyz_503(settings, client_for):
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    client = await client_for(settings, database_url=closed)
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"]["status"] == "fail"


async def test_stripe_down_is_degraded_but_still_ready(settings, client_for):
    client = await client_for(settings, stripe_api_base=f"http://127.0.0.1:{free_port()}")
    health = await client.get("/api/health")
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["checks"]["stripe"]["status"] == "fail"
    ready = await client.get("/readyz")
    assert ready.status_code == 200


async def test_every_response_carries_the_app_version(client, settings):
    for path in ("/livez", "/api/products", "/no-such-page"):
        response = await client.get(path)
        assert response.headers["x-app-version"] == settings.app_version


async def test_connections_killed_under_the_pool_fail_one_check_then_are_replaced(settings, client_for, database_url):
    # What a failover does to the app: every pooled connection to the old primary dies at once.
    import asyncio

    import psycopg

    from payments.db import _pool_checks

    client = await client_for(settings, db_pool_min_size=4)
    pool = client._transport.app.state.db
    await pool.wait(timeout=10)
    assert (await client.get("/readyz")).status_code == 200
    with psycopg.connect(database_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ).fetchone()[0]
    assert killed >= 4
    first = await client.get("/readyz")
    assert first.status_code == 503
    # The failed check started a check of the whole pool: the other dead connections are
    # replaced before any other request meets them.
    await asyncio.wait_for(_pool_checks[id(pool)], timeout=10)
    statuses = [(await client.get("/readyz")).status_code for _ in range(8)]
    assert statuses == [200] * 8
