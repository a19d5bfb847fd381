"""Redis: one client per process, plus small JSON get/set helpers for caches."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis


def create_redis(url: str, max_connections: int = 50) -> aioredis.Redis:
    """A client with short timeouts: a hung Redis must fail requests fast, not pile them up."""
    return aioredis.from_url(
        url,
        decode_responses=True,
        max_connections=max_connections,
        socket_connect_timeout=2,
        socket_timeout=2,
        health_check_interval=30,
    )


async def get_json(redis: aioredis.Redis, key: str) -> Any | None:
    raw = await redis.get(key)
    return None if raw is None else json.loads(raw)


async def set_json(redis: aioredis.Redis, key: str, value: Any, ttl_seconds: int) -> None:
    await redis.set(key, json.dumps(value, separators=(",", ":")), ex=ttl_seconds)
