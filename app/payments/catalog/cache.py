"""Redis cache for catalog reads, invalidated by product and price changes.

Keys carry a generation number; `invalidate` bumps it, so every cached entry goes stale
at once in O(1) (no KEYS scan) and old entries expire on their own TTL. Redis being down
only costs the cache: reads fall back to PostgreSQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import redis.exceptions
import structlog

from payments.cache import get_json, set_json

GENERATION_KEY = "catalog:generation"
log = structlog.get_logger("payments.catalog.cache")


async def invalidate(redis) -> None:
    """Call after the transaction that changed the catalog has committed; otherwise a
    concurrent read could cache the old rows under the new generation."""
    await redis.incr(GENERATION_KEY)


def _key(generation: str, name: str) -> str:
    # Hash the name: it may hold search text of any shape.
    digest = hashlib.sha256(name.encode()).hexdigest()[:32]
    return f"catalog:{generation}:{digest}"


async def cached(redis, name: str, ttl_seconds: int, load: Callable[[], Awaitable[Any]]) -> tuple[Any, bool]:
    """(value, hit): the cached value of `name`, or `load()`'s result, stored for next time."""
    try:
        generation = await redis.get(GENERATION_KEY) or "0"
        key = _key(generation, name)
        value = await get_json(redis, key)
        if value is not None:
            return value, True
    except redis.exceptions.RedisError as exc:
        log.warning("catalog_cache_unavailable", error=type(exc).__name__)
        return await load(), False
    value = await load()
    try:
        await set_json(redis, key, value, ttl_seconds)
    except redis.exceptions.RedisError as exc:
        log.warning("catalog_cache_unavailable", error=type(exc).__name__)
    return value, False
