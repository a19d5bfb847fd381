"""GET /metrics in Prometheus text format. nginx keeps it off the public site."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from payments.metrics import render_latest, update_pool_gauges


async def metrics_endpoint(request: Request) -> Response:
    update_pool_gauges(request.app.state.db)
    body, content_type = render_latest()
    return Response(body, media_type=content_type)


routes = [Route("/metrics", metrics_endpoint, methods=["GET"])]
