"""End-to-end behaviour of the running lab (`make lab`, or `scripts/lab.sh up`).

Everything goes through the real stack: nginx on lb1 (published on 127.0.0.1:8443/8080),
the app containers on app1/app2, PostgreSQL streaming from db1 to db2, Redis on cache1, and
the nftables firewalls of each host. Checks from inside a host run with `docker exec`.
Traffic goes only to loopback and the lab's own container addresses.

When the lab is not running these tests are skipped, unless LAB_REQUIRED=1 (set by
`scripts/lab.sh verify|test`), where they fail: a verify step must not pass by skipping.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
HTTPS = "https://127.0.0.1:8443"
HTTP = "http://127.0.0.1:8080"
POSTGRESQL_PORT = 5432
REDIS_PORT = 6379


def run_in(host: str, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "exec", host, *command], check=check, capture_output=True,
                          text=True, timeout=60)


def psql(host: str, sql: str, database: str = "postgres") -> str:
    return run_in(host, "runuser", "-u", "postgres", "--", "psql", "-d", database,
                  "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql).stdout.strip()


def connect_from(host: str, address: str, port: int, send: bytes = b"") -> subprocess.CompletedProcess:
    """Open a TCP connection from inside `host`; print what the server answers to `send`."""
    script = (
        "import socket, sys\n"
        f"s = socket.create_connection(({address!r}, {port}), timeout=3)\n"
        f"s.sendall({send!r})\n"
        "s.settimeout(3)\n"
        f"print(s.recv(200).decode() if {bool(send)!r} else 'connected')\n"
    )
    return run_in(host, "python3", "-c", script, check=False)


@pytest.fixture(scope="module")
def client():
    # The lab's certificate is self-signed.
    with httpx.Client(verify=False, timeout=10, follow_redirects=False) as c:
        yield c


def test_catalog_over_https_comes_from_the_app_and_the_database(lab, client):
    response = client.get(f"{HTTPS}/api/products")
    assert response.status_code == 200, response.text
    slugs = {product["slug"] for product in response.json()["products"]}
    assert slugs, "the demo catalog is empty: was it seeded (scripts/lab.sh up)?"
    in_database = set(psql(lab["db_primary"], "SELECT slug FROM products WHERE active",
                           database="payments").splitlines())
    assert slugs <= in_database


def test_app_health_reports_database_and_redis_up(lab, client):
    body = client.get(f"{HTTPS}/api/health").json()
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["redis"]["status"] == "ok"


def test_plain_http_redirects_to_https(lab, client):
    response = client.get(f"{HTTP}/api/products")
    assert response.status_code in (301, 308)
    assert response.headers["location"].startswith("https://")
    assert response.headers["location"].endswith("/api/products")


def test_security_headers_are_present(lab, client):
    headers = client.get(f"{HTTPS}/api/products").headers
    assert "max-age=" in headers["strict-transport-security"]
    assert headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["referrer-policy"]
    assert "server" not in headers or "/" not in headers["server"], "nginx must not reveal its version"


def test_row_written_on_primary_appears_on_replica(lab):
    primary, replica = lab["db_primary"], lab["db_replica"]
    token = uuid.uuid4().hex
    psql(primary, "CREATE TABLE IF NOT EXISTS lab_e2e_replication "
                  "(token text PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT now())")
    psql(primary, f"INSERT INTO lab_e2e_replication (token) VALUES ('{token}')")
    deadline = time.monotonic() + 15
    while True:
        try:
            found = psql(replica, f"SELECT count(*) FROM lab_e2e_replication WHERE token = '{token}'")
        except subprocess.CalledProcessError:  # table not replayed yet
            found = "0"
        if found == "1":
            break
        assert time.monotonic() < deadline, "the row written on the primary never reached the replica"
        time.sleep(0.5)
    assert psql(replica, "SELECT pg_is_in_recovery()") == "t"


def test_primary_shows_the_replica_streaming(lab):
    rows = psql(lab["db_primary"], "SELECT application_name || ' ' || state FROM pg_stat_replication")
    assert f"{lab['db_replica']} streaming" in rows.splitlines(), rows


@pytest.mark.parametrize("service,port", [("db_primary", POSTGRESQL_PORT), ("cache", REDIS_PORT)])
def test_data_ports_refused_from_the_load_balancer(lab, service, port):
    result = connect_from(lab["lb"], lab["address"][lab[service]], port)
    assert result.returncode != 0, f"{service}:{port} answered lb1: {result.stdout}"
    # Dropped by the firewall (its input policy is drop: the connection times out), not
    # refused by a port with nothing listening, nor any other failure.
    assert "TimeoutError" in result.stderr or "timed out" in result.stderr, result.stderr


@pytest.mark.parametrize("service,port", [("db_primary", POSTGRESQL_PORT), ("cache", REDIS_PORT)])
def test_data_ports_answer_the_app_hosts(lab, service, port):
    for app in lab["app"]:
        result = connect_from(app, lab["address"][lab[service]], port)
        assert result.returncode == 0, f"{service}:{port} refused {app}: {result.stderr}"


def test_redis_refuses_commands_without_the_password(lab):
    result = connect_from(lab["app"][0], lab["address"][lab["cache"]], REDIS_PORT, b"PING\r\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("-NOAUTH"), result.stdout


def burst_from(host: str, address: str, path: str, limit: int) -> list[int]:
    """Statuses of up to `limit` back-to-back HTTPS GETs of `path` on lb1, sent from inside
    `host` (a client the lab does not exempt from any rate limit), stopping at the first 429."""
    script = (
        "import http.client, ssl\n"
        f"c = http.client.HTTPSConnection({address!r}, 443, timeout=5,"
        " context=ssl._create_unverified_context())\n"
        f"for _ in range({limit}):\n"
        f"    c.request('GET', {path!r}); r = c.getresponse(); r.read(); print(r.status)\n"
        "    if r.status == 429: break\n"
    )
    return [int(line) for line in run_in(host, "python3", "-c", script).stdout.split()]


@pytest.mark.parametrize("path,zone", [("/", "general"), ("/api/products", "api")])
def test_general_and_api_zones_answer_429_beyond_their_burst(lab, path, zone):
    # From app2: its address is limited in every zone (the exemption is this machine's only).
    # Bounded: general allows 10 r/s + a burst of 20, api 30 r/min + a burst of 50.
    statuses = burst_from(lab["app"][-1], lab["address"][lab["lb"]], path, 150)
    assert statuses[-1] == 429, f"{zone}: no 429 after {len(statuses)} requests"
    assert statuses[0] == 200, f"{zone}: the first request got {statuses[0]}"


def test_requests_beyond_the_burst_get_429(lab, client):
    # Runs last: it empties this client's rate-limit bucket. Bounded: at most 120 requests.
    # The auth zone (/sign-in): the lab exempts this machine's traffic from the api and general
    # zones (nginx_lb_rate_limit_exempt_sources, for the deploy tests' load), never from auth.
    statuses = []
    for _ in range(120):
        statuses.append(client.get(f"{HTTPS}/sign-in").status_code)
        if statuses[-1] == 429:
            break
    assert statuses[-1] == 429, f"no 429 after {len(statuses)} requests"
    assert statuses[0] == 200
