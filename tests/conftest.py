"""Fixtures shared by every test: real PostgreSQL, Redis and localstripe, and the app.

Session-scoped services start on first use (a test that needs none starts none) on free
loopback ports, with their state in one temporary directory, and stop when the session
ends:

- `postgres_url`: admin URL of a PostgreSQL 15 server;
- `redis_server_url`: a Redis server;
- `localstripe_url`: localstripe, the fake Stripe API;
- `stripe_api_base`: the Stripe stub in front of localstripe (roles/lab_services/files/stripe_stub.py);
  this is what the app's STRIPE_API_BASE points at.

Per test:

- `database_url`: a fresh database, copied from a template migrated once with
  `payments.db.migrate`;
- `redis_url`: the Redis server, flushed;
- `settings_env` / `settings`: the app's environment and `payments.config.Settings`;
- `app`: `payments.app.create_app(settings)` with its lifespan running;
- `client`: an `httpx.AsyncClient` calling `app` in-process (base URL http://testserver);
- `sign_stripe_payload(payload, secret, timestamp=None)`: a Stripe-Signature header value;
- `live_server`: the app under a real hypercorn process on a free port, with localstripe's
  webhooks pointed at it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from psycopg import sql

from tests.support import services, stripe_tools

TEMPLATE_DATABASE = "payments_template"
TEST_STRIPE_SECRET_KEY = "sk_test_payments_tests"
TEST_STRIPE_PUBLISHABLE_KEY = "pk_test_payments_tests"
TEST_STRIPE_WEBHOOK_SECRET = "whsec_test_payments_tests"
TEST_SESSION_SECRET = "test-session-secret-0123456789abcdef0123456789"


def database_url_for(url: str, name: str) -> str:
    """`url` with its database name replaced by `name`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


# -- services (session) ------------------------------------------------------------------


@pytest.fixture(scope="session")
def service_dir():
    """Where the session's services keep their data and logs (removed at the end)."""
    path = services.make_state_dir("payments-tests-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(service_dir) -> str:
    service = services.start_postgres(service_dir / "postgres")
    yield service.url
    service.stop()


@pytest.fixture(scope="session")
def redis_server_url(service_dir) -> str:
    service = services.start_redis(service_dir / "redis")
    yield service.url
    service.stop()


@pytest.fixture(scope="session")
def localstripe_url(service_dir) -> str:
    service = services.start_localstripe(service_dir / "localstripe")
    yield service.url
    service.stop()


@pytest.fixture(scope="session")
def stripe_api_base(service_dir, localstripe_url) -> str:
    service = services.start_stripe_stub(service_dir / "stripe_stub", localstripe_url)
    yield service.url
    service.stop()


# -- per test ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _template_database(postgres_url) -> str:
    """A database with every migration applied, copied by `database_url` for each test."""
    from payments.db import migrate

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE_DATABASE)))
    migrate(database_url_for(postgres_url, TEMPLATE_DATABASE))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        # No one may connect to it any more, so copying it never finds it busy.
        conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
                     .format(sql.Identifier(TEMPLATE_DATABASE)))
    return TEMPLATE_DATABASE


@pytest.fixture
def database_url(postgres_url, _template_database) -> str:
    """A fresh, migrated database for this test, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(_template_database)))
    yield database_url_for(postgres_url, name)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                     .format(sql.Identifier(name)))


@pytest.fixture
def redis_url(redis_server_url) -> str:
    """The session's Redis, emptied before this test."""
    import redis

    client = redis.Redis.from_url(redis_server_url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server_url


@pytest.fixture
def settings_env(database_url, redis_url, stripe_api_base) -> dict[str, str]:
    """The environment the app reads in tests (change it before `settings` if needed)."""
    return {
        "APP_ENV": "dev",
        "APP_VERSION": "test",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "STRIPE_API_BASE": stripe_api_base,
        "STRIPE_JS_URL": f"{stripe_api_base}/js.stripe.com/v3/",
        "STRIPE_SECRET_KEY": TEST_STRIPE_SECRET_KEY,
        "STRIPE_PUBLISHABLE_KEY": TEST_STRIPE_PUBLISHABLE_KEY,
        "STRIPE_WEBHOOK_SECRET": TEST_STRIPE_WEBHOOK_SECRET,
        "SESSION_SECRET": TEST_SESSION_SECRET,
        "LOG_LEVEL": "warning",
    }


@pytest.fixture
def settings(settings_env):
    from payments.config import Settings

    return Settings.from_env(settings_env)


@pytest.fixture
async def app(settings):
    """The app with its lifespan running (pool, Redis, Stripe client open)."""
    from payments.app import create_app

    application = create_app(settings)
    async with LifespanManager(application, startup_timeout=30, shutdown_timeout=30) as manager:
        yield manager.app


@pytest.fixture
async def client(app):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture
def sign_stripe_payload():
    """`sign(payload: bytes, secret: str, timestamp: int | None = None) -> str`, the
    Stripe-Signature header value Stripe would send (t=...,v1=HMAC-SHA256)."""
    return stripe_tools.sign_payload


@dataclass
class LiveServer:
    """The app served by hypercorn in a child process."""

    url: str
    settings: object
    env: dict
    service: services.Service

    def __str__(self) -> str:
        return self.url


@pytest.fixture
def live_server(settings_env, settings, stripe_api_base, tmp_path):
    """The app under a real hypercorn on a free port; localstripe's webhooks go to it.

    `.url`, `.settings`, `.env` (the server's whole environment) and `.service`
    (the process handle: `.log_tail()` helps when a test fails).
    """
    env = {k: v for k, v in os.environ.items() if k not in settings_env}
    env.update(settings_env)
    service = services.start_app_server(tmp_path / "live_server", env)
    env = service.extra["env"]  # with HOST, PORT and PYTHONPATH, e.g. for `python -m payments`
    stripe_tools.register_webhook(
        stripe_api_base, f"{service.url}/api/webhooks/stripe",
        settings.stripe_webhook_secret, endpoint_id="live_server")
    yield LiveServer(service.url, settings, env, service)
    service.stop()
