"""Idempotency-Key for our own POST endpoints that create orders or payments.

A client that retries a request (double click, timeout, flaky network) sends the same
`Idempotency-Key` header and gets the first response again instead of a second order.
Keys are stored per user in `idempotency_keys`:

- same key, same request (method, path, canonical JSON body): the stored response again;
- same key, another request: 409 `idempotency_key_reused`;
- same key while the first request still runs: 409 `idempotency_key_in_flight`.

As at Stripe, only a completed response is kept: when the request fails (bad input,
Stripe down) the key is released so the client can retry with it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb
from starlette.requests import Request
from starlette.responses import JSONResponse

from payments.errors import ApiError

HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
# Printable ASCII without spaces, as Stripe accepts; UUIDs fit easily.
_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
# A request still "in flight" after this long died with its worker; a retry may take
# the key over. Longer than a request can run (Stripe timeout x retries).
IN_FLIGHT_TIMEOUT_SECONDS = 120

Handler = Callable[[], Awaitable[tuple[int, dict]]]


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: dict


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


async def reserve(conn, *, user_id: int, key: str, req_hash: str) -> StoredResponse | None:
    """Claim `key` for this request: None means go ahead, a StoredResponse means replay it.

    `conn` must not be inside a transaction: the claim commits at once, so a concurrent
    request with the same key sees it.
    """
    async with conn.transaction():
        cursor = await conn.execute(
            """
            INSERT INTO idempotency_keys (user_id, key, request_hash, status)
            VALUES (%s, %s, %s, 'in_flight')
            ON CONFLICT (user_id, key) DO UPDATE
                SET created_at = now()
                WHERE idempotency_keys.status = 'in_flight'
                  AND idempotency_keys.request_hash = EXCLUDED.request_hash
                  AND idempotency_keys.created_at < now() - make_interval(secs => %s)
            RETURNING key
            """,
            (user_id, key, req_hash, IN_FLIGHT_TIMEOUT_SECONDS),
        )
        if await cursor.fetchone() is not None:
            return None
        cursor = await conn.execute(
            "SELECT request_hash, status, response_status, response_body"
            " FROM idempotency_keys WHERE user_id = %s AND key = %s",
            (user_id, key),
        )
        row = await cursor.fetchone()
    if row is None:
        # Released by a failed first request between our two statements: the key is free.
        return await reserve(conn, user_id=user_id, key=key, req_hash=req_hash)
    if row["request_hash"] != req_hash:
        raise ApiError(409, "idempotency_key_reused",
                       f"This {HEADER} was already used for a different request.")
    if row["status"] == "in_flight":
        raise ApiError(409, "idempotency_key_in_flight",
                       f"A request with this {HEADER} is still being processed; retry later.")
    return StoredResponse(row["response_status"], row["response_body"])


async def complete(conn, *, user_id: int, key: str, status_code: int, body: dict) -> None:
    async with conn.transaction():
        await conn.execute(
            """
            UPDATE idempotency_keys
               SET status = 'done', response_status = %s, response_body = %s, completed_at = now()
             WHERE user_id = %s AND key = %s AND status = 'in_flight'
            """,
            (status_code, Jsonb(body), user_id, key),
        )


async def release(conn, *, user_id: int, key: str) -> None:
    async with conn.transaction():
        await conn.execute(
            "DELETE FROM idempotency_keys WHERE user_id = %s AND key = %s AND status = 'in_flight'",
            (user_id, key),
        )


async def run_idempotent(request: Request, *, user_id: int, body: Any, handler: Handler) -> JSONResponse:
    """Answer with `handler()` (status, JSON body), at most once per Idempotency-Key.

    Without the header the handler simply runs. The key bookkeeping uses its own pool
    connection, so the handler's transactions are independent of it.
    """
    key = key_from(request)
    if key is None:
        status_code, payload = await handler()
        return JSONResponse(payload, status_code=status_code)

    pool = request.app.state.db
    req_hash = request_hash(request.method, request.url.path, body)
    async with pool.connection() as conn:
        stored = await reserve(conn, user_id=user_id, key=key, req_hash=req_hash)
    if stored is not None:
        return JSONResponse(stored.body, status_code=stored.status_code, headers={REPLAY_HEADER: "true"})

    try:
        status_code, payload = await handler()
    except BaseException:
        async with pool.connection() as conn:
            await release(conn, user_id=user_id, key=key)
        raise
    async with pool.connection() as conn:
        await complete(conn, user_id=user_id, key=key, status_code=status_code, body=payload)
    return JSONResponse(payload, status_code=status_code)
