"""Webhook endpoints of the Stripe stand-in, delivered the way Stripe delivers them.

localstripe sends each event once, to plain-HTTP or TLS URLs, signed with the creation time
and never retried. Stripe signs each attempt with the time of the attempt and retries a
failed delivery with growing delays. So the stub owns the endpoints: a registration
(`POST /_config/webhooks/{id}`, localstripe's own API, or the `--webhooks` file that the lab
converge writes) is kept here, localstripe sends every event to the stub's relay, and the
stub delivers it to each matching endpoint, over TLS verified against `--ca-file` where it
is given, retrying on a failure or a non-2xx answer. The stub's own events (a hosted
Checkout Session completed, a refund) go out the same way.

Stand-in limits: retries stop after RETRY_DELAYS (about two minutes, not Stripe's three
days), and endpoints have no enable/disable state.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import ssl
import time
from pathlib import Path

log = logging.getLogger("stripe_stub.webhooks")

# Seconds before each retry of a failed delivery (Stripe backs off over days).
RETRY_DELAYS = (1, 2, 4, 8, 15, 30, 60)
# How often the relay registration is renewed: localstripe keeps endpoints in memory only,
# so a restarted localstripe would otherwise send its events nowhere.
RELAY_RENEW_SECONDS = 15
RELAY_ENDPOINT_ID = "_stub_relay"
DELIVERY_TIMEOUT_SECONDS = 10


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    signature = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={signature}"


def new_event(event_type: str, obj: dict) -> dict:
    """An event shaped like Stripe's, for the stub's own objects."""
    return {
        "id": "evt_" + secrets.token_hex(12),
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


class Webhooks:
    def __init__(self, *, upstream: str, relay_url: str, endpoints_file: Path | None,
                 ca_file: Path | None):
        self.upstream = upstream
        self.relay_url = relay_url
        self.relay_secret = "whsec_relay_" + secrets.token_hex(16)
        self.endpoints_file = endpoints_file
        self.ca_file = ca_file
        self.registered: dict[str, dict] = {}  # through the API, forgotten on restart
        self.session = None  # aiohttp.ClientSession, set by the app on startup
        self.tasks: set[asyncio.Task] = set()

    # -- endpoints --

    def register(self, endpoint_id: str, url: str, secret: str, events: list[str] | None) -> None:
        self.registered[endpoint_id] = {"id": endpoint_id, "url": url, "secret": secret, "events": events}

    def endpoints(self) -> list[dict]:
        """API registrations and the file's (read at each delivery, so a converge that
        rewrites it needs no restart); the file wins on an id both name."""
        merged = dict(self.registered)
        if self.endpoints_file is not None and self.endpoints_file.exists():
            for endpoint in json.loads(self.endpoints_file.read_text() or "[]"):
                merged[endpoint["id"]] = endpoint
        return list(merged.values())

    def _ssl_context(self) -> ssl.SSLContext:
        if self.ca_file is not None and self.ca_file.exists():
            return ssl.create_default_context(cafile=str(self.ca_file))
        return ssl.create_default_context()

    # -- relay from localstripe --

    async def register_relay(self) -> None:
        data = {"url": self.relay_url, "secret": self.relay_secret}
        async with self.session.post(f"{self.upstream}/_config/webhooks/{RELAY_ENDPOINT_ID}",
                                     data=data) as response:
            response.raise_for_status()

    async def keep_relay_registered(self) -> None:
        while True:
            await asyncio.sleep(RELAY_RENEW_SECONDS)
            try:
                await self.register_relay()
            except Exception as exc:  # localstripe restarting: try again next round
                log.warning("relay registration failed: %s", exc)

    def relayed(self, payload: bytes, signature_header: str) -> dict | None:
        """The event localstripe sent, if it carries the relay's signature."""
        fields = dict(part.split("=", 1) for part in signature_header.split(",") if "=" in part)
        expected = sign(payload, self.relay_secret, int(fields.get("t", "0")))
        if not hmac.compare_digest(expected, signature_header):
            return None
        return json.loads(payload)

    # -- delivery --

    def send(self, event: dict) -> None:
        """Deliver in the background to every endpoint that wants this event type."""
        payload = json.dumps(event, indent=2, sort_keys=True).encode()
        for endpoint in self.endpoints():
            if endpoint.get("events") and event["type"] not in endpoint["events"]:
                continue
            task = asyncio.create_task(self._deliver(endpoint, event, payload))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _deliver(self, endpoint: dict, event: dict, payload: bytes) -> None:
        for attempt, delay in enumerate((0,) + RETRY_DELAYS, start=1):
            await asyncio.sleep(delay)
            outcome = await self._attempt(endpoint, payload)
            log.info("webhook %s %s to %s, attempt %d: %s", event["type"], event["id"],
                     endpoint["url"], attempt, outcome)
            if outcome == "delivered":
                return
        log.warning("webhook %s %s to %s: gave up after %d attempts", event["type"], event["id"],
                    endpoint["url"], len(RETRY_DELAYS) + 1)

    async def _attempt(self, endpoint: dict, payload: bytes) -> str:
        import aiohttp

        headers = {"Content-Type": "application/json; charset=utf-8",
                   "Stripe-Signature": sign(payload, endpoint["secret"], int(time.time()))}
        tls = self._ssl_context() if endpoint["url"].startswith("https:") else None
        try:
            async with self.session.post(endpoint["url"], data=payload, headers=headers, ssl=tls,
                                         timeout=aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT_SECONDS)) as r:
                await r.read()
                return "delivered" if 200 <= r.status < 300 else f"answered {r.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, ssl.SSLError) as exc:
            return f"failed: {exc!r}"
