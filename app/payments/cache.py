"""Redis: one client per process (sessions, rate limits and the catalog cache share it)."""

from __future__ import annotations

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
