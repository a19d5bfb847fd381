"""Failover of the running lab's PostgreSQL under load (playbooks/failover.yml, rejoin.yml).

While tests/lab/load.py creates orders through the load balancer, db1 (the primary) is
killed with `docker kill` and playbooks/failover.yml promotes db2. The lab runs synchronous
replication (inventories/lab/group_vars/db.yml), so every order the app acknowledged must be
on db2. The app must take orders again without a restart. Then playbooks/rejoin.yml makes
db1 a replica of db2, and a planned switchover (failover.yml with db1 and db2 swapped, then
rejoin.yml for db2) brings the lab back to the layout its inventory names.

Slow (a failover, two clones and a switchover): selected by the `lab_failover` marker and run
only when LAB_FAILOVER=1 (`scripts/lab.sh verify-failover`, called by `scripts/lab.sh test`).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import load  # noqa: E402  (tests/lab/load.py)
from labtools import ansible_env, playbook  # noqa: E402  (tests/lab/labtools.py)

pytestmark = [
    pytest.mark.lab,
    pytest.mark.lab_failover,
    pytest.mark.timeout(1500),
    pytest.mark.skipif(os.environ.get("LAB_FAILOVER") != "1",
                       reason="failover tests run with LAB_FAILOVER=1 (scripts/lab.sh verify-failover)"),
]

FENCE_FILE = "/etc/nftables.d/db-fence.nft"


def run_playbook(name: str, *extra: str) -> str:
    result = subprocess.run(playbook(name, *extra), cwd=ROOT, env=ansible_env(), capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, f"{name} {extra} failed:\n{result.stdout[-5000:]}{result.stderr[-2000:]}"
    return result.stdout


def psql(host: str, sql: str) -> str:
    return subprocess.run(
        ["docker", "exec", host, "runuser", "-u", "postgres", "--", "psql", "-d", "payments", "-XAtq",
         "-v", "ON_ERROR_STOP=1", "-c", sql],
        check=True, capture_output=True, text=True, timeout=60).stdout.strip()


def in_recovery(host: str) -> bool:
    return psql(host, "SELECT pg_is_in_recovery()") == "t"


def replication(primary: str) -> list[str]:
    """`application_name state sync_state` of every standby streaming from `primary`."""
    return psql(primary, "SELECT application_name || ' ' || state || ' ' || sync_state FROM pg_stat_replication"
                ).splitlines()


def fence_present(app_host: str) -> bool:
    return subprocess.run(["docker", "exec", app_host, "test", "-e", FENCE_FILE]).returncode == 0


def assert_layout(primary: str, replica: str) -> None:
    assert not in_recovery(primary), f"{primary} should be the primary"
    assert in_recovery(replica), f"{replica} should be a replica"
    # "quorum": synchronous_standby_names is "ANY 1 (...)" (group_vars/all/db.yml).
    assert replication(primary) == [f"{replica} streaming quorum"], replication(primary)


def assert_acknowledged_orders_on(host: str, result: load.LoadResult) -> None:
    assert result.orders, "no order was acknowledged during the run"
    ids = ",".join(f"'{order_id}'" for order_id in result.orders.values())
    found = set(psql(host, f"SELECT id FROM orders WHERE id IN ({ids})").splitlines())
    missing = sorted(set(result.orders.values()) - found)
    assert not missing, f"{len(missing)} of {len(result.orders)} acknowledged orders are not on {host}: {missing[:5]}"


async def kill_and_fail_over(shopper: load.Shopper) -> tuple[load.LoadResult, dict]:
    """Orders flow; db1 is killed; failover.yml runs at once; the load goes on 10 s after it."""
    stop = asyncio.Event()
    traffic = asyncio.create_task(load.run_load(shopper=shopper, concurrency=6, post_every=2,
                                                max_requests=100_000, max_seconds=600, stop=stop))
    t0 = time.monotonic()
    await asyncio.sleep(5)
    subprocess.run(["docker", "kill", "db1"], check=True, capture_output=True, timeout=60)
    # Once `docker kill` returns the container is gone: requests sent from then on cannot reach it.
    killed_at = time.monotonic() - t0
    proc = await asyncio.create_subprocess_exec(*playbook("failover.yml"), cwd=str(ROOT), env=ansible_env(),
                                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, _ = await proc.communicate()
    failover_done = time.monotonic() - t0
    await asyncio.sleep(10)
    stop.set()
    result = await traffic
    return result, {"returncode": proc.returncode, "output": output.decode(errors="replace"),
                    "killed_at": killed_at, "playbook_done": failover_done}


def test_failover_loses_no_acknowledged_order_and_the_old_primary_rejoins():
    assert_layout("db1", "db2")
    shopper = load.sign_up()

    result, failover = asyncio.run(kill_and_fail_over(shopper))
    assert failover["returncode"] == 0, failover["output"][-5000:]
    posts = [s for s in result.samples if s.kind == "post"]
    before = [s for s in posts if s.at < failover["killed_at"] and s.status == 201]
    first_write = next((s for s in posts if s.at > failover["killed_at"] and s.status == 201), None)
    figures = {
        "orders_acknowledged": len(result.orders),
        "orders_before_kill": len(before),
        "failover_playbook_s": round(failover["playbook_done"] - failover["killed_at"], 1),
        "kill_to_first_order_s": round(first_write.at - failover["killed_at"], 1) if first_write else None,
        "failed_requests": len(result.failures),
    }
    print(json.dumps(figures))
    assert before, "no order was acknowledged before db1 was killed"
    assert first_write is not None, f"no order was acknowledged after the failover: {result.summary()}"
    # After the failover playbook returned, every order is taken again.
    late = [s for s in posts if s.at > failover["playbook_done"] + 2]
    assert late and all(s.status == 201 for s in late), [vars(s) for s in late if s.status != 201][:3]
    assert "database write check passed: committed on 10.77.0.32" in failover["output"]
    assert not in_recovery("db2")
    assert_acknowledged_orders_on("db2", result)
    assert fence_present("app1") and fence_present("app2")

    # db1 comes back: its PostgreSQL starts as a primary of the old timeline, but no app host
    # can reach it (the fence); rejoin.yml clones it from db2.
    subprocess.run(["docker", "start", "db1"], check=True, capture_output=True, timeout=120)
    rejoin_output = run_playbook("rejoin.yml", "-e", "rejoin_host=db1")
    assert "db1 streams from db2" in rejoin_output
    assert_layout("db2", "db1")
    assert_acknowledged_orders_on("db1", result)
    assert not fence_present("app1") and not fence_present("app2")

    # Back to the inventory's layout with a planned switchover: nothing is lost either.
    switch, switch_run = asyncio.run(load.load_during(playbook("failover.yml", "-e", "failover_old_primary=db2",
                                                      "-e", "failover_new_primary=db1"),
                                             shopper=shopper, cwd=str(ROOT), env=ansible_env(),
                                             concurrency=4, post_every=2, tail=5))
    assert switch_run.returncode == 0, switch_run.output[-5000:]
    assert_acknowledged_orders_on("db1", switch)
    run_playbook("rejoin.yml", "-e", "rejoin_host=db2")
    assert_layout("db1", "db2")
    assert_acknowledged_orders_on("db2", result)
    assert_acknowledged_orders_on("db2", switch)
