"""The stripe_events table (one row per event id) and webhook_failures."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
from psycopg.types.json import Jsonb

# Enough of a failure to diagnose it, bounded so a huge message cannot bloat the table.
MAX_ERROR_CHARS = 2000


def _payload(event: dict) -> Jsonb:
    # The event came in as JSON, so orjson can write it back (several times faster than json).
    return Jsonb(event, orjson.dumps)


def event_time(event: dict) -> datetime:
    return datetime.fromtimestamp(event["created"], tz=timezone.utc)


async def claim_event(conn, event: dict, *, status: str) -> bool:
    """Insert the event row; False when it is already there (a duplicate delivery).

    Run inside the transaction that applies the event: a concurrent delivery of the same
    id waits on the primary key until this transaction ends, then finds the row (commit)
    or claims it itself (rollback).
    """
    cursor = await conn.execute(
        """
        INSERT INTO stripe_events (id, type, created, payload, status, processed_at)
        VALUES (%s, %s, %s, %s, %s, now())
        ON CONFLICT (id) DO NOTHING
        RETURNING id
        """,
        (event["id"], event["type"], event_time(event), _payload(event), status),
    )
    return await cursor.fetchone() is not None


async def record_failure(conn, event: dict, error: BaseException) -> None:
    """Run in its own transaction, after the event's transaction rolled back."""
    message = f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]
    await conn.execute(
        "INSERT INTO webhook_failures (event_id, event_type, error, payload) VALUES (%s, %s, %s, %s)",
        (event["id"], event["type"], message, _payload(event)),
    )
