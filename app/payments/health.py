"""Dependency checks behind /readyz and /api/health: plain functions, testable alone.

Each check returns {"status": "ok"|"fail", "latency_ms": ..., "error": ...} and never
raises; a check that hangs is cut off after CHECK_TIMEOUT_SECONDS.

The Stripe check is a call to Stripe's API, which has a rate limit of its own: /api/health
reuses its last result for STRIPE_HEALTH_MAX_AGE_SECONDS (`CachedCheck`, one per process,
created by the lifespan), and says how old the result is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from payments.db import recheck_pool

CHECK_TIMEOUT_SECONDS = 2.0


async def _timed(probe: Callable[[], Awaitable[object]]) -> dict:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            await probe()
    except Exception as exc:  # any failure means "not answering"; the type says which
        return {"status": "fail", "error": type(exc).__name__}
    return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


async def check_database(pool) -> dict:
    async def probe() -> None:
        async with pool.connection(timeout=CHECK_TIMEOUT_SECONDS) as conn:
            await conn.execute("SELECT 1")

    result = await _timed(probe)
    if result["status"] != "ok":
        # The load balancer asks often: a dead connection found here clears out its siblings.
        recheck_pool(pool)
    return result


async def check_redis(redis) -> dict:
    return await _timed(redis.ping)


async def check_stripe(stripe) -> dict:
    # No retries: a health probe should report the first failure, not wait out backoff.
    return await _timed(lambda: stripe.v1.balance.retrieve_async(options={"max_network_retries": 0}))


class CachedCheck:
    """A check's last result, reused while younger than `max_age_seconds`; callers arriving
    while it runs wait for that one run instead of starting their own."""

    def __init__(self, check: Callable[[], Awaitable[dict]], max_age_seconds: float) -> None:
        self._check = check
        self.max_age_seconds = max_age_seconds
        self._result: dict | None = None
        self._checked_at = 0.0
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return self._result is not None and time.monotonic() - self._checked_at < self.max_age_seconds

    async def result(self) -> dict:
        """The result with `age_seconds`: how long ago the check ran."""
        if not self._fresh():
            async with self._lock:
                if not self._fresh():
                    self._result = await self._check()
                    self._checked_at = time.monotonic()
        return {**self._result, "age_seconds": round(time.monotonic() - self._checked_at, 1)}


def overall_status(checks: dict[str, dict]) -> str:
    """ok; degraded when only Stripe fails (we can still serve pages); down otherwise."""
    failing = {name for name, check in checks.items() if check["status"] != "ok"}
    if failing - {"stripe"}:
        return "down"
    return "degraded" if failing else "ok"
