"""Every Prometheus metric the app exports, defined once here.

Hypercorn runs several worker processes. When PROMETHEUS_MULTIPROC_DIR is set (the
`serve` command sets it when WEB_CONCURRENCY > 1), prometheus_client keeps values in
files there and GET /metrics aggregates all workers, whichever one answers the scrape.
Without it (tests, a single worker) each process serves its own registry.

The webhook backlog gauges are not stored: each scrape reads them from PostgreSQL
(payments/webhooks/backlog.py) and `render_latest` appends them, so whichever worker
answers reports the database's current value, and nothing when it could not read it.
So are the mail outbox gauges (payments/mail/outbox.py).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client.core import GaugeMetricFamily

from payments.webhooks.backlog import GRACE_SECONDS, Backlog

# Request latencies up to a few seconds; Stripe round trips sit in the upper buckets.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)

HTTP_REQUEST_DURATION_SECONDS = Histogram(
    "http_request_duration_seconds",
    "Time spent answering HTTP requests.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
HTTP_REQUESTS_TOTAL = Counter(
    "http_requests_total",
    "HTTP requests answered.",
    ["method", "route", "status"],
)
# Incremented by the webhook handlers when a payment reaches a final status.
STRIPE_PAYMENTS_TOTAL = Counter(
    "stripe_payments_total",
    "Payments by final status (succeeded, failed, refunded) and currency.",
    ["status", "currency"],
)
# Incremented by POST /api/webhooks/stripe: outcome is processed, duplicate, ignored,
# bad_signature or error.
STRIPE_WEBHOOK_EVENTS_TOTAL = Counter(
    "stripe_webhook_events_total",
    "Stripe webhook events received, by event type and outcome.",
    ["type", "outcome"],
)
# Incremented by GET /metrics when it could not read the webhook backlog (PostgreSQL down,
# slow or out of connections): the backlog gauges are then left out of that scrape.
STRIPE_WEBHOOK_BACKLOG_QUERY_ERRORS_TOTAL = Counter(
    "stripe_webhook_backlog_query_errors_total",
    "Scrapes that could not read the Stripe webhook backlog from PostgreSQL.",
)
# Incremented by GET /metrics when it could not read the mail outbox's pending rows.
MAIL_OUTBOX_QUERY_ERRORS_TOTAL = Counter(
    "mail_outbox_query_errors_total",
    "Scrapes that could not read the mail outbox from PostgreSQL.",
)
# Pool gauges are summed over live workers: the totals for this host.
DB_POOL_CONNECTIONS = Gauge(
    "db_pool_connections",
    "PostgreSQL pool connections by state (open, idle, in_use).",
    ["state"],
    multiprocess_mode="livesum",
)
DB_POOL_MAX_CONNECTIONS = Gauge(
    "db_pool_max_connections",
    "Configured maximum size of the PostgreSQL pool.",
    multiprocess_mode="livesum",
)
DB_POOL_REQUESTS_WAITING = Gauge(
    "db_pool_requests_waiting",
    "Requests waiting for a PostgreSQL connection.",
    multiprocess_mode="livesum",
)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def update_pool_gauges(pool) -> None:
    """Copy psycopg_pool's counters into the gauges (called on scrape and periodically)."""
    stats = pool.get_stats()
    size = stats.get("pool_size", 0)
    idle = stats.get("pool_available", 0)
    DB_POOL_CONNECTIONS.labels(state="open").set(size)
    DB_POOL_CONNECTIONS.labels(state="idle").set(idle)
    DB_POOL_CONNECTIONS.labels(state="in_use").set(max(size - idle, 0))
    DB_POOL_MAX_CONNECTIONS.set(stats.get("pool_max", pool.max_size))
    DB_POOL_REQUESTS_WAITING.set(stats.get("requests_waiting", 0))


class WebhookBacklogCollector:
    """The backlog gauges of one scrape; none when `backlog` is None (it could not be read)."""

    def __init__(self, backlog: Backlog | None) -> None:
        self.backlog = backlog

    def collect(self):
        if self.backlog is None:
            return
        yield GaugeMetricFamily(
            "stripe_webhook_events_unprocessed",
            f"Stripe events that failed and are not processed yet (first failure over {GRACE_SECONDS} s ago).",
            value=self.backlog.unprocessed,
        )
        yield GaugeMetricFamily(
            "stripe_webhook_oldest_unprocessed_age_seconds",
            "Seconds since the first failure of the oldest unprocessed Stripe event; 0 when none.",
            value=self.backlog.oldest_age_seconds,
        )


class MailOutboxCollector:
    """The mail outbox gauges of one scrape; none when `pending` is None (not read)."""

    def __init__(self, pending) -> None:
        self.pending = pending

    def collect(self):
        if self.pending is None:
            return
        yield GaugeMetricFamily("mail_outbox_pending", "Mails in the outbox not sent yet (pending).",
                                value=self.pending.count)
        yield GaugeMetricFamily("mail_outbox_oldest_pending_age_seconds",
                                "Seconds since the oldest pending mail was written; 0 when none.",
                                value=self.pending.oldest_age_seconds)


def render_latest(*scrape_collectors) -> tuple[bytes, str]:
    """The exposition text for GET /metrics and its content type.

    `scrape_collectors` hold values read for this scrape only (WebhookBacklogCollector)."""
    if multiprocess_enabled():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = DEFAULT_REGISTRY
    body = generate_latest(registry)
    if scrape_collectors:
        # A registry per scrape: the values never outlive it. Its names differ from the
        # stored metrics', so the two texts concatenate into one valid exposition.
        extra = CollectorRegistry()
        for collector in scrape_collectors:
            extra.register(collector)
        body += generate_latest(extra)
    return body, CONTENT_TYPE_LATEST


def mark_worker_exited(pid: int) -> None:
    """Drop a stopped worker's live gauges so they leave the sums."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(pid)
