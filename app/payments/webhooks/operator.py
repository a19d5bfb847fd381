"""Failed webhooks, for an operator: list them, replay one, or settle one without applying it.

A failed event is what the backlog gauges count (backlog.py): an event id with rows in
`webhook_failures` and none in `stripe_events`. Stripe retries it for three days and then
gives up; these functions let staff act on it before or after that, from the CLI
(`python -m payments webhooks ...`) or the admin API (routes/admin_webhooks.py).

- `list_failed`: every such event, oldest first failure first, with its attempts (failed
  deliveries) and its latest error. Unlike the gauges, no grace period: an operator looking
  at one wants to see it.
- `replay`: runs the event's handler again on the payload stored with its latest failure,
  through the processor like a delivery (so a concurrent delivery from Stripe applies it at
  most once with it). Handlers that need Stripe's current state re-fetch it themselves
  (invoices, subscriptions). The audit row of a successful replay commits with the
  handler's effects; a replay that fails leaves one more `webhook_failures` row and its
  own audit row.
- `ignore`: records the event as settled without applying it: its `stripe_events` row,
  status 'ignored', with the operator's reason (migration 0005); a later delivery from
  Stripe is then a duplicate. The audit row commits in the same transaction.

Nothing here knows HTTP: errors are `OperatorError`s with a stable code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from payments import audit
from payments.webhooks import ledger
from payments.webhooks.handlers import HANDLERS
from payments.webhooks.processor import DUPLICATE, IGNORED, HandlerFailed, process_event

MAX_REASON_CHARS = 1000
DEFAULT_LIMIT = 500

FAILED_SQL = """
    SELECT f.event_id, f.event_type, count(*) AS attempts,
           min(f.failed_at) AS first_failed_at, max(f.failed_at) AS last_failed_at,
           extract(epoch FROM now() - min(f.failed_at))::float8 AS age_seconds,
           (array_agg(f.error ORDER BY f.failed_at DESC, f.id DESC))[1] AS last_error
      FROM webhook_failures AS f
     WHERE NOT EXISTS (SELECT FROM stripe_events WHERE stripe_events.id = f.event_id)
     GROUP BY f.event_id, f.event_type
     ORDER BY first_failed_at, f.event_id
     LIMIT %s
"""


class OperatorError(Exception):
    """Something the operator can act on; `code` is stable, the message is for people."""

    code = "webhook_operator_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class EventNotFound(OperatorError):
    code = "webhook_event_not_found"


class EventAlreadySettled(OperatorError):
    code = "webhook_event_already_processed"


class ReasonRequired(OperatorError):
    code = "reason_required"


class ReplayFailed(OperatorError):
    code = "webhook_replay_failed"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts, for the audit row: an admin user through the API, or the CLI's OS user."""

    via: str  # "api" or "cli"
    user_id: int | None = None
    ip: str | None = None
    name: str | None = None

    def details(self) -> dict:
        found = {"via": self.via}
        if self.name:
            found["operator"] = self.name
        return found


@dataclass(frozen=True, slots=True)
class FailedEvent:
    event_id: str
    event_type: str
    attempts: int
    last_error: str
    first_failed_at: datetime
    last_failed_at: datetime
    age_seconds: float

    def as_json(self) -> dict:
        return {"id": self.event_id, "type": self.event_type, "attempts": self.attempts,
                "error": self.last_error, "first_failed_at": self.first_failed_at.isoformat(),
                "last_failed_at": self.last_failed_at.isoformat(), "age_seconds": round(self.age_seconds, 1)}


@dataclass(frozen=True, slots=True)
class Settled:
    event_id: str
    event_type: str
    outcome: str  # "processed" (replayed), "ignored" (no handler any more, or ignore)
    details: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"id": self.event_id, "type": self.event_type, "outcome": self.outcome, **self.details}


async def list_failed(conn, *, limit: int = DEFAULT_LIMIT) -> list[FailedEvent]:
    cursor = await conn.execute(FAILED_SQL, (limit,))
    return [FailedEvent(event_id=row["event_id"], event_type=row["event_type"], attempts=row["attempts"],
                        last_error=row["last_error"], first_failed_at=row["first_failed_at"],
                        last_failed_at=row["last_failed_at"], age_seconds=row["age_seconds"])
            for row in await cursor.fetchall()]


async def _failed_event(conn, event_id: str) -> dict:
    """The payload stored with the event's latest failure; raises unless it is still failed."""
    cursor = await conn.execute("SELECT status FROM stripe_events WHERE id = %s", (event_id,))
    stored = await cursor.fetchone()
    if stored is not None:
        raise EventAlreadySettled(f"Event {event_id} is already {stored['status']}; there is nothing to do.")
    cursor = await conn.execute(
        "SELECT payload FROM webhook_failures WHERE event_id = %s ORDER BY failed_at DESC, id DESC LIMIT 1",
        (event_id,))
    failure = await cursor.fetchone()
    if failure is None:
        raise EventNotFound(f"No failed webhook event {event_id}.")
    return failure["payload"]


def _audited(handler, action_details):
    async def run(context, event):
        await handler(context, event)
        # In the handler's transaction: the audit row commits with the replay's effects.
        await audit.record(context.conn, **action_details("admin.webhook_replayed", "processed"))
    return run


async def replay(pool, event_id: str, *, actor: Actor, redis=None, stripe=None) -> Settled:
    async with pool.connection() as conn:
        event = await _failed_event(conn, event_id)

    def action_details(action: str, outcome: str, **extra) -> dict:
        return {"action": action, "user_id": actor.user_id, "ip": actor.ip,
                "details": {"event_id": event_id, "event_type": event["type"], "outcome": outcome,
                            **actor.details(), **extra}}

    handler = HANDLERS.get(event["type"])
    handlers = {} if handler is None else {event["type"]: _audited(handler, action_details)}
    try:
        outcome = await process_event(pool, event, redis=redis, stripe=stripe, handlers=handlers)
    except HandlerFailed as exc:
        cause = exc.__cause__
        error = f"{type(cause).__name__}: {cause}"[:ledger.MAX_ERROR_CHARS] if cause else "unknown error"
        async with pool.connection() as conn:
            async with conn.transaction():
                await audit.record(conn, **action_details("admin.webhook_replay_failed", "error", error=error))
        raise ReplayFailed(f"Event {event_id} failed again: {error}") from None
    if outcome == DUPLICATE:  # a delivery from Stripe applied it since we looked
        raise EventAlreadySettled(f"Event {event_id} was processed meanwhile; there is nothing to do.")
    if outcome == IGNORED:  # its type has no handler any more: recorded, nothing applied
        async with pool.connection() as conn:
            async with conn.transaction():
                await audit.record(conn, **action_details("admin.webhook_replayed", IGNORED))
    return Settled(event_id=event_id, event_type=event["type"], outcome=outcome)


async def ignore(pool, event_id: str, *, reason: str | None, actor: Actor) -> Settled:
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired("Say why the event is settled without applying it (a reason is required).")
    if len(reason) > MAX_REASON_CHARS:
        raise ReasonRequired(f"The reason is longer than {MAX_REASON_CHARS} characters.")
    async with pool.connection() as conn:
        async with conn.transaction():
            event = await _failed_event(conn, event_id)
            cursor = await conn.execute(
                """
                INSERT INTO stripe_events (id, type, created, payload, status, processed_at, ignored_reason)
                VALUES (%s, %s, %s, %s, 'ignored', now(), %s)
                ON CONFLICT (id) DO NOTHING
                RETURNING id
                """,
                (event["id"], event["type"], ledger.event_time(event), ledger.payload_json(event), reason))
            if await cursor.fetchone() is None:  # a delivery applied it since we looked
                raise EventAlreadySettled(f"Event {event_id} was processed meanwhile; there is nothing to do.")
            await audit.record(conn, action="admin.webhook_ignored", user_id=actor.user_id, ip=actor.ip,
                               details={"event_id": event_id, "event_type": event["type"], "reason": reason,
                                        **actor.details()})
    return Settled(event_id=event_id, event_type=event["type"], outcome=IGNORED, details={"reason": reason})
