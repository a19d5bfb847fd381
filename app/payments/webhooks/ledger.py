"""The stripe_events table (one row per event id) and webhook_failures."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timezone

import orjson
from psycopg.types.json import Jsonb

# Enough of a failure to diagnose it, bounded so a huge message cannot bloat the table.
MAX_ERROR_CHARS = 2000


def payload_json(event: dict) -> Jsonb:
    # The event came in as JSON, so orjson can write it back (several times faster than json).
    return Jsonb(event, orjson.dumps)


def event_time(event: dict) -> datetime:
    return datetime.fromtimestamp(event["created"], tz=timezone.utc)


def _claim_params(event: dict, status: str) -> tuple:
    return (event["id"], event["type"], event_time(event), payload_json(event), status)


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


@functools.cache
def _claim_events_unless_related_sql(related: str) -> str:
    # `related` is the one-event query; its one parameter becomes each row's related_key.
    if related.count("%s") != 1:
        raise ValueError(f"a related query takes one parameter: {related!r}")
    per_row = related.replace("%s", "claim.related_key")
    # Binary parameters: arrays of text need no quoting; the payloads are JSON text that
    # PostgreSQL parses into jsonb. Inserted in id order: two workers' batches take the
    # primary key's locks in the same order, so they cannot deadlock.
    return f"""
        WITH claim AS (
                 SELECT claim.*, EXISTS ({per_row}) AS related
                   FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::text[], %b::text[], %b::text[])
                        WITH ORDINALITY AS claim (id, type, created, payload, status, related_key, n)),
             claimed AS (
                 INSERT INTO stripe_events (id, type, created, payload, status, processed_at)
                 SELECT id, type, to_timestamp(created), payload::jsonb, status, now()
                   FROM claim
                  WHERE NOT related
                  ORDER BY id
                 ON CONFLICT (id) DO NOTHING
                 RETURNING id)
        SELECT claim.id, claim.related, claimed.id IS NOT NULL AS claimed
          FROM claim LEFT JOIN claimed USING (id)
         ORDER BY claim.n
        """


async def claim_events_unless_related(conn, claims: Sequence[tuple[dict, str, str | None]], *,
                                      related: str) -> list[tuple[bool, bool]]:
    """`claim_unless_related` for many events in one statement: for each (event, status,
    related_key), in order, (related, claimed). `related` is the one-event query, run per
    row with the row's key (a NULL key finds nothing).

    The events' ids must be distinct. For an autocommit connection, as
    `claim_unless_related`: every row is then written or not in one transaction, and one
    row PostgreSQL refuses (a payload jsonb cannot hold) fails them all.
    """
    cursor = await conn.execute(_claim_events_unless_related_sql(related), (
        [event["id"] for event, _, _ in claims],
        [event["type"] for event, _, _ in claims],
        [event["created"] for event, _, _ in claims],
        [orjson.dumps(event).decode() for event, _, _ in claims],
        [status for _, status, _ in claims],
        [key for _, _, key in claims],
    ))
    return [(row["related"], row["claimed"]) for row in await cursor.fetchall()]


@contextlib.asynccontextmanager
async def autocommit(conn) -> AsyncIterator[None]:
    """For statements that are each their own transaction: no BEGIN and COMMIT round trips.
    The pool's connections are otherwise in transaction mode; this puts it back."""
    await conn.set_autocommit(True)
    try:
        yield
    finally:
        if not conn.closed:
            await conn.set_autocommit(False)


async def record_failure(conn, event: dict, error: BaseException) -> None:
    """Run in its own transaction, after the event's transaction rolled back."""
    message = f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]
    await conn.execute(
        "INSERT INTO webhook_failures (event_id, event_type, error, payload) VALUES (%s, %s, %s, %s)",
        (event["id"], event["type"], message, payload_json(event)),
    )
