"""`python -m payments serve`: hypercorn with workers from WEB_CONCURRENCY, as in the image."""

from __future__ import annotations

import json
import os
import sys

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import services


def livez_count(metrics_text: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if (sample.name == "http_requests_total" and sample.labels.get("route") == "/livez"
                    and sample.labels.get("status") == "200"):
                return sample.value
    return 0


def test_serve_runs_workers_that_share_metrics_and_log_json(settings_env, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in settings_env and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(settings_env, LOG_LEVEL="info")
    server = services.start_app_server(tmp_path / "serve", env, workers=2,
                                       command=[sys.executable, "-m", "payments", "serve"])
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            first = http.get("/livez")
            assert first.status_code == 200
            assert first.headers["x-app-version"] == settings_env["APP_VERSION"]
            before = livez_count(http.get("/metrics").text)
            for _ in range(20):
                assert http.get("/livez").status_code == 200
            # Whichever worker answers a scrape reports the total over both workers.
            totals = {livez_count(http.get("/metrics", headers={"Connection": "close"}).text) for _ in range(6)}
            assert all(total >= before + 20 for total in totals)
            assert http.get("/readyz").status_code == 200
            assert http.get("/api/products").status_code == 200
    finally:
        server.stop()
    # Every line the server wrote (app, hypercorn, libraries) is one JSON object.
    records = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.strip()]
    routes_logged = {r["route"] for r in records if r.get("event") == "request"}
    assert "/api/products" in routes_logged
    assert "/livez" not in routes_logged  # probes are logged at debug level only
    assert sum(1 for r in records if r.get("event") == "app_started") == 2  # one per worker
