"""The command line: purge-audit, seed and audit.record, run as an operator would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args, env):
    return subprocess.run([sys.executable, "-m", "payments", *args], cwd=REPO / "app",
                          env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=120)


def insert_audit_rows(database_url, ages_in_days):
    with psycopg.connect(database_url) as conn:
        for age in ages_in_days:
            conn.execute("INSERT INTO audit_logs (action, created_at) VALUES (%s, now() - make_interval(days => %s))",
                         (f"test.age_{age}", age))


def remaining_actions(database_url):
    with psycopg.connect(database_url) as conn:
        return sorted(row[0] for row in conn.execute("SELECT action FROM audit_logs"))


def test_purge_audit_deletes_rows_older_than_90_days_only(database_url):
    insert_audit_rows(database_url, [200, 91, 89, 1])
    result = run_cli("purge-audit", env={"DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr
    assert remaining_actions(database_url) == ["test.age_1", "test.age_89"]
    # Output is JSON log lines; the summary says how many went.
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [r["deleted"] for r in records if r["event"] == "audit_purged"] == [2]


def test_purge_audit_days_option(database_url):
    insert_audit_rows(database_url, [40, 20])
    result = run_cli("purge-audit", "--days", "30", env={"DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr
    assert remaining_actions(database_url) == ["test.age_20"]


def test_purge_audit_without_database_url_names_it(database_url):
    result = run_cli("purge-audit", env={})
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr


def test_purge_audit_with_malformed_retention_names_the_variable(database_url):
    insert_audit_rows(database_url, [200])
    result = run_cli("purge-audit", env={"DATABASE_URL": database_url, "AUDIT_RETENTION_DAYS": "ninety"})
    assert result.returncode == 2
    assert "AUDIT_RETENTION_DAYS" in result.stderr and "Traceback" not in result.stderr
    assert remaining_actions(database_url) == ["test.age_200"]


def test_purge_audit_reads_the_retention_from_the_environment(database_url):
    insert_audit_rows(database_url, [40, 20])
    result = run_cli("purge-audit", env={"DATABASE_URL": database_url, "AUDIT_RETENTION_DAYS": "30"})
    assert result.returncode == 0, result.stderr
    assert remaining_actions(database_url) == ["test.age_20"]


def test_seed_command_works_without_stripe(database_url, redis_url):
    result = run_cli("seed", env={"DATABASE_URL": database_url, "REDIS_URL": redis_url})
    assert result.returncode == 0, result.stderr
    with psycopg.connect(database_url) as conn:
        ids = sorted(row[0] for row in conn.execute("SELECT stripe_product_id FROM products"))
    assert len(ids) == 4 and all(i.startswith("prod_demo_") for i in ids)


def test_seed_with_stripe_creates_products_in_stripe(settings_env, stripe_api_base):
    result = run_cli("seed", "--stripe", env=settings_env)
    assert result.returncode == 0, result.stderr
    again = run_cli("seed", "--stripe", env=settings_env)  # finds them, creates no duplicates
    assert again.returncode == 0, again.stderr
    with psycopg.connect(settings_env["DATABASE_URL"]) as conn:
        rows = conn.execute("SELECT stripe_product_id FROM products").fetchall()
    assert len(rows) == 4 and not any(row[0].startswith("prod_demo_") for row in rows)


async def test_sync_catalog_command_copies_stripe_products(app, settings_env):
    item = await app.state.stripe.v1.products.create_async({"name": "Synced By CLI"})
    await app.state.stripe.v1.prices.create_async({"product": item.id, "unit_amount": 700, "currency": "usd"})
    result = run_cli("sync-catalog", env=settings_env)
    assert result.returncode == 0, result.stderr
    async with app.state.db.connection() as conn:
        row = await (await conn.execute(
            """SELECT p.slug, pr.unit_amount FROM products p JOIN prices pr ON pr.product_id = p.id
               WHERE p.stripe_product_id = %s""", (item.id,))).fetchone()
    assert row == {"slug": "synced-by-cli", "unit_amount": 700}


async def test_audit_record_commits_with_the_callers_transaction(app):
    from payments import audit

    async with app.state.db.connection() as conn:
        await audit.record(conn, action="user.test", ip="not-an-ip", details={"k": "v"})
        await audit.record(conn, action="user.test2", ip="192.0.2.1")
    async with app.state.db.connection() as conn:
        rows = await (await conn.execute("SELECT action, host(ip) AS ip, details FROM audit_logs ORDER BY id")).fetchall()
    assert rows == [{"action": "user.test", "ip": None, "details": {"k": "v"}},
                    {"action": "user.test2", "ip": "192.0.2.1", "details": {}}]


def test_check_write_commits_an_audit_row_and_names_the_server(database_url):
    result = run_cli("check-write", "--reason", "failover", env={"DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr
    assert "database write check passed: committed on " in result.stdout
    with psycopg.connect(database_url) as conn:
        details = conn.execute("SELECT details FROM audit_logs WHERE action = 'system.database_write_checked'").fetchall()
    assert details == [({"reason": "failover"},)]


def test_check_write_fails_where_the_database_takes_no_writes(database_url):
    # What a standby answers: every transaction is read-only.
    read_only = database_url + ("&" if "?" in database_url else "?") + "options=-c%20default_transaction_read_only%3Don"
    result = run_cli("check-write", env={"DATABASE_URL": read_only})
    assert result.returncode == 1
    assert "database write check failed" in result.stderr
    assert "read-only transaction" in result.stderr
    assert remaining_actions(database_url) == []
