"""The mail_outbox table (migration 0006): written by the webhook handlers, read by the worker.

A handler calls `enqueue_for_user` / `enqueue_for_customer` inside the event's
transaction, so the mail row commits exactly when the change it tells about does: a
rolled-back handler leaves no mail, a committed one always leaves its mail. `dedup_key`
names the fact (order_paid:<order id>): the same fact reported twice (a redelivered
event, checkout.session.completed and payment_intent.succeeded for one payment) makes one
row. A customer without an e-mail address of ours (no user with that Stripe customer)
gets no row.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from psycopg.types.json import Jsonb

from payments.webhooks.backlog import POOL_WAIT_SECONDS, READ_DEADLINE_SECONDS, STATEMENT_TIMEOUT_MS

log = structlog.get_logger("payments.mail")

KINDS = ("order_paid", "refund_issued", "subscription_started", "subscription_renewed",
         "subscription_payment_failed", "subscription_cancelled")

_INSERT = """
    INSERT INTO mail_outbox (kind, dedup_key, recipient, context)
    SELECT %(kind)s, %(dedup_key)s, users.email, %(context)s
      FROM users
     WHERE {where}
     LIMIT 1
    ON CONFLICT (dedup_key) DO NOTHING
    RETURNING id
"""
_FOR_USER = _INSERT.format(where="users.id = %(key)s")
_FOR_CUSTOMER = _INSERT.format(where="users.stripe_customer_id = %(key)s")


async def _enqueue(conn, sql: str, *, kind: str, dedup_key: str, key: Any, context: dict) -> int | None:
    if kind not in KINDS:
        raise ValueError(f"unknown mail kind {kind!r}")
    cursor = await conn.execute(sql, {"kind": kind, "dedup_key": dedup_key, "key": key, "context": Jsonb(context)})
    row = await cursor.fetchone()
    return None if row is None else row["id"]


async def enqueue_for_user(conn, *, kind: str, dedup_key: str, user_id: int, context: dict) -> int | None:
    """The new row's id; None when the fact already has its mail."""
    return await _enqueue(conn, _FOR_USER, kind=kind, dedup_key=dedup_key, key=user_id, context=context)


async def enqueue_for_customer(conn, *, kind: str, dedup_key: str, stripe_customer_id: str | None,
                               context: dict) -> int | None:
    """As `enqueue_for_user`, for the user whose Stripe customer it is (None: no such user)."""
    if not stripe_customer_id:
        return None
    return await _enqueue(conn, _FOR_CUSTOMER, kind=kind, dedup_key=dedup_key, key=stripe_customer_id,
                          context=context)


# For /metrics: the pending rows only (the partial index of migration 0006 holds them).
PENDING_SQL = """
    SELECT count(*) AS pending,
           coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age_seconds
      FROM mail_outbox
     WHERE status = 'pending'
"""


@dataclass(frozen=True, slots=True)
class Pending:
    count: int
    oldest_age_seconds: float  # since the oldest pending row was written; 0 when none


async def read_pending(pool) -> Pending | None:
    """The outbox's pending mails for a scrape, bounded in time like the webhook backlog
    (webhooks/backlog.py, same limits); None when PostgreSQL did not answer in time."""
    try:
        async with asyncio.timeout(READ_DEADLINE_SECONDS):
            async with pool.connection(timeout=POOL_WAIT_SECONDS) as conn:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL statement_timeout = {int(STATEMENT_TIMEOUT_MS)}")
                    row = await (await conn.execute(PENDING_SQL)).fetchone()
    except (psycopg.Error, TimeoutError) as exc:  # PoolTimeout is a psycopg.Error
        log.warning("mail_outbox_not_read", error=f"{type(exc).__name__}: {exc}")
        return None
    return Pending(count=row["pending"], oldest_age_seconds=row["oldest_age_seconds"])
