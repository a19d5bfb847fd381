"""The webhook backlog: Stripe events that failed and are not applied yet, read for /metrics.

An event is stored in `stripe_events` only in the transaction that applies it (processor.py),
so an event that is not processed has no row there; what the app keeps of it is its
`webhook_failures` rows, written after its handler raised. The backlog is therefore every
event id in `webhook_failures` with no row in `stripe_events` (a later delivery, Stripe's
retry, applied it once that row exists), counted once however often it failed.
(Nothing deletes stripe_events rows; a purge that did would have to delete their failures too.)

An event whose first failure is less than `GRACE_SECONDS` old is not counted yet: a
delivery that is being processed right now is not visible at all (its row is uncommitted),
and one that just failed is often applied seconds later by a concurrent or resent delivery.

The read is bounded in time so a slow or unreachable PostgreSQL cannot hang a scrape:
the caller gets `None` instead of a value (/metrics then leaves the gauges out).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import psycopg
import structlog

log = structlog.get_logger("payments.webhooks")

GRACE_SECONDS = 60
# Each bound is well under Prometheus' 10 s scrape timeout (roles/monitoring):
# waiting for a pooled connection (all busy, or PostgreSQL down) ...
POOL_WAIT_SECONDS = 1.0
# ... the query on the server (a lock, an overloaded server: PostgreSQL cancels it) ...
STATEMENT_TIMEOUT_MS = 1000
# ... and the whole read on our side, for a server that stopped answering at all.
READ_DEADLINE_SECONDS = 3.0

# One row whatever the backlog. Both tables are read by index only (no heap, no payloads):
# webhook_failures by (event_id, failed_at) (migration 0004), stripe_events by its primary
# key, one lookup per distinct failed event id. The age is measured from the event's first
# recorded failure, on the database's clock like failed_at itself.
BACKLOG_SQL = """
    SELECT count(*) AS unprocessed,
           coalesce(extract(epoch FROM now() - min(failed.first_failed_at)), 0)::float8
               AS oldest_age_seconds
      FROM (SELECT event_id, min(failed_at) AS first_failed_at
              FROM webhook_failures
             GROUP BY event_id) AS failed
     WHERE failed.first_failed_at < now() - make_interval(secs => %s)
       AND NOT EXISTS (SELECT FROM stripe_events WHERE stripe_events.id = failed.event_id)
"""


@dataclass(frozen=True, slots=True)
class Backlog:
    unprocessed: int
    oldest_age_seconds: float  # 0 when nothing is unprocessed


async def query_backlog(conn) -> Backlog:
    """The backlog, read on `conn` (in a transaction of its own, for SET LOCAL)."""
    async with conn.transaction():
        # SET takes no parameters; the value is our own integer.
        await conn.execute(f"SET LOCAL statement_timeout = {int(STATEMENT_TIMEOUT_MS)}")
        cursor = await conn.execute(BACKLOG_SQL, (GRACE_SECONDS,))
        row = await cursor.fetchone()
    return Backlog(unprocessed=row["unprocessed"], oldest_age_seconds=row["oldest_age_seconds"])


async def read_backlog(pool) -> Backlog | None:
    """The backlog, or None when PostgreSQL did not answer within the bounds above."""
    try:
        async with asyncio.timeout(READ_DEADLINE_SECONDS):
            async with pool.connection(timeout=POOL_WAIT_SECONDS) as conn:
                return await query_backlog(conn)
    except (psycopg.Error, TimeoutError) as exc:  # PoolTimeout and QueryCanceled are psycopg errors
        log.warning("webhook_backlog_not_read", error=f"{type(exc).__name__}: {exc}")
        return None
