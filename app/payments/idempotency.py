"""Idempotency-Key for our own POST endpoints that create orders or payments.

A client that retries a request (double click, timeout, flaky network) sends the same
`Idempotency-Key` header and gets the first answer again instead of a second order.
Keys are stored per user in `idempotency_keys`:

- same key, same request (method, path, canonical JSON body): the stored answer again;
- same key, another request: 409 `idempotency_key_reused`;
- same key while the first request still runs: 409 `idempotency_key_in_flight`.

Recovery points, as in Brandur Leach's design for Stripe-like keys: a request that fails
half-way is resumed by the retry from the last point it committed, never started again.
Here the points are held by the key row and the order it made:

1. started: the key is claimed (locked), nothing else is written;
2. order created: the order and `idempotency_keys.order_id` commit in one transaction;
3. Stripe object created: the order stores its Stripe id (placement.py);
4. finished: the answer is stored (`status = 'done'`) and replayed from then on.

The handler gets the claim and resumes from it: an order is never created twice for one
key, and the Stripe call is repeated with the same Stripe idempotency key (from the order
id), so Stripe answers with the object it made the first time. When the request fails:

- nothing was written (bad input): the key is released, it can be used again;
- an order exists (Stripe unanswered, PostgreSQL lost after Stripe answered): the key is
  unlocked and keeps its order; the retry resumes it at once;
- a definite answer that is an error (`FinalError`, e.g. Stripe refused): stored like a
  success and replayed.

A lock outlives its request only when the worker died: after `Settings.idempotency_lock_seconds`
(longer than a request can run, derived from the Stripe timeout and retries) a retry takes it over.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from psycopg.types.json import Jsonb
from starlette.requests import Request
from starlette.responses import JSONResponse

from payments.errors import ApiError, error_body

HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
# Printable ASCII without spaces, as Stripe accepts; UUIDs fit easily.
_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")

log = structlog.get_logger("payments.idempotency")


class FinalError(ApiError):
    """An error that is the request's definite answer (Stripe refused the order): stored under
    the key and replayed like a success, since repeating the request cannot change it."""


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: dict


@dataclass
class Claim:
    """The key, locked for this request. `order_id` is the order an earlier request with the
    key created (resume it), None when there is none yet."""

    user_id: int
    key: str
    locked_at: datetime
    order_id: Any = None

    async def record_order(self, conn, order_id) -> None:
        """Recovery point "order created": call in the transaction that inserts the order."""
        await conn.execute(
            "UPDATE idempotency_keys SET order_id = %s"
            " WHERE user_id = %s AND key = %s AND status = 'in_flight' AND locked_at = %s",
            (order_id, self.user_id, self.key, self.locked_at),
        )
        self.order_id = order_id


Handler = Callable[[Claim | None], Awaitable[tuple[int, dict]]]


def request_hash(method: str, path: str, body: Any) -> str:
    """What makes two requests "the same": key order and whitespace in the JSON do not."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method.upper()} {path}\n{canonical}".encode()).hexdigest()


def key_from(request: Request) -> str | None:
    """The request's Idempotency-Key, None when absent; 400 when malformed."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not _KEY_PATTERN.match(key):
        raise ApiError(400, "invalid_idempotency_key",
                       f"{HEADER} must be 1 to 255 printable ASCII characters without spaces.")
    return key


async def reserve(conn, *, user_id: int, key: str, req_hash: str,
                  lock_seconds: float) -> Claim | StoredResponse:
    """Claim `key` for this request: a Claim means go ahead (resuming `order_id` if set), a
    StoredResponse means replay it.

    `conn` must not be inside a transaction: the claim commits at once, so a concurrent
    request with the same key sees it. An unlocked key (its request failed after writing
    an order) or one locked longer than `lock_seconds` ago is taken over. `created_at` moves
    with the lock, as the release before recovery points expects (it locks by it).
    """
    async with conn.transaction():
        cursor = await conn.execute(
            """
            INSERT INTO idempotency_keys (user_id, key, request_hash, status, locked_at)
            VALUES (%s, %s, %s, 'in_flight', now())
            ON CONFLICT (user_id, key) DO UPDATE
                SET locked_at = now(), created_at = now()
                WHERE idempotency_keys.status = 'in_flight'
                  AND idempotency_keys.request_hash = EXCLUDED.request_hash
                  AND (idempotency_keys.locked_at IS NULL
                       OR idempotency_keys.locked_at < now() - make_interval(secs => %s))
            RETURNING order_id, locked_at
            """,
            (user_id, key, req_hash, lock_seconds),
        )
        claimed = await cursor.fetchone()
        if claimed is not None:
            return Claim(user_id, key, claimed["locked_at"], claimed["order_id"])
        cursor = await conn.execute(
            "SELECT request_hash, status, response_status, response_body"
            " FROM idempotency_keys WHERE user_id = %s AND key = %s",
            (user_id, key),
        )
        row = await cursor.fetchone()
    if row is None:
        # Released by a failed first request between our two statements: the key is free.
        return await reserve(conn, user_id=user_id, key=key, req_hash=req_hash, lock_seconds=lock_seconds)
    if row["request_hash"] != req_hash:
        raise ApiError(409, "idempotency_key_reused",
                       f"This {HEADER} was already used for a different request.")
    if row["status"] == "in_flight":
        raise ApiError(409, "idempotency_key_in_flight",
                       f"A request with this {HEADER} is still being processed; retry later.",
                       {"Retry-After": "2"})
    return StoredResponse(row["response_status"], row["response_body"])


async def complete(conn, claim: Claim, *, status_code: int, body: dict) -> None:
    """Recovery point "finished": the answer, replayed from now on."""
    async with conn.transaction():
        await conn.execute(
            """
            UPDATE idempotency_keys
               SET status = 'done', response_status = %s, response_body = %s, completed_at = now(),
                   locked_at = NULL
             WHERE user_id = %s AND key = %s AND status = 'in_flight' AND locked_at = %s
            """,
            (status_code, Jsonb(body), claim.user_id, claim.key, claim.locked_at),
        )


async def release(conn, claim: Claim) -> None:
    """After a failure: forget a key that wrote nothing; unlock one that has an order, so
    the retry resumes that order."""
    async with conn.transaction():
        await conn.execute(
            "DELETE FROM idempotency_keys WHERE user_id = %s AND key = %s AND status = 'in_flight'"
            " AND locked_at = %s AND order_id IS NULL",
            (claim.user_id, claim.key, claim.locked_at),
        )
        await conn.execute(
            "UPDATE idempotency_keys SET locked_at = NULL WHERE user_id = %s AND key = %s"
            " AND status = 'in_flight' AND locked_at = %s AND order_id IS NOT NULL",
            (claim.user_id, claim.key, claim.locked_at),
        )


async def run_idempotent(request: Request, *, user_id: int, body: Any, handler: Handler) -> JSONResponse:
    """Answer with `handler(claim)` (status, JSON body), at most once per Idempotency-Key.

    Without the header the handler simply runs, with no claim. The key bookkeeping uses its
    own pool connections, so the handler's transactions are independent of it (except
    `Claim.record_order`, which joins the order's).
    """
    key = key_from(request)
    if key is None:
        status_code, payload = await handler(None)
        return JSONResponse(payload, status_code=status_code)

    pool = request.app.state.db
    req_hash = request_hash(request.method, request.url.path, body)
    async with pool.connection() as conn:
        claim = await reserve(conn, user_id=user_id, key=key, req_hash=req_hash,
                              lock_seconds=request.app.state.settings.idempotency_lock_seconds)
    if isinstance(claim, StoredResponse):
        return JSONResponse(claim.body, status_code=claim.status_code, headers={REPLAY_HEADER: "true"})

    try:
        status_code, payload = await handler(claim)
    except FinalError as exc:
        await _after_failure(pool, claim, exc)
        raise
    except BaseException:
        await _after_failure(pool, claim, None)
        raise
    async with pool.connection() as conn:
        await complete(conn, claim, status_code=status_code, body=payload)
    return JSONResponse(payload, status_code=status_code)


async def _after_failure(pool, claim: Claim, final: FinalError | None) -> None:
    """Store a definite error as the answer, or release the key. Best effort: when
    PostgreSQL itself failed this may fail too; the lock then ends after
    idempotency_lock_seconds (a stored refusal is found again by the retry that resumes
    the order). The request's own error is what the client sees."""
    try:
        async with pool.connection() as conn:
            if final is not None:
                await complete(conn, claim, status_code=final.status_code, body=error_body(final.code, final.message))
            else:
                await release(conn, claim)
    except Exception as exc:
        log.warning("idempotency_key_not_released", key=claim.key, error=f"{type(exc).__name__}: {exc}")
