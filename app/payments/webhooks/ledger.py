"""The stripe_events table (one row per event id) and webhook_failures."""

from __future__ import annotations

import functools
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


def _claim_params(event: dict, status: str) -> tuple:
    return (event["id"], event["type"], event_time(event), _payload(event), status)


async def claim_event(conn, event: dict, *, status: str) -> bool:
    """Insert the event row; False when it is already there (a duplicate delivery).

    Run inside the transaction that applies the event (alone, in autocommit, for an event
    with nothing to apply): a concurrent delivery of the same id waits on the primary key
    until this transaction ends, then finds the row (commit) or claims it itself
    (rollback).
    """
    cursor = await conn.execute(
        """
        INSERT INTO stripe_events (id, type, created, payload, status, processed_at)
        VALUES (%s, %s, %s, %s, %s, now())
        ON CONFLICT (id) DO NOTHING
        RETURNING id
        """,
        _claim_params(event, status),
    )
    return await cursor.fetchone() is not None


@functools.cache
def _claim_unless_related_sql(related: str) -> str:
    # One text per `related` query, built once: the server prepares it like any other.
    return f"""
        WITH related AS ({related} LIMIT 1),
             claimed AS (
                 INSERT INTO stripe_events (id, type, created, payload, status, processed_at)
                 SELECT %s, %s, %s, %s, %s, now()
                  WHERE NOT EXISTS (SELECT FROM related)
                 ON CONFLICT (id) DO NOTHING
                 RETURNING id)
        SELECT EXISTS (SELECT FROM related) AS related, EXISTS (SELECT FROM claimed) AS claimed
        """


async def claim_unless_related(conn, event: dict, *, status: str, related: str,
                               related_params: tuple) -> tuple[bool, bool]:
    """(related, claimed) in one statement: insert the event row unless `related` (a
    constant query for rows of ours the event could change) finds one.

    For an autocommit connection: the statement is then the event's whole transaction,
    which is right only because the event changes nothing of ours. When `related` finds
    a row, nothing is written and the caller applies the event in a transaction. A
    concurrent delivery of the same id waits on the primary key as in `claim_event`.
    """
    cursor = await conn.execute(_claim_unless_related_sql(related),
                                (*related_params, *_claim_params(event, status)))
    row = await cursor.fetchone()
    return row["related"], row["claimed"]


async def record_failure(conn, event: dict, error: BaseException) -> None:
    """Run in its own transaction, after the event's transaction rolled back."""
    message = f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]
    await conn.execute(
        "INSERT INTO webhook_failures (event_id, event_type, error, payload) VALUES (%s, %s, %s, %s)",
        (event["id"], event["type"], message, _payload(event)),
    )
