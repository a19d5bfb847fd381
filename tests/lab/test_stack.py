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


def test_a_host_name_the_site_does_not_own_gets_no_page_and_no_redirect(lab, client):
    # HTTPS: 421 from nginx itself, no Location (a redirect would send the customer there).
    response = client.get(f"{HTTPS}/sign-in", headers={"Host": "evil.example"})
    assert response.status_code == 421, response.text
    assert "location" not in response.headers
    # Plain HTTP: the connection is closed without an answer (444), so not even a redirect.
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(f"{HTTP}/sign-in", headers={"Host": "evil.example"})
    # The names the site owns still answer.
    assert client.get(f"{HTTPS}/sign-in").status_code == 200
    assert client.get(f"{HTTP}/sign-in").status_code == 301


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


CA_FILE = "/etc/internal-tls/ca.crt"
# PostgreSQL's SSLRequest: the client asks for TLS before its startup message.
PG_SSL_REQUEST = "struct.pack('!II', 8, 80877103)"


def tls_from(host: str, address: str, port: int, cafile: str | None, send: bytes = b"",
             postgresql: bool = False) -> subprocess.CompletedProcess:
    """A TLS client inside `host` that verifies the server against `cafile` (None: only the
    system's CAs) and the address it dials; prints what the server answers to `send`."""
    script = (
        "import socket, ssl, struct\n"
        f"context = ssl.create_default_context(cafile={cafile!r})\n"
        f"raw = socket.create_connection(({address!r}, {port}), timeout=3)\n"
        + (f"raw.sendall({PG_SSL_REQUEST}); assert raw.recv(1) == b'S'\n" if postgresql else "")
        + f"s = context.wrap_socket(raw, server_hostname={address!r})\n"
        f"print('handshake', s.version())\n"
        f"s.sendall({send!r})\n"
        f"print(s.recv(200).decode() if {bool(send)!r} else '')\n"
    )
    return run_in(host, "python3", "-c", script, check=False)


def test_redis_speaks_only_tls_that_the_client_verifies(lab):
    app, address = lab["app"][0], lab["address"][lab["cache"]]
    # Plain text: the server reads it as a broken TLS handshake and closes; no RESP answer.
    plain = connect_from(app, address, REDIS_PORT, b"PING\r\n")
    assert plain.stdout.strip() == "", f"Redis answered plain text: {plain.stdout}"
    # A client that trusts only the system's CAs refuses the server's certificate.
    untrusted = tls_from(app, address, REDIS_PORT, None, b"PING\r\n")
    assert untrusted.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr, untrusted
    # One that trusts the stack CA gets through, and still has to authenticate.
    trusted = tls_from(app, address, REDIS_PORT, CA_FILE, b"PING\r\n")
    assert trusted.returncode == 0, trusted.stderr
    assert "handshake TLSv1.3" in trusted.stdout and "-NOAUTH" in trusted.stdout, trusted.stdout


def test_postgresql_refuses_plain_text_from_an_app_host(lab):
    # A startup message with no SSLRequest first: pg_hba has only hostssl lines for app hosts.
    script = (
        "import socket, struct\n"
        "body = struct.pack('!I', 196608) + b'user\\0payments\\0database\\0payments\\0\\0'\n"
        f"s = socket.create_connection(({lab['address'][lab['db_primary']]!r}, {POSTGRESQL_PORT}), timeout=3)\n"
        "s.sendall(struct.pack('!I', len(body) + 4) + body)\n"
        "print(s.recv(500).decode(errors='replace'))\n"
    )
    result = run_in(lab["app"][0], "python3", "-c", script, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("E") and "no encryption" in result.stdout, result.stdout


def test_postgresql_tls_is_verified_against_the_stack_ca(lab):
    app, address = lab["app"][0], lab["address"][lab["db_primary"]]
    untrusted = tls_from(app, address, POSTGRESQL_PORT, None, postgresql=True)
    assert untrusted.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr, untrusted
    trusted = tls_from(app, address, POSTGRESQL_PORT, CA_FILE, postgresql=True)
    assert trusted.returncode == 0 and "handshake TLSv1.3" in trusted.stdout, trusted


def test_every_remote_postgresql_session_is_encrypted(lab, client):
    # The app holds pooled connections once it has served a query.
    assert client.get(f"{HTTPS}/api/products").status_code == 200
    rows = psql(lab["db_primary"], (
        "SELECT a.backend_type || ' ' || host(a.client_addr) || ' ' || s.ssl"
        " FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)"
        " WHERE a.client_addr IS NOT NULL AND NOT a.client_addr <<= '127.0.0.0/8' AND a.client_addr <> '::1'"
    )).splitlines()
    sessions = [row.rsplit(" ", 1) for row in rows]
    assert any(who.startswith("walsender") for who, _ in sessions), rows
    app_addresses = {lab["address"][host] for host in lab["app"]}
    assert any(who.startswith("client backend") and who.split()[-1] in app_addresses for who, _ in sessions), rows
    assert all(encrypted == "true" for _, encrypted in sessions), rows
    # The replica verifies its primary: its WAL receiver's connection asks for verify-full.
    conninfo = psql(lab["db_replica"], "SELECT conninfo FROM pg_stat_wal_receiver")
    assert "sslmode=verify-full" in conninfo and f"sslrootcert={CA_FILE}" in conninfo, conninfo


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
