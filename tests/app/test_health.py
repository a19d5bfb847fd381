"""Liveness, readiness and the health report, against real PostgreSQL, Redis and Stripe stub."""

from __future__ import annotations

import asyncio
import collections
import http.server
import os
import sys
import threading

import httpx

from tests.support import services
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


# -- the Stripe probe is cached -----------------------------------------------------------


def count_balance_calls(app, monkeypatch) -> list:
    calls = []
    balance = app.state.stripe.v1.balance
    original = balance.retrieve_async

    async def counting(*args, **kwargs):
        calls.append(1)
        return await original(*args, **kwargs)

    monkeypatch.setattr(balance, "retrieve_async", counting)
    return calls


async def test_a_hundred_health_requests_in_a_row_ask_stripe_once(app, client, monkeypatch):
    calls = count_balance_calls(app, monkeypatch)

    answers = [await client.get("/api/health") for _ in range(100)]

    assert len(calls) == 1
    assert {a.json()["checks"]["stripe"]["status"] for a in answers} == {"ok"}
    ages = [a.json()["checks"]["stripe"]["age_seconds"] for a in answers]
    assert ages[0] == 0 and ages == sorted(ages) and ages[-1] < 30


async def test_concurrent_health_requests_share_one_stripe_call(app, client, monkeypatch):
    calls = count_balance_calls(app, monkeypatch)

    answers = await asyncio.gather(*(client.get("/api/health") for _ in range(50)))

    assert len(calls) == 1
    assert {a.status_code for a in answers} == {200}


async def test_the_stripe_result_is_asked_again_once_older_than_its_max_age(settings, client_for, monkeypatch):
    client = await client_for(settings, stripe_health_max_age_seconds=1.0)
    calls = count_balance_calls(client._transport.app, monkeypatch)

    await client.get("/api/health")
    await asyncio.sleep(1.1)
    later = await client.get("/api/health")

    assert len(calls) == 2
    assert later.json()["checks"]["stripe"]["age_seconds"] == 0


class StripeTap:
    """Counts the requests the app's processes send to Stripe (the stub), by path, and
    passes them on unchanged: a plain proxy, STRIPE_API_BASE of a served app."""

    def __init__(self, upstream: str) -> None:
        self.paths: collections.Counter = collections.Counter()
        tap = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self):
                tap.paths[self.path.split("?", 1)[0]] += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = httpx.request(self.command, upstream + self.path, headers=headers, content=body, timeout=30)
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_DELETE = _forward

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_hundred_health_requests_cost_at_most_one_stripe_call_per_worker(settings_env, stripe_api_base, tmp_path):
    tap = StripeTap(stripe_api_base)
    env = {k: v for k, v in os.environ.items() if k not in settings_env and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(settings_env, STRIPE_API_BASE=tap.url)
    server = services.start_app_server(tmp_path / "serve", env, workers=2,
                                       command=[sys.executable, "-m", "payments", "serve"])
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            # A new connection each time, so both workers answer some of them.
            answers = [http.get("/api/health", headers={"Connection": "close"}) for _ in range(100)]
    finally:
        server.stop()
        tap.close()

    assert {a.json()["checks"]["stripe"]["status"] for a in answers} == {"ok"}
    assert 1 <= tap.paths["/v1/balance"] <= 2
