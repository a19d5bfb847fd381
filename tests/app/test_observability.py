"""/metrics in Prometheus text format and the JSON access log on stdout."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from payments import metrics


def samples(text: str) -> dict[tuple, float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_exposes_request_counters_by_route_template(app, client):
    await client.get("/api/products/some-slug")
    await client.get("/api/products/other-slug")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    key = ("http_requests_total", (("method", "GET"), ("route", "/api/products/{slug}"), ("status", "404")))
    assert found[key] >= 2
    bucket_names = {name for name, _ in found if name.startswith("http_request_duration_seconds")}
    assert {"http_request_duration_seconds_bucket", "http_request_duration_seconds_count"} <= bucket_names
    # Raw paths never become label values.
    assert not any(dict(labels).get("route") == "/api/products/some-slug" for _, labels in found)


async def test_metrics_counts_grow_with_each_request(client):
    key = ("http_requests_total", (("method", "GET"), ("route", "/livez"), ("status", "200")))
    before = samples((await client.get("/metrics")).text).get(key, 0)
    for _ in range(3):
        await client.get("/livez")
    after = samples((await client.get("/metrics")).text)[key]
    assert after == before + 3


async def test_metrics_include_stripe_counters_and_pool_gauges(client):
    metrics.STRIPE_PAYMENTS_TOTAL.labels(status="succeeded", currency="usd").inc()
    metrics.STRIPE_WEBHOOK_EVENTS_TOTAL.labels(type="payment_intent.succeeded", outcome="processed").inc()
    found = samples((await client.get("/metrics")).text)
    assert found[("stripe_payments_total", (("currency", "usd"), ("status", "succeeded")))] >= 1
    assert found[("stripe_webhook_events_total",
                  (("outcome", "processed"), ("type", "payment_intent.succeeded")))] >= 1
    assert found[("db_pool_max_connections", ())] >= 1
    assert ("db_pool_connections", (("state", "open"),)) in found
    assert ("db_pool_requests_waiting", ()) in found


async def test_unmatched_paths_share_one_route_label(client):
    await client.get("/wp-admin/setup.php")
    found = samples((await client.get("/metrics")).text)
    key = ("http_requests_total", (("method", "GET"), ("route", "<unmatched>"), ("status", "404")))
    assert found[key] >= 1


async def test_access_log_is_one_json_object_per_line(settings, client_for, capsys):
    client = await client_for(settings, log_level="info")
    capsys.readouterr()
    response = await client.get("/api/products/missing-thing", headers={"X-Request-ID": "req-abc-123"})
    assert response.headers["x-request-id"] == "req-abc-123"
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line parses on its own
    access = [r for r in records if r.get("event") == "request"]
    assert len(access) == 1
    record = access[0]
    assert record["request_id"] == "req-abc-123"
    assert record["route"] == "/api/products/{slug}"
    assert record["status"] == 404
    assert record["level"] == "info"
    assert isinstance(record["duration_ms"], float)
    assert record["time"].endswith("Z") or "+00:00" in record["time"]


async def test_request_id_is_generated_when_missing_or_unsafe(client):
    plain = await client.get("/livez")
    assert len(plain.headers["x-request-id"]) == 32
    unsafe = await client.get("/livez", headers={"X-Request-ID": "bad id\nwith newline"})
    assert unsafe.headers["x-request-id"] != "bad id\nwith newline"


async def test_unhandled_error_is_json_500_with_version_and_logged(settings, client_for, capsys):
    from starlette.routing import Route

    from payments import app as app_module

    async def boom(request):
        raise RuntimeError("kaboom")

    class BoomRoutes:
        routes = [Route("/boom", boom)]

    app_module.ROUTE_MODULES.append(BoomRoutes)
    try:
        client = await client_for(settings, log_level="info")
    finally:
        app_module.ROUTE_MODULES.remove(BoomRoutes)
    capsys.readouterr()
    response = await client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal_error", "message": "Something went wrong on our side."}}
    assert response.headers["x-app-version"] == settings.app_version
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    error = next(r for r in records if r.get("event") == "unhandled_error")
    assert error["level"] == "error" and "kaboom" in error["exception"]
