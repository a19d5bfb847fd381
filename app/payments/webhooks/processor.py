"""Applying one verified event exactly once.

The event row and the handler's effects are written in one transaction:

- a duplicate delivery finds the row and does nothing ("duplicate");
- two concurrent deliveries serialize on the row's primary key, so one applies it;
- a handler that raises rolls everything back, the failure is written to
  webhook_failures in a second transaction, and the caller answers 500 so Stripe
  retries; the retry finds no row and applies the event.

An event that changes nothing of ours is recorded in a single statement, in autocommit
(the statement is its transaction): one round trip to PostgreSQL instead of three or four
(BEGIN, the claim, the handler's lookup, COMMIT). That is an event of a type without a handler, and
one whose handler family's `RELATED` query finds no row of ours (checked in the same
statement as the claim, so nothing can slip in between).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator

import structlog

from payments.webhooks import ledger
from payments.webhooks.context import WebhookContext
from payments.webhooks.handlers import HANDLERS, RELATED

log = structlog.get_logger("payments.webhooks")

PROCESSED = "processed"
DUPLICATE = "duplicate"
IGNORED = "ignored"


class HandlerFailed(Exception):
    """The event's handler raised; its transaction was rolled back."""


async def process_event(pool, event: dict, *, redis=None, stripe=None, handlers=None) -> str:
    """Apply `event`; returns PROCESSED, DUPLICATE or IGNORED, raises HandlerFailed."""
    if handlers is None:
        handlers, related = HANDLERS, RELATED.get(event["type"])
    else:
        related = None  # handlers given by the caller (tests) always run
    handler = handlers.get(event["type"])
    async with pool.connection() as conn:
        context = WebhookContext(conn=conn, redis=redis, stripe=stripe)
        try:
            if handler is None:
                # Stored anyway: the ledger shows everything Stripe sent.
                async with _autocommit(conn):
                    claimed = await ledger.claim_event(conn, event, status=IGNORED)
                return IGNORED if claimed else DUPLICATE
            query = related(event) if related is not None else None
            if query is not None:
                async with _autocommit(conn):
                    found, claimed = await ledger.claim_unless_related(
                        conn, event, status=PROCESSED, related=query[0], related_params=query[1])
                if not found:  # recorded (or a duplicate): the handler would do nothing
                    return PROCESSED if claimed else DUPLICATE
            async with conn.transaction():
                if not await ledger.claim_event(conn, event, status=PROCESSED):
                    return DUPLICATE
                await handler(context, event)
        except Exception as exc:
            log.error("webhook_handler_failed", event_id=event["id"], event_type=event["type"],
                      error=f"{type(exc).__name__}: {exc}")
            await _record_failure(conn, event, exc)
            raise HandlerFailed(event["id"]) from exc
    await _run_after_commit(context, event)
    return PROCESSED


@contextlib.asynccontextmanager
async def _autocommit(conn) -> AsyncIterator[None]:
    """For one statement that is its own transaction: no BEGIN and COMMIT round trips.
    The pool's connections are otherwise in transaction mode; this puts it back."""
    await conn.set_autocommit(True)
    try:
        yield
    finally:
        if not conn.closed:
            await conn.set_autocommit(False)


async def _record_failure(conn, event: dict, exc: Exception) -> None:
    try:
        async with conn.transaction():
            await ledger.record_failure(conn, event, exc)
    except Exception as record_exc:  # the database itself may be what failed
        log.error("webhook_failure_not_recorded", event_id=event["id"],
                  error=f"{type(record_exc).__name__}: {record_exc}")


async def _run_after_commit(context: WebhookContext, event: dict) -> None:
    # The event is committed: a failing side effect (Redis down) is logged, not retried.
    for effect in context.after_commit:
        try:
            result = effect()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            log.warning("webhook_after_commit_failed", event_id=event["id"],
                        error=f"{type(exc).__name__}: {exc}")
