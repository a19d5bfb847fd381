"""Redis cache for catalog reads, invalidated by product and price changes.

Each entry lives under one key per name (`catalog:<digest of the name>`) and holds the
value's JSON prefixed with the catalog generation it was loaded under. `invalidate`
bumps the generation, so every entry goes stale at once in O(1) (no KEYS scan); the
next read of a stale entry loads it again and overwrites it. A read is one round trip
(MGET of the generation and the entry), and a hit hands back the stored JSON bytes as
they are, ready to be sent. Redis being down only costs the cache: reads fall back to
PostgreSQL.

On top of Redis each app keeps a `Memo`: the hits it read in the last second, answered
from memory. A hit still costs a Redis round trip, about a quarter of a worker's CPU per
catalog request (`make bench-app`), while the catalog changes a few times a day; with the
memo, a change reaches every worker at most `MEMO_MAX_AGE_SECONDS` after `invalidate`
(at once in the process that calls it).
"""

from __future__ import annotations

import functools
import hashlib
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
# By name: the functions' `redis` parameter (the client) would hide the module.
from redis.exceptions import RedisError

GENERATION_KEY = "catalog:generation"
log = structlog.get_logger("payments.catalog.cache")


MEMO_MAX_AGE_SECONDS = 1.0
# Names are the list and the products (search results are not cached); a full memo
# starts again empty.
MEMO_MAX_ENTRIES = 256


class Memo:
    """An app's copies of recent cache hits: name -> (time read, JSON bytes)."""

    def __init__(self, max_age_seconds: float = MEMO_MAX_AGE_SECONDS) -> None:
        self.max_age_seconds = max_age_seconds
        self._entries: dict[str, tuple[float, bytes]] = {}
        _memos.add(self)

    def get(self, name: str) -> bytes | None:
        entry = self._entries.get(name)
        if entry is None or time.monotonic() - entry[0] >= self.max_age_seconds:
            return None
        return entry[1]

    def put(self, name: str, body: bytes) -> None:
        if len(self._entries) >= MEMO_MAX_ENTRIES:
            self._entries.clear()
        self._entries[name] = (time.monotonic(), body)

    def clear(self) -> None:
        self._entries.clear()


# Every Memo of this process, so that `invalidate` empties them at once.
_memos: weakref.WeakSet[Memo] = weakref.WeakSet()


async def invalidate(redis) -> None:
    """Call after the transaction that changed the catalog has committed; otherwise a
    concurrent read could cache the old rows under the new generation."""
    await redis.incr(GENERATION_KEY)
    for memo in _memos:
        memo.clear()


@functools.lru_cache(maxsize=1024)
def _key(name: str) -> str:
    # Hash the name: a key of bounded length whatever the name. Remembered: the listing's name
    # is hashed on every request otherwise.
    return "catalog:" + hashlib.sha256(name.encode()).hexdigest()[:32]


async def cached_json(redis, name: str, ttl_seconds: int,
                      load: Callable[[], Awaitable[Any]], memo: Memo | None = None) -> tuple[bytes | None, bool]:
    """(JSON bytes, hit): the cached value of `name` (from `memo` while its copy is recent),
    or `load()`'s result encoded and stored for next time. A None result is neither cached
    nor encoded: (None, False)."""
    if memo is not None:
        body = memo.get(name)
        if body is not None:
            return body, True
    key = _key(name)
    try:
        generation, entry = await redis.mget(GENERATION_KEY, key)
    except RedisError as exc:
        log.warning("catalog_cache_unavailable", error=type(exc).__name__)
        value = await load()
        return (None if value is None else orjson.dumps(value)), False
    generation = generation or "0"
    if entry is not None:
        entry_generation, _, body = entry.partition(":")
        if entry_generation == generation:
            body = body.encode()
            if memo is not None:
                memo.put(name, body)
            return body, True
    # Loaded after reading `generation`: if the catalog changes meanwhile, this entry is
    # stored under the old generation and the next read finds it stale.
    value = await load()
    if value is None:
        return None, False
    body = orjson.dumps(value)
    try:
        await redis.set(key, generation.encode() + b":" + body, ex=ttl_seconds)
    except RedisError as exc:
        log.warning("catalog_cache_unavailable", error=type(exc).__name__)
    return body, False

