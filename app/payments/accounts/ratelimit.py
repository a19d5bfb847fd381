"""Fixed-window attempt counters in Redis: sign-in and sign-up, and orders per user.

nginx limits requests per address first; this counts per client address and per email
across every app host, so spreading attempts over hosts or addresses does not help. Orders
are counted per signed-in user: each one writes rows and makes Stripe calls, and one
account spread over many addresses must not get more of them.
"""

from __future__ import annotations

import hashlib

from starlette.requests import Request

from payments.errors import ApiError
from payments.http import client_ip


async def count_attempt(redis, key: str, window_seconds: int) -> tuple[int, int]:
    """(attempts in the current window including this one, seconds until it resets)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, window_seconds, nx=True)  # the first attempt starts the window
        pipe.ttl(key)
        count, _, ttl = await pipe.execute()
    return count, ttl if ttl > 0 else window_seconds


async def enforce_auth_limits(request: Request, action: str, email: str) -> None:
    """Count this attempt; 429 with Retry-After when the address or the email is over its limit."""
    state = request.app.state
    settings = state.settings
    window = settings.auth_rate_limit_window_seconds
    email_digest = hashlib.sha256(email.encode()).hexdigest()
    limits = [
        (f"ratelimit:{action}:ip:{client_ip(request) or 'unknown'}", settings.auth_rate_limit_per_ip),
        (f"ratelimit:{action}:email:{email_digest}", settings.auth_rate_limit_per_email),
    ]
    retry_after = 0
    for key, limit in limits:
        count, reset_in = await count_attempt(state.redis, key, window)
        if count > limit:
            retry_after = max(retry_after, reset_in)
    if retry_after:
        raise ApiError(429, "rate_limited", "Too many attempts; try again later.",
                       {"Retry-After": str(retry_after)})


async def enforce_order_limit(state, user_id: int) -> None:
    """Count a new order of `user_id` (not a replay or a resumed order of an Idempotency-Key);
    429 with Retry-After over ORDER_RATE_LIMIT_PER_USER per ORDER_RATE_LIMIT_WINDOW_SECONDS."""
    settings = state.settings
    window = settings.order_rate_limit_window_seconds
    count, reset_in = await count_attempt(state.redis, f"ratelimit:orders:user:{user_id}", window)
    if count > settings.order_rate_limit_per_user:
        raise ApiError(429, "order_rate_limited",
                       f"At most {settings.order_rate_limit_per_user} orders per {window} s per account;"
                       f" try again in {reset_in} s.",
                       {"Retry-After": str(reset_in)})
