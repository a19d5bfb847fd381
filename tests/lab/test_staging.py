"""The staging inventory's shape converged for real: one server in every group.

inventories/staging puts the load balancer, the app, PostgreSQL (no replica) and Redis on one
VPS. molecule/staging rehearses that on one lab container, stage1, with the staging inventory's
own group vars (tier, memory shares) and the lab's stand-ins for what staging would reach on
the network (registry, Stripe, S3). `scripts/lab.sh staging` creates it next to the running
lab, converges playbooks/site.yml on it twice (the second with no change), runs these tests
and removes it.

Selected by the `lab_staging` marker; run only when LAB_STAGING=1 (`scripts/lab.sh staging`).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
REHEARSAL = ROOT / "molecule/staging/inventory"

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labtools import run_in  # noqa: E402  (tests/lab/labtools.py)

pytestmark = [
    pytest.mark.lab,
    pytest.mark.lab_staging,
    pytest.mark.skipif(os.environ.get("LAB_STAGING") != "1",
                       reason="the staging rehearsal runs with LAB_STAGING=1 (scripts/lab.sh staging)"),
]


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def host() -> dict:
    """The rehearsal's one host: its name, address and the staging tier it was tuned for."""
    hosts = _yaml(REHEARSAL / "hosts.yml")["all"]["children"]
    name, values = next(iter(hosts["lb"]["hosts"].items()))
    staging = _yaml(ROOT / "inventories/staging/group_vars/all/main.yml")
    return {"name": name, "address": values["private_address"], "tier": staging["tier"],
            "memory_share": staging["tier_memory_share"]}


@pytest.fixture(scope="module")
def client():
    # The rehearsal's certificate is self-signed.
    with httpx.Client(verify=False, timeout=10, follow_redirects=False) as c:
        yield c


def test_every_group_is_the_one_host(host):
    hosts = _yaml(ROOT / "inventories/staging/hosts.yml")["all"]["children"]
    rehearsal = _yaml(REHEARSAL / "hosts.yml")["all"]["children"]
    for group in ("lb", "app", "cache"):
        assert list(rehearsal[group]["hosts"]) == [host["name"]], group
        assert len(hosts[group]["hosts"]) == 1, group
    assert list(rehearsal["db"]["children"]["db_primary"]["hosts"]) == [host["name"]]
    assert not rehearsal["db"]["children"]["db_replica"]["hosts"]
    assert not hosts["db"]["children"]["db_replica"]["hosts"]


def test_https_reaches_the_app_the_database_and_redis(host, client):
    base = f"https://{host['address']}"
    assert client.get(f"{base}/readyz").status_code == 200
    health = client.get(f"{base}/api/health").json()
    assert health["checks"]["database"]["status"] == "ok", health
    assert health["checks"]["redis"]["status"] == "ok", health
    response = client.get(f"{base}/api/products")
    assert response.status_code == 200, response.text
    assert response.headers["x-app-version"] == os.environ["LAB_APP_VERSION"]


def test_plain_http_redirects_to_https(host, client):
    response = client.get(f"http://{host['address']}/api/products")
    assert response.status_code in (301, 308)
    assert response.headers["location"].startswith("https://")


@pytest.mark.parametrize("port", [5432, 6379])
def test_data_ports_are_closed_to_other_hosts(host, port):
    # This machine is not an app host of the rehearsal: the firewall drops its connections
    # (a timeout; a refusal would mean nothing listens, not that the firewall works).
    with pytest.raises(TimeoutError):
        socket.create_connection((host["address"], port), timeout=3).close()


def test_postgresql_is_tuned_for_its_share_of_the_staging_tier(host):
    # 25 % of the memory PostgreSQL may plan for: the tier's memory times its share.
    planned_mb = host["tier"]["memory_mb"] * host["memory_share"]["postgresql"]
    shared_buffers = run_in(host["name"], "runuser", "-u", "postgres", "--", "psql", "-XAtq", "-c",
                            "SELECT setting::bigint * 8192 / 1048576 FROM pg_settings"
                            " WHERE name = 'shared_buffers'").strip()
    assert abs(int(shared_buffers) - planned_mb * 0.25) <= 1, shared_buffers


def test_backups_archive_into_the_repository(host):
    # pgBackRest with no replica: the primary archives WAL and takes backups itself.
    # `check` exits non-zero (run_in fails the test) unless a WAL segment reaches the repository.
    run_in(host["name"], "runuser", "-u", "postgres", "--", "pgbackrest", "--stanza=payments", "check")
    info = run_in(host["name"], "runuser", "-u", "postgres", "--", "pgbackrest", "--stanza=payments",
                  "--output=json", "info")
    stanza = json.loads(info)[0]
    # 0: backups exist, 2: none yet (the timers take them); 1 would be a missing stanza.
    assert stanza["status"]["code"] in (0, 2), stanza["status"]
    assert stanza["archive"] and stanza["archive"][0]["max"], "no WAL segment in the repository"
