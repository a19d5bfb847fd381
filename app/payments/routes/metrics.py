"""GET /metrics in Prometheus text format. nginx keeps it off the public site."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from payments.mail.outbox import read_pending
from payments.metrics import (
    MAIL_OUTBOX_QUERY_ERRORS_TOTAL,
    MailOutboxCollector,
    STRIPE_WEBHOOK_BACKLOG_QUERY_ERRORS_TOTAL,
    WebhookBacklogCollector,
    render_latest,
    update_pool_gauges,
)
from payments.webhooks.backlog import read_backlog


async def metrics_endpoint(request: Request) -> Response:
    pool = request.app.state.db
    update_pool_gauges(pool)
    # Read at scrape time, bounded to a few seconds; None: PostgreSQL did not answer.
    # The mail outbox is read the same way, at the same time (two pooled connections).
    backlog, pending = await asyncio.gather(read_backlog(pool), read_pending(pool))
    if backlog is None:
        # Counted before rendering, so this very scrape already shows the failure.
        STRIPE_WEBHOOK_BACKLOG_QUERY_ERRORS_TOTAL.inc()
    if pending is None:
        MAIL_OUTBOX_QUERY_ERRORS_TOTAL.inc()
    body, content_type = render_latest(WebhookBacklogCollector(backlog), MailOutboxCollector(pending))
    return Response(body, media_type=content_type)


routes = [Route("/metrics", metrics_endpoint, methods=["GET"])]
