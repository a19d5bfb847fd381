"""payments.db.migrate against a real PostgreSQL: repeatable and safe to run concurrently."""

from __future__ import annotations

import subprocess
import sys
import uuid
from urllib.parse import urlsplit, urlunsplit
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from payments.db import migrate
from tests.conftest import database_url_for


REPO = Path(__file__).resolve().parents[2]
APP_TABLES = {"users", "products", "prices", "audit_logs"}


def rollback_only(url: str, migration_id: str) -> None:
    """Roll back one migration, as `yoyo rollback` of that id does."""
    from yoyo import get_backend, read_migrations

    from payments.db import MIGRATIONS_DIR, _yoyo_url

    parts = urlsplit(url)
    backend = get_backend(_yoyo_url(url, parts.hostname, parts.port))
    try:
        migrations = read_migrations(str(MIGRATIONS_DIR))
        with backend.lock():
            backend.rollback_migrations(backend.to_rollback(migrations.filter(lambda m: m.id == migration_id)))
    finally:
        backend.connection.close()


@pytest.fixture
def empty_database_url(postgres_url):
    name = f"migrate_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield database_url_for(postgres_url, name)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {row[0] for row in rows}


def applied_migrations(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT migration_id FROM _yoyo_migration ORDER BY migration_id")]


def test_migrate_creates_the_schema_then_has_nothing_left(empty_database_url):
    first = migrate(empty_database_url)
    assert "0001_accounts_catalog_audit" in first
    assert APP_TABLES <= tables(empty_database_url)
    assert migrate(empty_database_url) == []
    assert applied_migrations(empty_database_url) == sorted(first)


def test_two_processes_migrating_at_once_apply_each_migration_once(empty_database_url):
    code = "import sys; from payments.db import migrate; print(len(migrate(sys.argv[1])))"
    processes = [
        subprocess.Popen([sys.executable, "-c", code, empty_database_url], cwd=REPO / "app",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err for _, err in results]
    counts = sorted(int(out.strip()) for out, _ in results)
    # One run applied everything; the other waited on the lock and found nothing to do.
    assert counts[0] == 0 and counts[1] >= 1
    assert APP_TABLES <= tables(empty_database_url)
    assert len(applied_migrations(empty_database_url)) == counts[1]


def test_migrate_command_exits_zero(empty_database_url):
    env = {"DATABASE_URL": empty_database_url, "PATH": "/usr/bin:/bin"}
    for _ in range(2):
        result = subprocess.run([sys.executable, "-m", "payments", "migrate"], cwd=REPO / "app", env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    assert APP_TABLES <= tables(empty_database_url)


def test_full_text_search_uses_a_gin_index(database_url):
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'products' AND indexdef ILIKE '%gin%'").fetchone()
    assert row is not None and "search" in row[0]


def test_migrate_follows_a_database_url_of_several_hosts_to_the_primary(empty_database_url):
    # The stack lists every database host (target_session_attrs=read-write) so the app finds
    # the primary after a failover; here the first host refuses connections, as a fenced old
    # primary does, and migrate must reach the real server behind the second.
    parts = urlsplit(empty_database_url)
    userinfo, _, location = parts.netloc.rpartition("@")
    multi_host = urlunsplit((parts.scheme, f"{userinfo}@127.0.0.1:1,{location}", parts.path,
                             "target_session_attrs=read-write", ""))
    assert "0001_accounts_catalog_audit" in migrate(multi_host)
    assert APP_TABLES <= tables(empty_database_url)
    assert migrate(multi_host) == []


def test_the_recovery_points_migration_is_expand_only_and_rolls_back(empty_database_url):
    """0003 adds columns the release before it never names: that release's INSERT of a key
    still works, and gets a lock; the rollback file undoes 0003 alone."""
    migrate(empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        user_id = conn.execute("INSERT INTO users (email, password_hash) VALUES ('old@example.com', 'x')"
                               " RETURNING id").fetchone()[0]
        # The previous release's statement, unchanged.
        conn.execute("INSERT INTO idempotency_keys (user_id, key, request_hash, status)"
                     " VALUES (%s, 'k', 'h', 'in_flight')", (user_id,))
        assert conn.execute("SELECT order_id IS NULL, locked_at IS NOT NULL FROM idempotency_keys").fetchone() == (
            True, True)

    rollback_only(empty_database_url, "0003_idempotency_recovery_points")
    with psycopg.connect(empty_database_url) as conn:
        columns = {row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'idempotency_keys'")}
    assert {"order_id", "locked_at"}.isdisjoint(columns) and "request_hash" in columns
    assert migrate(empty_database_url) == ["0003_idempotency_recovery_points"]


def plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def test_the_webhook_backlog_query_reads_stripe_events_by_primary_key_and_failures_by_index(database_url):
    """/metrics runs it on every scrape: stripe_events (every event Stripe ever sent) is only
    probed by primary key, once per failed event, and migration 0004's index holds all the
    query needs of webhook_failures (an index-only scan, never the rows and their payloads)."""
    from payments.webhooks.backlog import BACKLOG_SQL, GRACE_SECONDS

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO stripe_events (id, type, created, payload, status, processed_at)"
                     " SELECT 'evt_' || g, 'product.created', now(), '{}', 'processed', now()"
                     " FROM generate_series(1, 20000) AS g")
        # 50 events that failed twice each and were then processed, 5 that are still failing.
        conn.execute("INSERT INTO webhook_failures (event_id, event_type, error, payload, failed_at)"
                     " SELECT 'evt_' || (g % 50 + 1), 'product.created', 'RuntimeError', '{}'::jsonb,"
                     "        now() - interval '1 hour' FROM generate_series(1, 100) AS g"
                     " UNION ALL SELECT 'evt_lost_' || g, 'product.created', 'RuntimeError', '{}'::jsonb,"
                     "        now() - interval '2 hours' FROM generate_series(1, 5) AS g")
        conn.execute("VACUUM ANALYZE stripe_events, webhook_failures")  # as autovacuum leaves them

        def scans() -> dict[str, set[tuple]]:
            plan = conn.execute("EXPLAIN (FORMAT JSON) " + BACKLOG_SQL, (GRACE_SECONDS,)).fetchone()[0]
            found: dict[str, set[tuple]] = {}
            for node in plan_nodes(plan[0]["Plan"]):
                if "Relation Name" in node:
                    found.setdefault(node["Relation Name"], set()).add((node["Node Type"], node.get("Index Name")))
            return found

        assert scans()["stripe_events"] == {("Index Only Scan", "stripe_events_pkey")}
        # A table this small may be read whole, or through the older event_id index and its
        # rows; with those ways closed (all rolled back) the new index serves the query alone.
        with conn.transaction(force_rollback=True):
            conn.execute("DROP INDEX webhook_failures_event_idx")
            conn.execute("SET LOCAL enable_seqscan = off")
            conn.execute("SET LOCAL enable_bitmapscan = off")
            assert scans()["webhook_failures"] == {("Index Only Scan", "webhook_failures_event_failed_at_idx")}
        assert conn.execute(BACKLOG_SQL, (GRACE_SECONDS,)).fetchone()[0] == 5


def test_the_webhook_backlog_index_migration_rolls_back_alone(database_url):
    rollback_only(database_url, "0004_webhook_failures_backlog_index")
    with psycopg.connect(database_url) as conn:
        indexes = {row[0] for row in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'webhook_failures'")}
    assert "webhook_failures_event_failed_at_idx" not in indexes and "webhook_failures_event_idx" in indexes
    assert migrate(database_url) == ["0004_webhook_failures_backlog_index"]


def test_the_ignored_reason_migration_is_expand_only_and_rolls_back_alone(database_url):
    """0005 adds a nullable column without a default (the release before it inserts events
    without naming it), and its rollback drops only that column."""
    column = ("SELECT is_nullable, column_default FROM information_schema.columns"
              " WHERE table_name = 'stripe_events' AND column_name = 'ignored_reason'")
    with psycopg.connect(database_url) as conn:
        assert conn.execute(column).fetchall() == [("YES", None)]
        # What the previous release writes still goes in.
        conn.execute("INSERT INTO stripe_events (id, type, created, payload, status, processed_at)"
                     " VALUES ('evt_old_release', 'product.created', now(), '{}', 'processed', now())")
    rollback_only(database_url, "0005_webhook_ignored_reason")
    with psycopg.connect(database_url) as conn:
        assert conn.execute(column).fetchall() == []
        assert conn.execute("SELECT count(*) FROM stripe_events").fetchone() == (1,)
    assert migrate(database_url) == ["0005_webhook_ignored_reason"]


def test_the_mail_outbox_migration_rolls_back_alone(database_url):
    assert "mail_outbox" in tables(database_url)
    rollback_only(database_url, "0006_mail_outbox")
    assert "mail_outbox" not in tables(database_url) and "stripe_events" in tables(database_url)
    assert migrate(database_url) == ["0006_mail_outbox"]
