"""A small, bounded load generator for the lab (deploy tests and `make bench-deploy`).

Sends continuous traffic through the load balancer: GET /api/products, and every
`post_every`-th request a POST /api/payment-intents with its own Idempotency-Key (an order
per acknowledged request) as a signed-up user. Records, per request, the time, status,
X-App-Version and latency; connection errors and 5xx are failures.

Like a browser, a request that finds its reused keep-alive connection closed by the load
balancer before any response byte (nginx closes idle client connections when a reload
retires its old workers; the client sees a clean close or a reset) is sent once more on a new connection: GETs are idempotent and the
POST carries the same Idempotency-Key, so the app answers it at most once. Such retries are
counted and reported (`retried`); a request whose retry fails too is a failure.

Only loopback or lab addresses are accepted, and every run is bounded by a request count
and a time limit, whatever the caller asks.

    python tests/lab/load.py --seconds 10      # steady load, prints a summary (JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

LB_URL = "https://127.0.0.1:8443"
LAB_NETWORK = ipaddress.ip_network("10.77.0.0/24")
# Hard bounds of any run.
MAX_REQUESTS = 200_000
MAX_SECONDS = 900.0
PASSWORD = "load-generator-password-1"


def check_target(base_url: str) -> None:
    host = urlsplit(base_url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise SystemExit(f"load: {base_url}: only loopback or lab addresses, not names") from None
    if not (address.is_loopback or address in LAB_NETWORK):
        raise SystemExit(f"load: {base_url}: only loopback or the lab network {LAB_NETWORK}")


@dataclass
class Sample:
    at: float  # seconds since the start of the run
    kind: str  # "get" or "post"
    status: int  # 0: connection error or timeout
    version: str
    latency_ms: float
    error: str = ""
    retried: bool = False


@dataclass
class LoadResult:
    samples: list[Sample] = field(default_factory=list)
    orders: dict[str, str] = field(default_factory=dict)  # idempotency key -> order id (201s)
    duration: float = 0.0

    @property
    def sent(self) -> int:
        return len(self.samples)

    @property
    def failures(self) -> list[Sample]:
        return [s for s in self.samples if s.status == 0 or s.status >= 500]

    @property
    def unexpected(self) -> list[Sample]:
        """Anything but 200 (GET) and 201 (POST): failures, 429s, 4xx."""
        return [s for s in self.samples if s.status not in (200, 201)]

    def versions(self) -> list[str]:
        """X-App-Version of the answered requests, in the order they were sent."""
        return [s.version for s in sorted(self.samples, key=lambda s: s.at) if s.status in (200, 201)]

    def transitions(self) -> list[str]:
        """The versions seen, collapsed: ["A", "B"] for a clean A -> B switch."""
        out: list[str] = []
        for version in self.versions():
            if not out or out[-1] != version:
                out.append(version)
        return out

    def latency(self, start: float = 0.0, end: float = float("inf"), kind: str | None = None) -> dict:
        values = sorted(s.latency_ms for s in self.samples
                        if start <= s.at <= end and s.status in (200, 201) and kind in (None, s.kind))
        if not values:
            return {"count": 0}
        return {
            "count": len(values),
            "p50_ms": round(percentile(values, 50), 1),
            "p99_ms": round(percentile(values, 99), 1),
            "mean_ms": round(statistics.fmean(values), 1),
        }

    def summary(self) -> dict:
        statuses: dict[str, int] = {}
        for s in self.samples:
            statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
        return {
            "sent": self.sent,
            "failed": len(self.failures),
            "statuses": statuses,
            "orders_acknowledged": len(self.orders),
            "retried": sum(1 for s in self.samples if s.retried),
            "transitions": _compact(self.transitions()),
            "seconds": round(self.duration, 1),
            "requests_per_second": round(self.sent / self.duration, 1) if self.duration else 0,
            "latency": self.latency(),
            "first_failures": [vars(s) for s in self.failures[:5]],
        }


def _compact(transitions: list[str]) -> list[str]:
    """A -> B -> A -> B ... while two releases serve side by side: first and last few."""
    if len(transitions) <= 6:
        return transitions
    return transitions[:3] + [f"... {len(transitions) - 6} more ..."] + transitions[-3:]


def percentile(sorted_values: list[float], pct: float) -> float:
    index = max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


@dataclass
class Shopper:
    email: str
    cookie: str
    price_id: str


def sign_up(base_url: str = LB_URL, *, wait_seconds: float = 90.0) -> Shopper:
    """A new user with a session, and a one-time price to order. The auth zone of the load
    balancer limits sign-ups per address: a 429 is waited out (bounded)."""
    check_target(base_url)
    email = f"load-{uuid.uuid4().hex[:12]}@example.com"
    deadline = time.monotonic() + wait_seconds
    with httpx.Client(base_url=base_url, verify=False, timeout=15) as client:
        while True:
            response = client.post("/api/auth/sign-up", json={"email": email, "password": PASSWORD})
            if response.status_code != 429 or time.monotonic() > deadline:
                break
            time.sleep(5)
        if response.status_code != 201:
            raise RuntimeError(f"sign-up answered {response.status_code}: {response.text[:300]}")
        cookie = response.cookies.get("sid") or _cookie_from(response)
        products = client.get("/api/products").json()["products"]
    price_id = next(price["id"] for product in products for price in product["prices"]
                    if price["recurring_interval"] is None)
    return Shopper(email=email, cookie=cookie, price_id=price_id)


def _cookie_from(response: httpx.Response) -> str:
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name.strip() == "sid":
            return rest.split(";", 1)[0]
    raise RuntimeError("sign-up set no session cookie")


async def _worker(client: httpx.AsyncClient, shopper: Shopper | None, result: LoadResult, state: dict,
                  post_every: int, t0: float) -> None:
    while not state["stop"].is_set():
        if state["sent"] >= state["max_requests"] or time.monotonic() - t0 >= state["max_seconds"]:
            state["stop"].set()
            break
        state["sent"] += 1
        is_post = shopper is not None and post_every > 0 and state["sent"] % post_every == 0
        start = time.monotonic()
        key = uuid.uuid4().hex
        retried = False
        try:
            try:
                response = await _send(client, shopper, is_post, key)
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                # A reset reads as ReadError, a clean close as "without sending a response":
                # both are the reused connection closed before any response byte.
                if isinstance(exc, httpx.RemoteProtocolError) and "without sending a response" not in str(exc):
                    raise
                retried = True
                response = await _send(client, shopper, is_post, key)
            status, version, error = response.status_code, response.headers.get("x-app-version", ""), ""
            if is_post and status == 201:
                result.orders[key] = response.json()["order_id"]
            elif status >= 400:
                error = response.text[:200]
        except httpx.HTTPError as exc:
            status, version, error = 0, "", f"{type(exc).__name__}: {exc}"
        result.samples.append(Sample(at=start - t0, kind="post" if is_post else "get", status=status,
                                     version=version, latency_ms=(time.monotonic() - start) * 1000, error=error,
                                     retried=retried))


async def _send(client: httpx.AsyncClient, shopper: Shopper | None, is_post: bool, key: str) -> httpx.Response:
    if is_post:
        return await client.post(
            "/api/payment-intents",
            json={"items": [{"price_id": shopper.price_id, "quantity": 1}]},
            headers={"Idempotency-Key": key, "Cookie": f"sid={shopper.cookie}"})
    return await client.get("/api/products")


async def run_load(base_url: str = LB_URL, *, shopper: Shopper | None = None, concurrency: int = 8,
                   post_every: int = 10, max_requests: int = 20_000, max_seconds: float = 120.0,
                   stop: asyncio.Event | None = None) -> LoadResult:
    """Load until `stop` is set, `max_requests` are sent or `max_seconds` have passed."""
    check_target(base_url)
    state = {"stop": stop or asyncio.Event(), "sent": 0,
             "max_requests": min(max_requests, MAX_REQUESTS), "max_seconds": min(max_seconds, MAX_SECONDS)}
    result = LoadResult()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    t0 = time.monotonic()
    async with httpx.AsyncClient(base_url=base_url, verify=False, timeout=30, limits=limits) as client:
        await asyncio.gather(*(_worker(client, shopper, result, state, post_every, t0) for _ in range(concurrency)))
    result.duration = time.monotonic() - t0
    return result


@dataclass
class CommandRun:
    returncode: int
    output: str
    started_at: float  # seconds since the start of the load
    seconds: float


async def load_during(command: list[str], *, base_url: str = LB_URL, shopper: Shopper | None = None,
                      lead: float = 2.0, tail: float = 2.0, concurrency: int = 8, post_every: int = 10,
                      max_requests: int = 50_000, max_seconds: float = 600.0, cwd: str | None = None,
                      env: dict | None = None) -> tuple[LoadResult, CommandRun]:
    """Run `command` while the load runs: the load starts `lead` s before and stops `tail` s
    after it ends."""
    stop = asyncio.Event()
    load = asyncio.create_task(run_load(base_url, shopper=shopper, concurrency=concurrency, post_every=post_every,
                                        max_requests=max_requests, max_seconds=max_seconds, stop=stop))
    t0 = time.monotonic()
    await asyncio.sleep(lead)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(*command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT)
    output, _ = await proc.communicate()
    seconds = time.monotonic() - started
    await asyncio.sleep(tail)
    stop.set()
    result = await load
    return result, CommandRun(returncode=proc.returncode, output=output.decode(errors="replace"),
                              started_at=started - t0, seconds=seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=LB_URL)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--post-every", type=int, default=10, help="every Nth request is an order (0: none)")
    parser.add_argument("--max-requests", type=int, default=20_000)
    args = parser.parse_args(argv)
    shopper = sign_up(args.url) if args.post_every > 0 else None
    result = asyncio.run(run_load(args.url, shopper=shopper, concurrency=args.concurrency, post_every=args.post_every,
                                  max_requests=args.max_requests, max_seconds=args.seconds))
    json.dump(result.summary(), sys.stdout, indent=2)
    print()
    return 0 if not result.failures else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
