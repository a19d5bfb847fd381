"""Command line: `python -m payments <command>`.

  migrate       apply pending migrations (safe to run on several hosts at once)
  seed          write the demo catalog (add --stripe to create it in Stripe first)
  sync-catalog  copy every Stripe product and price into the database
  purge-audit   delete audit rows older than AUDIT_RETENTION_DAYS (default 90)
  check-write   commit one audit row through DATABASE_URL and print the server that took it
                (playbooks/failover.yml: the app writes again)
  serve         run the app under hypercorn (HOST, PORT, WEB_CONCURRENCY)
  mail-worker   deliver the mail outbox over SMTP until SIGTERM (DATABASE_URL, SMTP_*, MAIL_FROM)
  webhooks failed                      list Stripe events whose handler failed and that no
                                       delivery has applied since (id, type, attempts, age, error)
  webhooks replay EVENT_ID             run the event's handler again on its stored payload
  webhooks ignore EVENT_ID --reason R  settle it without applying it
                                       (replay and ignore are written to the audit log)

Settings come from environment variables; migrate, purge-audit and check-write need
DATABASE_URL only, so they can run before the app's secrets are in place; so do
`webhooks failed` and `webhooks ignore` (`webhooks replay` runs handlers, which may call
Stripe and Redis: it needs the app's settings).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
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


def _operator_name() -> str:
    # Recorded in the audit row of a CLI action: who ran it on the host.
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container's uid without a passwd entry
        return f"uid {os.getuid()}"


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


async def _database_pool(work):
    """A one-connection pool on DATABASE_URL with the app's dict rows, for `work(pool)`."""
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    async with AsyncConnectionPool(database_url_from_env(os.environ), min_size=1, max_size=1, open=False,
                                   kwargs={"row_factory": dict_row}) as pool:
        return await work(pool)


def cmd_webhooks_failed(args) -> int:
    from payments.webhooks import operator

    async def read(pool):
        async with pool.connection() as conn:
            return await operator.list_failed(conn, limit=args.limit)

    events = asyncio.run(_database_pool(read))
    if args.json:
        print(json.dumps({"events": [event.as_json() for event in events]}))
        return 0
    if not events:
        print("no failed webhook events")
        return 0
    rows = [(e.event_id, e.event_type, str(e.attempts), _age(e.age_seconds), e.last_error.replace("\n", " "))
            for e in events]
    header = ("ID", "TYPE", "ATTEMPTS", "AGE", "ERROR")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4][:200])
    return 0


def _run_operator_action(name: str, event_id: str, work) -> int:
    from payments.webhooks import operator

    try:
        settled = work()
    except operator.OperatorError as exc:
        log.error(f"webhook_{name}_refused", event_id=event_id, code=exc.code, error=exc.message)
        print(f"webhooks {name}: {exc.message} ({exc.code})", file=sys.stderr)
        return 1
    log.info(f"webhook_{name}", event_id=event_id, outcome=settled.outcome)
    print(f"{event_id} ({settled.event_type}): {settled.outcome}")
    return 0


def cmd_webhooks_replay(args) -> int:
    from payments.webhooks import operator

    settings = Settings.from_env(os.environ)  # handlers may call Stripe and Redis
    actor = operator.Actor(via="cli", name=_operator_name())
    return _run_operator_action("replay", args.event_id, lambda: asyncio.run(_with_resources(
        settings, lambda pool, redis, stripe: operator.replay(pool, args.event_id, actor=actor, redis=redis,
                                                              stripe=stripe))))


def cmd_webhooks_ignore(args) -> int:
    from payments.webhooks import operator

    actor = operator.Actor(via="cli", name=_operator_name())
    return _run_operator_action("ignore", args.event_id, lambda: asyncio.run(_database_pool(
        lambda pool: operator.ignore(pool, args.event_id, reason=args.reason, actor=actor))))


def cmd_mail_worker(args) -> int:
    import threading

    from payments.config import MailSettings
    from payments.mail import worker

    settings = MailSettings.from_env(os.environ)
    configure_logging(settings.log_level)
    stop = threading.Event()
    # SIGTERM (docker stop, systemd) ends the round after the message being sent, if any.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    worker.run(settings, stop)
    return 0


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
    commands.add_parser("mail-worker", help="deliver the mail outbox over SMTP until stopped") \
        .set_defaults(func=cmd_mail_worker)
    webhooks = commands.add_parser("webhooks", help="failed Stripe webhook events: list, replay, ignore")
    actions = webhooks.add_subparsers(dest="action", required=True)
    failed = actions.add_parser("failed", help="list events whose handler failed and that are not applied yet")
    failed.add_argument("--json", action="store_true", help="print JSON instead of a table")
    failed.add_argument("--limit", type=int, default=500, help="at most this many, oldest first (default 500)")
    failed.set_defaults(func=cmd_webhooks_failed)
    replay = actions.add_parser("replay", help="run a failed event's handler again on its stored payload")
    replay.add_argument("event_id")
    replay.set_defaults(func=cmd_webhooks_replay)
    ignore = actions.add_parser("ignore", help="settle a failed event without applying it")
    ignore.add_argument("event_id")
    ignore.add_argument("--reason", required=True, help="why (kept with the event and in the audit log)")
    ignore.set_defaults(func=cmd_webhooks_ignore)
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
