"""GET /metrics in Prometheus text format. nginx keeps it off the public site."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from payments.metrics import (
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
    backlog = await read_backlog(pool)
    if backlog is None:
        # Counted before rendering, so this very scrape already shows the failure.
        STRIPE_WEBHOOK_BACKLOG_QUERY_ERRORS_TOTAL.inc()
    body, content_type = render_latest(WebhookBacklogCollector(backlog))
    return Response(body, media_type=content_type)


routes = [Route("/metrics", metrics_endpoint, methods=["GET"])]
