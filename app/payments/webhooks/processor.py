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
one whose handler family's `RELATED` lookup finds no row of ours (checked in the same
statement as the claim, so nothing can slip in between). Given the app's `ClaimBatcher`,
concurrent such events share that statement (batch.py).
"""

from __future__ import annotations

import inspect

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


async def process_event(pool, event: dict, *, redis=None, stripe=None, handlers=None, claims=None) -> str:
    """Apply `event`; returns PROCESSED, DUPLICATE or IGNORED, raises HandlerFailed.

    `claims`: the app's ClaimBatcher, to record an event that changes nothing of ours
    together with concurrent ones; without it, each is recorded alone."""
    if handlers is None:
        handlers, related = HANDLERS, RELATED.get(event["type"])
    else:
        related = None  # handlers given by the caller (tests) always run
    handler = handlers.get(event["type"])
    # No handler: stored anyway, the ledger shows everything Stripe sent.
    lookup = related(event) if handler is not None and related is not None else None
    one_statement = handler is None or lookup is not None
    if one_statement and claims is not None:
        result = await claims.claim(event, status=IGNORED if handler is None else PROCESSED,
                                    payment_intent_id=lookup.payment_intent_id if lookup else None)
        if result is not None:  # None: its batch failed, so it is claimed alone below
            found, claimed = result
            if not found:
                return (IGNORED if handler is None else PROCESSED) if claimed else DUPLICATE
            one_statement = False  # an order of ours: applied in a transaction
    async with pool.connection() as conn:
        context = WebhookContext(conn=conn, redis=redis, stripe=stripe)
        try:
            if handler is None:
                async with ledger.autocommit(conn):
                    claimed = await ledger.claim_event(conn, event, status=IGNORED)
                return IGNORED if claimed else DUPLICATE
            if one_statement:
                async with ledger.autocommit(conn):
                    found, claimed = await ledger.claim_unless_related(
                        conn, event, status=PROCESSED, related=lookup.QUERY,
                        related_params=(lookup.payment_intent_id,))
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
