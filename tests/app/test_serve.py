"""`python -m payments serve`: hypercorn with workers from WEB_CONCURRENCY, as in the image."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import services


def unprocessed_samples(metrics_text: str) -> list[float]:
    return [sample.value for family in text_string_to_metric_families(metrics_text)
            for sample in family.samples if sample.name == "stripe_webhook_events_unprocessed"]


def livez_count(metrics_text: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if (sample.name == "http_requests_total" and sample.labels.get("route") == "/livez"
                    and sample.labels.get("status") == "200"):
                return sample.value
    return 0


def worker_pids(supervisor_pid: int) -> list[int]:
    """hypercorn's worker processes: the supervisor's children started by multiprocessing's
    spawn (its resource tracker is a child too, and is left out)."""
    children = Path(f"/proc/{supervisor_pid}/task/{supervisor_pid}/children").read_text().split()
    pids = []
    for pid in map(int, children):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            pids.append(pid)
    return pids


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def serve_env(settings_env: dict, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in settings_env and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(settings_env, **extra)
    return env


def test_sigterm_lets_in_flight_requests_finish_on_every_worker(settings_env, tmp_path):
    """Rolling deploys stop a container with SIGTERM: a request already inside a worker
    must still be answered, even after the other worker has drained and exited."""
    server = services.start_app_server(tmp_path / "serve", serve_env(settings_env, GRACEFUL_TIMEOUT="30"),
                                       workers=2, command=[sys.executable, "-m", "payments", "serve"])
    try:
        assert len(worker_pids(server.process.pid)) == 2
        body = json.dumps({"email": "nobody@example.com", "password": "not-the-password"}).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            sock.sendall(b"POST /api/auth/sign-in HTTP/1.1\r\nHost: testserver\r\n"
                         b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body))
            # "100 Continue" comes once a worker runs the request and waits for its body.
            assert read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 100")

            server.process.send_signal(signal.SIGTERM)
            # Wait (on an event, not a delay) until the idle worker has drained and exited:
            # the moment hypercorn's supervisor used to terminate the busy one.
            deadline = time.monotonic() + 60
            while len(worker_pids(server.process.pid)) > 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(worker_pids(server.process.pid)) == 1

            sock.sendall(body)
            response = read_until(sock, b"invalid_credentials")

        head = response.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 401"), response
        assert b"x-app-version: test" in head
        assert server.process.wait(timeout=60) == 0
    finally:
        server.stop()


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
            scrapes = [http.get("/metrics", headers={"Connection": "close"}).text for _ in range(6)]
            assert all(livez_count(text) >= before + 20 for text in scrapes)
            # The webhook backlog is read from PostgreSQL by whichever worker answers, once.
            assert all(unprocessed_samples(text) == [0.0] for text in scrapes)
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
