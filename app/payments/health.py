"""Dependency checks behind /readyz and /api/health: plain functions, testable alone.

Each check returns {"status": "ok"|"fail", "latency_ms": ..., "error": ...} and never
raises; a check that hangs is cut off after CHECK_TIMEOUT_SECONDS.
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


def overall_status(checks: dict[str, dict]) -> str:
    """ok; degraded when only Stripe fails (we can still serve pages); down otherwise."""
    failing = {name for name, check in checks.items() if check["status"] != "ok"}
    if failing - {"stripe"}:
        return "down"
    return "degraded" if failing else "ok"
