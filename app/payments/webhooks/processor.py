"""Applying one verified event exactly once.

The event row and the handler's effects are written in one transaction:

- a duplicate delivery finds the row and does nothing ("duplicate");
- two concurrent deliveries serialize on the row's primary key, so one applies it;
- a handler that raises rolls everything back, the failure is written to
  webhook_failures in a second transaction, and the caller answers 500 so Stripe
  retries; the retry finds no row and applies the event.
"""

from __future__ import annotations

import inspect

import structlog

from payments.webhooks import ledger
from payments.webhooks.context import WebhookContext
from payments.webhooks.handlers import HANDLERS

log = structlog.get_logger("payments.webhooks")

PROCESSED = "processed"
DUPLICATE = "duplicate"
IGNORED = "ignored"


class HandlerFailed(Exception):
    """The event's handler raised; its transaction was rolled back."""


async def process_event(pool, event: dict, *, redis=None, stripe=None, handlers=None) -> str:
    """Apply `event`; returns PROCESSED, DUPLICATE or IGNORED, raises HandlerFailed."""
    handler = (HANDLERS if handlers is None else handlers).get(event["type"])
    async with pool.connection() as conn:
        context = WebhookContext(conn=conn, redis=redis, stripe=stripe)
        try:
            async with conn.transaction():
                status = PROCESSED if handler is not None else IGNORED
                if not await ledger.claim_event(conn, event, status=status):
                    return DUPLICATE
                if handler is None:
                    # Stored anyway: the ledger shows everything Stripe sent.
                    return IGNORED
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
