"""Liveness, readiness and the detailed health report.

/livez: the process answers (Docker HEALTHCHECK). /readyz: PostgreSQL and Redis answer,
so nginx may send traffic (Stripe is deliberately not part of it: an outage at Stripe
must not take every app host out of the pool). /api/health: everything, for people; its
Stripe result may be up to STRIPE_HEALTH_MAX_AGE_SECONDS old (`checks.stripe.age_seconds`).
"""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from payments.health import check_database, check_redis, overall_status


async def livez(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    database, redis = await asyncio.gather(check_database(state.db), check_redis(state.redis))
    checks = {"database": database, "redis": redis}
    ready = all(check["status"] == "ok" for check in checks.values())
    return JSONResponse({"status": "ready" if ready else "not_ready", "checks": checks},
                        status_code=200 if ready else 503)


async def api_health(request: Request) -> JSONResponse:
    state = request.app.state
    database, redis, stripe = await asyncio.gather(
        check_database(state.db), check_redis(state.redis), state.stripe_check.result())
    checks = {"database": database, "redis": redis, "stripe": stripe}
    status = overall_status(checks)
    body = {
        "status": status,
        "version": state.settings.app_version,
        "uptime": round(time.monotonic() - state.started_at, 3),  # seconds
        "checks": checks,
    }
    return JSONResponse(body, status_code=503 if status == "down" else 200)


routes = [
    Route("/livez", livez, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/api/health", api_health, methods=["GET"]),
]
