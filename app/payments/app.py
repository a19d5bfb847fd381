"""The ASGI application: `create_app(settings)` wires everything explicitly.

The lifespan creates and closes every shared resource on `app.state`: `db` (psycopg_pool
AsyncConnectionPool, dict rows), `redis`, `stripe` (StripeClient), `stripe_check` (the
health probe's cache) and `started_at`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from payments import metrics
from payments.cache import create_redis
from payments.catalog import cache as catalog_cache
from payments.config import Settings
from payments.db import create_pool
from payments.errors import EXCEPTION_HANDLERS
from payments.health import CachedCheck, check_stripe
from payments.http import MAX_BODY_BYTES
from payments.logs import configure_logging
from payments.middleware import BodyLimitMiddleware, RequestContextMiddleware
from payments.routes import accounts, admin_webhooks, catalog, checkout, health, orders, pages, refunds, subscriptions, webhooks
from payments.routes import metrics as metrics_routes
from payments.stripe_gateway import create_http_client, create_stripe_client
from payments.templating import STATIC_DIR, create_templates
from payments.webhooks.batch import ClaimBatcher

log = structlog.get_logger("payments.app")

# Every route module served, in matching order. Each exports `routes: list`.
# The payments routes (checkout, orders, subscriptions, webhooks, refunds, the admin
# webhook views) go here too.
# No two modules' paths overlap, so the order only sets how many routes a request is
# matched against: the busiest (probes, Stripe's webhooks, the catalog API) come first.
ROUTE_MODULES = [
    health,
    metrics_routes,
    webhooks,
    catalog,
    accounts,
    pages,
    checkout,
    orders,
    subscriptions,
    refunds,
    admin_webhooks,
]

POOL_GAUGE_INTERVAL_SECONDS = 15


async def _refresh_pool_gauges(pool) -> None:
    # Keeps the gauges fresh in multiprocess mode, where a scrape reaches one worker only.
    while True:
        metrics.update_pool_gauges(pool)
        await asyncio.sleep(POOL_GAUGE_INTERVAL_SECONDS)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    settings: Settings = app.state.settings
    pool = create_pool(settings)
    # wait=False: start even while PostgreSQL is down; /readyz reports it until it is back.
    await pool.open(wait=False)
    redis = create_redis(settings.redis_url, settings.redis_max_connections)
    stripe_http = create_http_client(settings)
    app.state.db = pool
    # Stripe's webhook deliveries that change nothing of ours share statements (batch.py).
    app.state.webhook_claims = ClaimBatcher(pool)
    app.state.redis = redis
    app.state.catalog_memo = catalog_cache.Memo()  # recent catalog cache hits (catalog/cache.py)
    app.state.stripe = create_stripe_client(settings, stripe_http)
    # /api/health's Stripe probe, at most one call per STRIPE_HEALTH_MAX_AGE_SECONDS here.
    app.state.stripe_check = CachedCheck(lambda: check_stripe(app.state.stripe),
                                         settings.stripe_health_max_age_seconds)
    app.state.started_at = time.monotonic()
    gauges = asyncio.create_task(_refresh_pool_gauges(pool))
    log.info("app_started", version=settings.app_version, env=settings.app_env)
    try:
        yield
    finally:
        gauges.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gauges
        await pool.close()
        await redis.aclose()
        await stripe_http.close_async()
        metrics.mark_worker_exited(os.getpid())
        log.info("app_stopped")


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env(os.environ)
    configure_logging(settings.log_level)
    routes = [route for module in ROUTE_MODULES for route in module.routes]
    routes.append(Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"))
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestContextMiddleware, version=settings.app_version),
            Middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.templates = create_templates(settings)
    return app
