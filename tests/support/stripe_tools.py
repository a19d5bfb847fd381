"""Client helpers for the Stripe stand-in (roles/lab_services/files/stripe_stub.py in front
of localstripe): register a webhook endpoint, forget every object, sign a payload as Stripe
does. Plain functions for tests, benchmarks and `make dev`."""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.request
from urllib.parse import urlencode


def register_webhook(api_base: str, url: str, secret: str, events: list[str] | None = None,
                     endpoint_id: str = "app") -> None:
    """Have the stub send signed events (localstripe's and its own) to `url`.

    Registering the same `endpoint_id` again replaces the endpoint.
    """
    data = [("url", url), ("secret", secret)] + [("events[]", e) for e in events or []]
    request = urllib.request.Request(
        f"{api_base.rstrip('/')}/_config/webhooks/{endpoint_id}",
        data=urlencode(data).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def reset(api_base: str) -> None:
    """Forget every object (localstripe's store and, through the stub, the stub's)."""
    request = urllib.request.Request(f"{api_base.rstrip('/')}/_config/data", method="DELETE")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def sign_payload(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header value for `payload`, computed as Stripe does."""
    if timestamp is None:
        timestamp = int(time.time())
    signed = f"{timestamp}.".encode() + payload
    signature = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={signature}"


