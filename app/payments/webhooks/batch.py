"""Group commit of the ledger's one-statement claims.

Stripe delivers events in bursts, and most of them change nothing of ours (a type with
no handler, a PaymentIntent of no order of ours): the processor records each in one
statement, in autocommit. For such small inserts the cost is per statement, not per row
(the driver's round trip, PostgreSQL's parse, plan, executor start and commit), so the
claims of concurrent deliveries in one worker are written together, in one statement
and one round trip (`ledger.claim_events_unless_related`), opportunistically:

- while no statement is in flight, a claim is sent at once, alone: no added latency when
  deliveries are few;
- while one is in flight, new claims queue, and go together (at most `MAX_BATCH`) in the
  next statement as soon as it returns.

One writer task per burst sends the statements, each on a connection borrowed from the
pool for it (so the pool's checks and failover apply as to any request). A request that
is cancelled (its client went away) only stops waiting: the writer and the other waiters
carry on.

Ordering: the events of one batch change nothing of ours, so their order does not
matter. One that turns out to be related (an order of ours stored its PaymentIntent) is
not written: its request applies it in a transaction of its own, as without batching.

Duplicates: the same event id delivered twice into one batch is sent once; the first of
its waiters still waiting gets the claim, the others a duplicate. An id written by an
earlier statement, or by another worker, conflicts on the primary key as a single claim
does.

Failures: one row PostgreSQL refuses (a payload jsonb cannot hold) fails the whole
statement. Every waiter of that batch is then told to claim alone, through the
single-event path: only the bad event fails (and its delivery is answered 500).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

import structlog

from payments.webhooks import ledger
from payments.webhooks.handlers.related import OrdersOfPaymentIntent

log = structlog.get_logger("payments.webhooks")

# Bounds one statement's size (and the time the next burst waits for it).
MAX_BATCH = 64

# (related, claimed), or None: the batch failed, claim alone.
ClaimResult = tuple[bool, bool] | None


@dataclass(slots=True)
class _Claim:
    event: dict
    status: str
    related_key: str | None
    # Futures of the deliveries of this event id, in arrival order.
    waiters: list[asyncio.Future]


class ClaimBatcher:
    """One per app (its pool and event loop): see the module's docstring."""

    def __init__(self, pool, *, max_batch: int = MAX_BATCH) -> None:
        self.pool = pool
        self.max_batch = max_batch
        # Batch statements sent, and events they carried (tests, diagnostics).
        self.statements = 0
        self.events = 0
        self._queue: dict[str, _Claim] = {}  # by event id, in arrival order
        self._writer: asyncio.Task | None = None

    async def claim(self, event: dict, *, status: str, payment_intent_id: str | None) -> ClaimResult:
        """Record `event` with `status` unless an order of ours stored `payment_intent_id`
        (None: no lookup). Returns (related, claimed), or None when the batch statement
        failed and the caller must claim the event alone."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        queued = self._queue.get(event["id"])
        if queued is None:
            self._queue[event["id"]] = _Claim(event, status, payment_intent_id, [waiter])
        else:
            queued.waiters.append(waiter)  # a concurrent delivery of the same event
        if self._writer is None:
            self._writer = loop.create_task(self._write_queued())
        return await waiter

    async def _write_queued(self) -> None:
        try:
            while self._queue:
                batch = [self._queue.pop(event_id) for event_id in list(itertools.islice(self._queue, self.max_batch))]
                await self._write(batch)
        finally:
            # Nothing yields between the empty check and here, so no claim is left behind,
            # unless the writer was cancelled (the loop is closing): those claim alone.
            self._writer = None
            for claim in self._queue.values():
                _answer(claim, None)
            self._queue.clear()

    async def _write(self, batch: list[_Claim]) -> None:
        results: list[ClaimResult] | None = None
        try:
            async with self.pool.connection() as conn:
                async with ledger.autocommit(conn):
                    self.statements += 1
                    self.events += len(batch)
                    results = await ledger.claim_events_unless_related(
                        conn, [(claim.event, claim.status, claim.related_key) for claim in batch],
                        related=OrdersOfPaymentIntent.QUERY)
        except Exception as exc:
            log.warning("webhook_claim_batch_failed", events=len(batch), error=f"{type(exc).__name__}: {exc}")
        finally:
            # Also when cancelled: no waiter is left waiting for ever.
            for claim, result in zip(batch, results or itertools.repeat(None)):
                _answer(claim, result)


def _answer(claim: _Claim, result: ClaimResult) -> None:
    for waiter in claim.waiters:
        if waiter.done():
            continue  # cancelled: its client is gone
        waiter.set_result(result)
        if result is not None:
            # Only one delivery of an event claims it.
            result = (result[0], False)
