"""Command line: `python -m payments <command>`.

  migrate       apply pending migrations (safe to run on several hosts at once)
  seed          write the demo catalog (add --stripe to create it in Stripe first)
  sync-catalog  copy every Stripe product and price into the database
  purge-audit   delete audit rows older than AUDIT_RETENTION_DAYS (default 90)
  check-write   commit one audit row through DATABASE_URL and print the server that took it
                (playbooks/failover.yml: the app writes again)
  serve         run the app under hypercorn (HOST, PORT, WEB_CONCURRENCY)

Settings come from environment variables; migrate, purge-audit and check-write need
DATABASE_URL only, so they can run before the app's secrets are in place.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence

from payments.config import ConfigError, Settings, audit_retention_days_from_env, database_url_from_env
from payments.logs import configure_logging, get_logger

log = get_logger("payments.cli")


def cmd_migrate(args) -> int:
    from payments.db import migrate

    applied = migrate(database_url_from_env(os.environ), contract=args.contract)
    log.info("migrations_applied", applied=applied, count=len(applied))
    return 0


async def _purge(database_url: str, days: int) -> int:
    import psycopg

    from payments import audit

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        async with conn.transaction():
            return await audit.purge(conn, older_than_days=days)


async def _check_write(database_url: str, reason: str) -> dict:
    import psycopg

    from payments import audit

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        async with conn.transaction():
            # A write, not a read: a standby (or a fenced old primary) must fail this.
            await audit.record(conn, action="system.database_write_checked", details={"reason": reason})
        return {"host": conn.info.host, "port": conn.info.port}


def cmd_check_write(args) -> int:
    import psycopg

    try:
        server = asyncio.run(_check_write(database_url_from_env(os.environ), args.reason))
    except psycopg.Error as exc:
        log.error("database_write_check_failed", error=str(exc).strip())
        print(f"database write check failed: {str(exc).strip()}", file=sys.stderr)
        return 1
    log.info("database_write_checked", **server)
    print(f"database write check passed: committed on {server['host']}:{server['port']}")
    return 0


def cmd_purge_audit(args) -> int:
    days = args.days
    if days is None:
        days = audit_retention_days_from_env(os.environ)  # ConfigError naming it when malformed
    if days < 1:
        raise ConfigError("--days must be at least 1")
    deleted = asyncio.run(_purge(database_url_from_env(os.environ), days))
    log.info("audit_purged", deleted=deleted, older_than_days=days)
    return 0


async def _with_resources(settings: Settings, work):
    """Open the pool, Redis and Stripe like the app does, run `work`, close them."""
    from payments.cache import create_redis
    from payments.db import create_pool
    from payments.stripe_gateway import create_http_client, create_stripe_client

    pool = create_pool(settings)
    await pool.open(wait=True, timeout=30)
    redis = create_redis(settings.redis_url, settings.redis_max_connections)
    stripe_http = create_http_client(settings)
    try:
        return await work(pool, redis, create_stripe_client(settings, stripe_http))
    finally:
        await pool.close()
        await redis.aclose()
        await stripe_http.close_async()


def cmd_seed(args) -> int:
    from payments.catalog import seed

    settings = Settings.from_env(os.environ) if args.stripe else None
    if settings is not None:
        count = asyncio.run(_with_resources(settings, lambda pool, redis, stripe: seed.seed_stripe(pool, stripe, redis)))
    else:
        count = asyncio.run(_seed_local())
    log.info("catalog_seeded", products=count, pushed_to_stripe=bool(args.stripe))
    return 0


async def _seed_local() -> int:
    """Without Stripe: needs DATABASE_URL; invalidates the catalog cache if REDIS_URL is set."""
    from psycopg_pool import AsyncConnectionPool

    from payments.cache import create_redis
    from payments.catalog import seed

    async with AsyncConnectionPool(database_url_from_env(os.environ), min_size=1, max_size=1, open=False) as pool:
        redis = create_redis(os.environ["REDIS_URL"]) if os.environ.get("REDIS_URL") else None
        try:
            return await seed.seed_local(pool, redis)
        finally:
            if redis is not None:
                await redis.aclose()


def cmd_sync_catalog(args) -> int:
    from payments.catalog.sync import sync_catalog

    settings = Settings.from_env(os.environ)
    result = asyncio.run(_with_resources(settings, lambda pool, redis, stripe: sync_catalog(pool, stripe, redis)))
    log.info("catalog_synced", products=result.products, prices=result.prices,
             skipped_prices=result.skipped_prices)
    return 0


def cmd_serve(args) -> int:
    from hypercorn.run import run

    from payments.server import WorkerSocketsConfig

    settings = Settings.from_env(os.environ)  # fail here, before forking workers
    metrics_dir = None
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers share metrics through files so any worker can answer a scrape;
        # set before the workers start, since they read it at import.
        metrics_dir = tempfile.mkdtemp(prefix="payments-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    config = WorkerSocketsConfig()  # a listening socket per worker: see server.py
    config.application_path = "payments.app:create_app()"
    config.bind = [f"{settings.host}:{settings.port}"]
    config.workers = settings.workers
    config.accesslog = None  # RequestContextMiddleware writes the access log
    # A Logger (not "-") makes hypercorn log through the root handler, i.e. as JSON.
    config.errorlog = logging.getLogger("hypercorn.error")
    # On SIGTERM in-flight requests get this long to finish (GRACEFUL_TIMEOUT, default 30 s).
    config.graceful_timeout = settings.graceful_timeout_seconds
    config.keep_alive_timeout = 75  # longer than nginx's upstream keepalive_timeout (65 s)
    log.info("serving", bind=config.bind, workers=config.workers, version=settings.app_version,
             graceful_timeout=config.graceful_timeout)
    # hypercorn's supervisor terminate()s the other workers as soon as the first one has
    # drained, which would kill their in-flight requests. Workers inherit this SIG_IGN
    # (spawned processes keep ignored signals), so they stop only through hypercorn's
    # shutdown event, after draining; run() installs the supervisor's own SIGTERM handler.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        return run(config)
    finally:
        for worker in multiprocessing.active_children():
            worker.join()  # still draining: wait for it, as the container's stop timeout allows
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m payments", description="The payment app.")
    commands = parser.add_subparsers(dest="command", required=True)
    migrate = commands.add_parser("migrate", help="apply pending database migrations")
    migrate.add_argument("--contract", action="store_true",
                         help="also apply migrations/contract/ (only once every host runs this release)")
    migrate.set_defaults(func=cmd_migrate)
    seed = commands.add_parser("seed", help="write the demo catalog")
    seed.add_argument("--stripe", action="store_true", help="create the products and prices in Stripe first")
    seed.set_defaults(func=cmd_seed)
    commands.add_parser("sync-catalog", help="copy Stripe products and prices into the database") \
        .set_defaults(func=cmd_sync_catalog)
    purge = commands.add_parser("purge-audit", help="delete old audit log rows")
    purge.add_argument("--days", type=int, default=None, help="keep this many days (default 90)")
    purge.set_defaults(func=cmd_purge_audit)
    check = commands.add_parser("check-write", help="commit one audit row; fail unless the database takes writes")
    check.add_argument("--reason", default="manual", help="recorded in the audit row (e.g. failover)")
    check.set_defaults(func=cmd_check_write)
    commands.add_parser("serve", help="run the web server").set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(os.environ.get("LOG_LEVEL", "info").lower())
    try:
        return args.func(args)
    except ConfigError as exc:
        log.error("config_error", error=str(exc))
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
