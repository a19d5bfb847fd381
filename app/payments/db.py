"""PostgreSQL: the connection pool the app shares, and schema migrations.

Migrations are plain SQL files in `payments/migrations/`, applied by yoyo. Two hosts
may run `python -m payments migrate` at once during a deploy: each run first takes a
PostgreSQL advisory lock, so the second waits and then finds nothing left to apply.
"""

from __future__ import annotations

import asyncio
import zlib
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from yoyo import get_backend, read_migrations

from payments.config import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Contract migrations (drop or tighten what an older release still uses): applied only by
# `migrate --contract`, which the deploy runs once every app host runs the new release.
CONTRACT_MIGRATIONS_DIR = MIGRATIONS_DIR / "contract"
# A fixed 64-bit key shared by every process that migrates this schema.
MIGRATION_LOCK_KEY = zlib.crc32(b"payments.db.migrate")


def create_pool(settings: Settings) -> AsyncConnectionPool:
    """An unopened pool (the lifespan opens it) whose connections return dict rows."""
    return AsyncConnectionPool(
        settings.database_url,
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        kwargs={"row_factory": dict_row, "connect_timeout": 5},
        # A request waits this long for a free connection before the 503 handler answers.
        timeout=10,
        open=False,
        name="payments",
    )


# The pool check in progress, per pool (one at a time).
_pool_checks: dict[int, asyncio.Task] = {}


def recheck_pool(pool: AsyncConnectionPool) -> None:
    """Test every idle connection of `pool` in the background, replacing the broken ones.

    Called when a connection failed: after a failover every pooled connection to the old
    primary is dead, and without this each of them would fail one more request before the
    pool drops it. At most one check runs at a time per pool."""
    running = _pool_checks.get(id(pool))
    if running is None or running.done():
        _pool_checks[id(pool)] = asyncio.get_running_loop().create_task(pool.check())


def _yoyo_url(database_url: str, host: str, port: int) -> str:
    """DATABASE_URL for yoyo, naming the one server `host`:`port`.

    DATABASE_URL may list several hosts (the primary and its replicas, with
    target_session_attrs=read-write, so a failover needs no new configuration); yoyo parses
    a URL of one host only, so it gets the server the lock connection reached: the primary.
    yoyo picks its driver from the scheme; psycopg 3 is the one installed."""
    parts = urlsplit(database_url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    if "," not in hosts:
        return urlunsplit(("postgresql+psycopg", *parts[1:]))
    location = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    netloc = f"{userinfo}@{location}" if userinfo else location
    return urlunsplit(("postgresql+psycopg", netloc, parts.path, parts.query, parts.fragment))


def migrate(database_url: str, *, contract: bool = False) -> list[str]:
    """Apply every pending migration; returns the ids applied (empty when up to date).

    Expand migrations only, unless `contract`: then also those of migrations/contract/."""
    sources = [str(MIGRATIONS_DIR)]
    if contract and CONTRACT_MIGRATIONS_DIR.is_dir():
        sources.append(str(CONTRACT_MIGRATIONS_DIR))
    with psycopg.connect(database_url, autocommit=True) as lock_conn:
        # Session-level lock, held until released below or this connection closes.
        lock_conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            # get_backend creates yoyo's bookkeeping tables, so it runs under the lock too.
            backend = get_backend(_yoyo_url(database_url, lock_conn.info.host, lock_conn.info.port))
            try:
                pending = backend.to_apply(read_migrations(*sources))
                with backend.lock():
                    backend.apply_migrations(pending)
                return [migration.id for migration in pending]
            finally:
                backend.connection.close()
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
