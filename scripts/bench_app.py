"""`make bench-app`: throughput, latency and memory of the app under hypercorn.

Starts PostgreSQL, Redis, localstripe and the Stripe stub (tests/support/services.py),
migrates and seeds a database, then serves, one after the other, with 2 hypercorn workers
each:

- the app (`python -m payments serve`, WEB_CONCURRENCY=2);
- a bare ASGI app (`bare_app` below: a fixed JSON body, or the request body read and
  acknowledged), the ceiling this machine and hypercorn allow, served the same way
  (`serve_bare`: hypercorn with a listening socket per worker, app/payments/server.py).

Each is loaded with `wrk` (loopback only, bounded in time and in request count) on:

- catalog: GET /api/products (warmed first, so served from the Redis cache);
- webhooks: POST /api/webhooks/stripe, each request a distinct Stripe event
  (`payment_intent.succeeded`) signed with STRIPE_WEBHOOK_SECRET, pre-generated and sent
  by wrk through a Lua script. The PaymentIntents are of no order of ours, so the app
  records each in one statement (shared by concurrent ones: webhooks/batch.py);
- webhooks, our orders: the same endpoint and event type, each event paying a distinct
  pending order created for it beforehand (`create_orders`), so each runs the
  fulfilment path: BEGIN, claim, lock the order, payments row, mark it paid, audit row,
  COMMIT. Fresh orders in every round; afterwards the script checks that as many orders
  were marked paid as the app answered with a 2xx. No target of its own.

Each endpoint is measured in rounds (default 3), bare and app back to back in every
round, the order swapped from one round to the next, so that a change in the machine's
load (it is shared) hits both sides of a ratio alike. A row's requests/s is its total
requests over its total time; p50/p99 are the median of the rounds'.

Prints requests/s, p50/p99 latency, the ratio to the bare app (and each round's ratio)
and the peak RSS (VmHWM) of each app worker, against the targets: catalog >= 50 % of
bare, webhooks >= 25 %, RSS <= 120 MB per worker; then the paid-orders check. Figures go
to docs/benchmarks.md ("App") by hand.

The app's PostgreSQL pool gets one connection per concurrent request a worker can see
(connections / workers), as a deployment sized for this load would; PostgreSQL runs
with fsync off (tests/support/services.py), so commits cost less than on a durable
server.

Usage: .venv/bin/python scripts/bench_app.py [--duration 10] [--rounds 3] [--connections 32]
       [--max-events 50000] [--max-orders 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

CATALOG_PATH = "/api/products"
WEBHOOK_PATH = "/api/webhooks/stripe"
WEBHOOK_SECRET = "whsec_bench_app"
ORDERS_ROW = "webhooks, our orders"
TARGETS = {"catalog": 0.50, "webhooks": 0.25}  # ORDERS_ROW has none
RSS_TARGET_MB = 120
WORKERS = 2


# -- the bare ASGI app (imported by hypercorn from this file) ---------------------------

_BARE_BODY = os.environ.get("BENCH_BARE_BODY", '{"ok": true}').encode()


async def bare_app(scope, receive, send):
    """The least an ASGI app can do: GET answers a fixed JSON body, POST reads the body."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = _BARE_BODY
    if scope["method"] == "POST":
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        body = b'{"received": true}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def serve_bare() -> int:
    """`bench_app.py serve-bare`: the bare app under hypercorn as `python -m payments serve`
    runs the app (HOST, PORT, WEB_CONCURRENCY; a listening socket per worker)."""
    from hypercorn.run import run

    sys.path.insert(0, str(REPO_ROOT / "app"))
    from payments.server import WorkerSocketsConfig

    config = WorkerSocketsConfig()
    config.application_path = "bench_app:bare_app"
    config.bind = [f"{os.environ['HOST']}:{os.environ['PORT']}"]
    config.workers = int(os.environ["WEB_CONCURRENCY"])
    config.accesslog = None
    config.keep_alive_timeout = 75
    return run(config)


# -- load -------------------------------------------------------------------------------

WRK_SCRIPT = r"""
-- Pre-built requests, one per line (method, path, signature, body), split between the
-- threads so no two threads send the same one. Each thread stops after its share of
-- responses; `repeats` counts requests sent again because a thread ran out, `unanswered`
-- the requests sent whose response wrk did not wait for (the server may still apply them).
local threads = {}
local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock, bench_timespec *t);
]]

local function now_us()
  local t = ffi.new("bench_timespec")
  ffi.C.clock_gettime(1, t)  -- CLOCK_MONOTONIC
  return tonumber(t.tv_sec) * 1000000 + tonumber(t.tv_nsec) / 1000
end

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads - 1)
end

local requests, count, max_per_thread = {}, 0, 0

function init(args)
  max_per_thread = tonumber(args[2])
  local nthreads, n = tonumber(args[3]), 0
  for line in io.lines(args[1]) do
    if n % nthreads == tid then
      local method, path, signature, body = line:match("^(%S+)\t(%S+)\t(%S*)\t(.*)$")
      local headers = {["Content-Type"] = "application/json"}
      if signature ~= "" then headers["Stripe-Signature"] = signature end
      if body == "" then body = nil end
      table.insert(requests, wrk.format(method, path, headers, body))
    end
    n = n + 1
  end
  repeats, sent = 0, 0  -- globals: done() reads them with thread:get
  started = now_us()
end

function request()
  sent = sent + 1
  if sent > #requests then repeats = repeats + 1 end
  return requests[(sent - 1) % #requests + 1]
end

function response(status, headers, body)
  count = count + 1
  if count == max_per_thread then
    -- wrk counts the whole -d duration even when a thread stops early: keep our own.
    finished = now_us() - started
    wrk.thread:stop()
  end
end

function done(summary, latency, requests_)
  local repeated, duration, sent_ = 0, 0, 0
  for _, thread in ipairs(threads) do
    repeated = repeated + (thread:get("repeats") or 0)
    sent_ = sent_ + (thread:get("sent") or 0)
    duration = math.max(duration, thread:get("finished") or summary.duration)
  end
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,' ..
    '"errors":%d,"non2xx_status":%d,"repeats":%d,"unanswered":%d}\n',
    summary.requests, duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, summary.errors.status, repeated,
    math.max(0, sent_ - summary.requests)))
end
"""


def run_wrk(url: str, requests_file: Path, *, duration: int, connections: int,
            max_requests: int, work: Path) -> dict:
    """wrk against `url` with requests from `requests_file`; returns the parsed summary."""
    script = work / "bench.lua"
    script.write_text(WRK_SCRIPT)
    threads = 2
    result = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
         "--timeout", "10s", "-s", str(script), url, "--",
         str(requests_file), str(max(1, max_requests // threads)), str(threads)],
        capture_output=True, text=True, timeout=duration + 60,
    )
    if result.returncode != 0:
        raise SystemExit(f"wrk failed: {result.stderr or result.stdout}")
    line = next((l for l in result.stdout.splitlines() if l.startswith("BENCH ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no summary:\n{result.stdout}\n{result.stderr}")
    summary = json.loads(line[len("BENCH "):])
    summary["rps"] = summary["requests"] / (summary["duration_us"] / 1e6)
    return summary


def write_requests(path: Path, lines: list[tuple[str, str, str, str]]) -> Path:
    with path.open("w") as f:
        for method, target, signature, body in lines:
            assert "\n" not in body and "\t" not in body
            f.write(f"{method}\t{target}\t{signature}\t{body}\n")
    return path


def signed_event(event_id: str, intent: dict, now: int) -> tuple[str, str, str, str]:
    """A `payment_intent.succeeded` event of `intent`, as a request line signed as Stripe does."""
    from tests.support.stripe_tools import sign_payload

    event = {
        "id": event_id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": now,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "payment_intent.succeeded",
        "data": {"object": intent},
    }
    body = json.dumps(event, separators=(",", ":"))
    return "POST", WEBHOOK_PATH, sign_payload(body.encode(), WEBHOOK_SECRET, now), body


def succeeded_intent(intent_id: str, charge_id: str, *, amount: int, currency: str,
                     metadata: dict, now: int) -> dict:
    return {"id": intent_id, "object": "payment_intent", "amount": amount,
            "currency": currency, "status": "succeeded", "created": now,
            "latest_charge": charge_id, "metadata": metadata}


def webhook_events(count: int, prefix: str) -> list[tuple[str, str, str, str]]:
    """Distinct signed `payment_intent.succeeded` events: each is verified, recorded in the
    event ledger and handled (a PaymentIntent of no order of ours: nothing to mark paid)."""
    now = int(time.time())
    return [signed_event(f"evt_{prefix}{i:010d}", succeeded_intent(
                f"pi_{prefix}{i:010d}", f"ch_{prefix}{i:010d}", amount=1200, currency="usd",
                metadata={}, now=now), now)
            for i in range(count)]


def order_events(orders: list[tuple], prefix: str) -> list[tuple[str, str, str, str]]:
    """For each (order id, PaymentIntent id, amount, currency) of `create_orders`, the event
    Stripe sends when the PaymentIntent `stripe_calls.create_payment_intent` made for it
    succeeds: our order id in its metadata (so the processor takes the transaction path)
    and the order's amount and currency (so `lifecycle.paid_in_full` lets it be paid)."""
    now = int(time.time())
    return [signed_event(f"evt_{prefix}{i:010d}", succeeded_intent(
                intent_id, f"ch_{prefix}{i:010d}", amount=amount, currency=currency,
                metadata={"order_id": str(order_id)}, now=now), now)
            for i, (order_id, intent_id, amount, currency) in enumerate(orders)]


# -- our orders -------------------------------------------------------------------------

# Two of one price: the event must carry the order's total, not the unit price.
ORDER_QUANTITY = 2


def bench_customer(conn) -> int:
    """The user who placed the orders, stored as sign-up stores one (an argon2id hash with
    passwords.py's parameters), with the Stripe customer placing an order gives him."""
    from argon2 import PasswordHasher

    return conn.execute(
        "INSERT INTO users (email, password_hash, stripe_customer_id) VALUES (%s, %s, %s)"
        " RETURNING id",
        ("bench-orders@example.com", PasswordHasher().hash(secrets.token_urlsafe()),
         "cus_bench_orders")).fetchone()[0]


def one_time_price(conn) -> int:
    """A seeded price the embedded card flow sells (active, of an active product, not
    recurring: `service.price_lines` in payment mode)."""
    row = conn.execute(
        "SELECT pr.id FROM prices pr JOIN products p ON p.id = pr.product_id"
        " WHERE pr.active AND p.active AND pr.recurring_interval IS NULL"
        " ORDER BY pr.id LIMIT 1").fetchone()
    if row is None:
        raise SystemExit("the seeded catalog has no one-time price to order")
    return row[0]


def place_orders(conn, *, user_id: int, price_id: int, count: int, prefix: str) -> list[tuple]:
    """`count` orders as the embedded card flow leaves them until the webhook (placement.py:
    a pending order and its line item priced from the catalog, then its PaymentIntent's id
    attached), in one statement; their (id, PaymentIntent id, amount, currency)."""
    return conn.execute(
        """
        WITH price AS (
            SELECT pr.id, pr.stripe_price_id, pr.unit_amount, pr.currency, p.name
              FROM prices pr JOIN products p ON p.id = pr.product_id
             WHERE pr.id = %(price_id)s
        ), placed AS (
            INSERT INTO orders (user_id, mode, flow, currency, amount_total,
                                stripe_payment_intent_id)
            SELECT %(user_id)s, 'payment', 'payment_intent', price.currency,
                   price.unit_amount * %(quantity)s, %(intent)s || lpad(g::text, 10, '0')
              FROM price, generate_series(0, %(count)s - 1) AS g
            RETURNING id, stripe_payment_intent_id, amount_total, currency
        ), items AS (
            INSERT INTO order_items (order_id, price_id, stripe_price_id, product_name,
                                     quantity, unit_amount, currency)
            SELECT placed.id, price.id, price.stripe_price_id, price.name, %(quantity)s,
                   price.unit_amount, price.currency
              FROM placed, price
        )
        SELECT id, stripe_payment_intent_id, amount_total, currency
          FROM placed ORDER BY stripe_payment_intent_id
        """,
        {"price_id": price_id, "user_id": user_id, "quantity": ORDER_QUANTITY,
         "intent": f"pi_{prefix}", "count": count}).fetchall()


def create_orders(database_url: str, counts: dict[str, int]) -> dict[str, list[tuple]]:
    """For each prefix (a round, or the warm-up), that many pending orders, by one user."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        user_id = bench_customer(conn)
        price_id = one_time_price(conn)
        orders = {prefix: place_orders(conn, user_id=user_id, price_id=price_id, count=count,
                                       prefix=prefix)
                  for prefix, count in counts.items()}
        # Vacuumed now rather than by autovacuum (or by the first reads setting hint bits)
        # in the middle of a measurement.
        conn.execute("VACUUM (ANALYZE) orders, order_items")
    return orders


def fulfilment_counts(database_url: str, prefix: str) -> tuple[int, int]:
    """(events of `prefix` in the ledger, orders of `prefix` marked paid)."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        recorded = conn.execute("SELECT count(*) FROM stripe_events WHERE starts_with(id, %s)",
                                (f"evt_{prefix}",)).fetchone()[0]
        paid = conn.execute(
            "SELECT count(*) FROM orders"
            " WHERE starts_with(stripe_payment_intent_id, %s) AND status = 'paid'",
            (f"pi_{prefix}",)).fetchone()[0]
    return recorded, paid


def settled_fulfilment_counts(database_url: str, prefixes: list[str]) -> list[tuple[int, int]]:
    """`fulfilment_counts` of each prefix once they stop moving: requests wrk left in
    flight when it stopped may still be running in the app."""
    previous = None
    for _ in range(20):
        counts = [fulfilment_counts(database_url, prefix) for prefix in prefixes]
        if counts == previous:
            break
        previous = counts
        time.sleep(0.5)
    return counts


# -- processes --------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def worker_peak_rss_mb(server_pid: int) -> list[float]:
    """VmHWM (peak resident set) of each hypercorn worker process, in MB."""
    peaks = []
    for pid in descendants(server_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if "spawn_main" not in cmdline:  # not a worker (e.g. the resource tracker)
            continue
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
        if match:
            peaks.append(int(match.group(1)) / 1024)
    return peaks


def get(url: str, headers: dict | None = None, data: bytes | None = None) -> bytes:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def post_events(url: str, lines: list[tuple[str, str, str, str]]) -> None:
    """Send request lines one by one (a warm-up); an error answer raises."""
    for _method, target, signature, body in lines:
        get(url + target, {"Content-Type": "application/json", "Stripe-Signature": signature},
            body.encode())


def measure_row(results: dict, name: str, path: str, servers: dict, requests_files,
                max_requests: int, args, work: Path) -> None:
    """`name` measured in args.rounds rounds, bare and app back to back in each, the order
    swapped from one round to the next; requests_files(kind, n): what `kind` is sent in
    round n."""
    for n in range(args.rounds):
        order = ["bare", "app"]
        for kind in order if n % 2 == 0 else reversed(order):
            results.setdefault(f"{kind} {name}", []).append(run_wrk(
                servers[kind].url + path, requests_files(kind, n), duration=args.duration,
                connections=args.connections, max_requests=max_requests, work=work))


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark the app against a bare ASGI app.")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measurements per row, alternating bare and app")
    parser.add_argument("--log-level", default="warning",
                        help="the app's LOG_LEVEL (info writes an access line per request)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--max-requests", type=int, default=200_000,
                        help="upper bound of catalog requests per measurement")
    parser.add_argument("--max-events", type=int, default=50_000,
                        help="upper bound of webhook requests (distinct events) per measurement")
    parser.add_argument("--max-orders", type=int, default=50_000,
                        help="upper bound of requests (distinct orders paid) per measurement "
                             f"of \"{ORDERS_ROW}\"")
    parser.add_argument("--keep", action="store_true", help="keep the state directory")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found; install the wrk package (scripts/bootstrap.sh does)")

    from tests.support import services

    work = services.make_state_dir("payments-bench-")
    started: list[services.Service] = []
    results: dict[str, dict] = {}
    fulfilment: list[tuple[int, int]] = []
    try:
        pg = services.start_postgres(work / "postgres")
        started.append(pg)
        redis = services.start_redis(work / "redis")
        started.append(redis)
        localstripe = services.start_localstripe(work / "localstripe")
        started.append(localstripe)
        stub = services.start_stripe_stub(work / "stripe_stub", localstripe.url)
        started.append(stub)

        import psycopg

        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE payments_bench")
        env = dict(os.environ)
        env.update({
            "APP_ENV": "production",
            "APP_VERSION": "bench",
            "DATABASE_URL": pg.url.rsplit("/", 1)[0] + "/payments_bench",
            "REDIS_URL": redis.url,
            "STRIPE_API_BASE": stub.url,
            "STRIPE_JS_URL": f"{stub.url}/js.stripe.com/v3/",
            "STRIPE_SECRET_KEY": "sk_test_bench_app",
            "STRIPE_PUBLISHABLE_KEY": "pk_test_bench_app",
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "SESSION_SECRET": "bench-session-secret-0123456789abcdef0123",
            "PUBLIC_BASE_URL": "https://bench.invalid",  # required in production; no redirect is followed
            "LOG_LEVEL": args.log_level,
            # One connection per request in flight in a worker: none waits for the pool.
            "DB_POOL_MAX_SIZE": str(-(-args.connections // WORKERS)),
            "PYTHONPATH": str(REPO_ROOT / "app"),
        })
        for command in ("migrate", "seed"):
            subprocess.run([sys.executable, "-m", "payments", command], env=env,
                           cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)

        catalog_file = write_requests(work / "catalog.txt", [("GET", CATALOG_PATH, "", "")] * 2)
        # Distinct events in every round (a margin over the bound for the requests in
        # flight when wrk stops); the bare app reads the first round's file each time.
        webhook_files = [
            write_requests(work / f"webhooks-{n}.txt",
                           webhook_events(args.max_events + 2 * args.connections, f"b{n}x"))
            for n in range(args.rounds)]

        # The app, the way production runs it, and the bare app with the same server
        # settings and a body as large as the catalog's. Both stay up; each endpoint is
        # measured on the bare app and then on the app, close together in time, so a
        # change in the machine's load affects both sides of a ratio alike.
        app = services.start_app_server(
            work / "app", env, workers=WORKERS,
            command=[sys.executable, "-m", "payments", "serve"])
        started.append(app)
        catalog_body = get(app.url + CATALOG_PATH)  # fills the cache
        post_events(app.url, webhook_events(20, "warm"))
        bare_env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "scripts"),
                        BENCH_BARE_BODY=catalog_body.decode())
        bare = services.start_app_server(work / "bare", bare_env, workers=WORKERS, ready_path="/",
                                         command=[sys.executable, __file__, "serve-bare"])
        started.append(bare)

        servers = {"bare": bare, "app": app}
        measure_row(results, "catalog", CATALOG_PATH, servers, lambda kind, n: catalog_file,
                    args.max_requests, args, work)
        measure_row(results, "webhooks", WEBHOOK_PATH, servers,
                    lambda kind, n: webhook_files[n if kind == "app" else 0],
                    args.max_events, args, work)

        # Our orders only now: the rows above keep the orders table they were measured
        # with, and these events are signed now (the app accepts a signature for 300 s).
        # Distinct orders in every round, with the same margin as the events'; the bare
        # app reads the first round's file each time (the same bodies, and it only reads
        # them).
        order_prefixes = [f"o{n}x" for n in range(args.rounds)]
        orders = create_orders(env["DATABASE_URL"], {
            **dict.fromkeys(order_prefixes, args.max_orders + 2 * args.connections), "owarm": 20})
        order_files = [write_requests(work / f"orders-{prefix}.txt",
                                      order_events(orders[prefix], prefix))
                       for prefix in order_prefixes]
        post_events(app.url, order_events(orders["owarm"], "owarm"))
        measure_row(results, ORDERS_ROW, WEBHOOK_PATH, servers,
                    lambda kind, n: order_files[n if kind == "app" else 0],
                    args.max_orders, args, work)
        fulfilment = settled_fulfilment_counts(env["DATABASE_URL"], order_prefixes)
        rss = worker_peak_rss_mb(app.process.pid)
        load = os.getloadavg()[0]
    finally:
        for service in reversed(started):
            service.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print_table(results, rss, args, load)
    return 0 if print_paid_check(results[f"app {ORDERS_ROW}"], fulfilment) else 1


def combined(rounds: list[dict]) -> dict:
    """One row from its rounds: total requests over total time, median latencies."""
    requests = sum(r["requests"] for r in rounds)
    return {
        "rps": requests / (sum(r["duration_us"] for r in rounds) / 1e6),
        "p50_us": statistics.median(r["p50_us"] for r in rounds),
        "p99_us": statistics.median(r["p99_us"] for r in rounds),
        "errors": sum(r["errors"] + r["non2xx_status"] for r in rounds),
        "repeats": sum(r["repeats"] for r in rounds),
    }


# The table's rows: (row, its endpoint as printed, the bound that limits its repeats).
ROWS = (("catalog", f"GET {CATALOG_PATH}", None),
        ("webhooks", f"POST {WEBHOOK_PATH}", "--max-events"),
        (ORDERS_ROW, f"POST {WEBHOOK_PATH}, our orders", "--max-orders"))


def print_table(results: dict, rss: list[float], args, load: float) -> None:
    print()
    print(f"App benchmark: hypercorn with {WORKERS} workers; wrk, 2 threads, "
          f"{args.connections} connections; {args.rounds} rounds of up to {args.duration}s "
          f"per row; LOG_LEVEL={args.log_level}; {os.cpu_count()} CPUs shared with wrk "
          f"(load average {load:.1f} at the end)")
    header = f"{'endpoint':<44}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}" \
             f"{'vs bare':>9}  {'target':<14}"
    print(header)
    print("-" * len(header))
    rows = {key: combined(rounds) for key, rounds in results.items()}
    for name, path, _bound in ROWS:
        for kind in ("bare", "app"):
            r = rows[f"{kind} {name}"]
            ratio, verdict = "", ""
            if kind == "app":
                value = r["rps"] / rows[f"bare {name}"]["rps"]
                ratio = f"{value:.0%}"
                target = TARGETS.get(name)
                verdict = "no target" if target is None else \
                    f">= {target:.0%} " + ("met" if value >= target else "MISSED")
            print(f"{kind + ' ' + path:<44}{r['rps']:>9.0f}{r['p50_us'] / 1000:>9.2f}"
                  f"{r['p99_us'] / 1000:>9.2f}{r['errors']:>8}{ratio:>9}  {verdict:<14}")
    for name, _path, _bound in ROWS:
        pairs = zip(results[f"bare {name}"], results[f"app {name}"])
        print(f"{name} ratio per round: "
              + ", ".join(f"{app['rps'] / bare['rps']:.0%} ({app['rps']:.0f}/{bare['rps']:.0f})"
                          for bare, app in pairs))
    peak = max(rss) if rss else float("nan")
    print(f"peak RSS per app worker: {', '.join(f'{m:.0f} MB' for m in rss)} "
          f"(<= {RSS_TARGET_MB} MB {'met' if peak <= RSS_TARGET_MB else 'MISSED'})")
    for name, _path, bound in ROWS:
        repeats = rows[f"app {name}"]["repeats"]
        if bound and repeats:
            print(f"note: {repeats} \"{name}\" requests repeated an event id (raise {bound})")


def print_paid_check(rounds: list[dict], fulfilment: list[tuple[int, int]]) -> bool:
    """Whether every 2xx answer of the our-orders row paid its order, and nothing else did.

    Exact when wrk waited for every answer. Requests it left in flight (at its duration's
    end, or when a thread reached its bound) may be applied after it stopped: paid orders
    then exceed the 2xx answers by at most those, and each such order's event is in the
    ledger (recorded == paid) - a mismatch, reported, but not an error of the app."""
    answered = sum(r["requests"] - r["non2xx_status"] for r in rounds)
    unanswered = sum(r["unanswered"] for r in rounds)
    recorded = sum(c[0] for c in fulfilment)
    paid = sum(c[1] for c in fulfilment)
    per_round = ", ".join(f"{c[1]}/{r['requests'] - r['non2xx_status']}"
                          for r, c in zip(rounds, fulfilment))
    line = (f"{ORDERS_ROW}: {paid} orders marked paid, {answered} 2xx answers "
            f"(per round paid/2xx: {per_round}); {recorded} of the events in the ledger")
    if paid == answered == recorded:
        print(f"{line}: ok")
        return True
    if paid == recorded and answered <= paid <= answered + unanswered:
        print(f"{line}: mismatch of {paid - answered}, applied after wrk stopped "
              f"(of the {unanswered} requests it left unanswered)")
        return True
    print(f"{line}: MISMATCH ({unanswered} requests left unanswered by wrk; "
          "see webhook_failures and the app's log)")
    return False


if __name__ == "__main__":
    sys.exit(serve_bare() if sys.argv[1:] == ["serve-bare"] else main())
