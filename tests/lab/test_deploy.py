"""Rolling deploys of the running lab under load (playbooks/deploy.yml, playbooks/rollback.yml).

Releases A and B are the same image (built from the current tree by `scripts/lab.sh release`)
under two tags: the version the app reports comes from the deploy, not from the image. The
broken release is that image with a command that never serves. While each deploy runs,
tests/lab/load.py sends GET /api/products and order-creating POST /api/payment-intents
(Idempotency-Key) through the load balancer; every test asserts no failed request, the
X-App-Version transitions, and that every acknowledged order is in the database exactly once.

Slow (several deploys): selected by the `lab_deploy` marker and run only when LAB_DEPLOY=1
(`scripts/lab.sh verify-deploy`, called by `scripts/lab.sh test` after the stack tests).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import load  # noqa: E402  (tests/lab/load.py)
from labtools import ansible_env, playbook  # noqa: E402  (tests/lab/labtools.py)

pytestmark = [
    pytest.mark.lab,
    pytest.mark.lab_deploy,
    pytest.mark.timeout(900),
    pytest.mark.skipif(os.environ.get("LAB_DEPLOY") != "1",
                       reason="deploy tests run with LAB_DEPLOY=1 (scripts/lab.sh verify-deploy)"),
]

HTTPS = load.LB_URL
REGISTRY = "127.0.0.1:5000"
RUN = uuid.uuid4().hex[:6]
A, B, BROKEN = f"deploy-a-{RUN}", f"deploy-b-{RUN}", f"deploy-broken-{RUN}"
HALF = f"deploy-half-{RUN}"
BROKEN_DOCKERFILE = """\
FROM {registry}/payments-app:{base}
# A release that never serves: readiness can never answer.
CMD ["sh", "-c", "echo 'broken release: this command never serves HTTP' >&2; exec sleep 3600"]
"""
# Serves on app1, never on app2 (10.77.0.22): app1 is switched, then has to go back.
HALF_DOCKERFILE = """\
FROM {registry}/payments-app:{base}
CMD ["sh", "-c", "if [ \\"$HOST\\" = 10.77.0.22 ]; then echo 'half release: not on app2' >&2; exec sleep 3600; fi; \
exec python -m payments serve"]
"""


def run(command: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, env=ansible_env(), capture_output=True, text=True, timeout=timeout)


def served_version() -> str:
    return httpx.get(f"{HTTPS}/api/health", verify=False, timeout=10).json()["version"]


def psql(sql: str) -> str:
    return subprocess.run(
        ["docker", "exec", "db1", "runuser", "-u", "postgres", "--", "psql", "-d", "payments", "-XAtq",
         "-v", "ON_ERROR_STOP=1", "-c", sql],
        check=True, capture_output=True, text=True, timeout=60).stdout.strip()


def under_load(command: list[str], shopper: load.Shopper) -> tuple[load.LoadResult, load.CommandRun]:
    return asyncio.run(load.load_during(command, shopper=shopper, cwd=str(ROOT), env=ansible_env(),
                                        concurrency=8, post_every=10))


def assert_no_failed_request(result: load.LoadResult) -> None:
    summary = result.summary()
    assert result.sent > 100, summary
    assert not result.failures, f"failed requests (connection errors or 5xx): {summary}"
    assert not result.unexpected, f"unexpected statuses: {summary['statuses']} {[vars(s) for s in result.unexpected[:3]]}"


def assert_orders_exactly_once(result: load.LoadResult, shopper: load.Shopper) -> None:
    assert result.orders, "no order was acknowledged during the run"
    ids = ",".join(f"'{order_id}'" for order_id in result.orders.values())
    found = psql(f"SELECT id FROM orders WHERE id IN ({ids})").splitlines()
    assert sorted(found) == sorted(result.orders.values()), "acknowledged orders missing from the database"
    # Every order of this shopper was acknowledged (none created twice, none behind a failure).
    total = int(psql(f"SELECT count(*) FROM orders o JOIN users u ON u.id = o.user_id "
                     f"WHERE u.email = '{shopper.email}'"))
    assert total == shopper_orders(shopper), f"{total} orders in the database for {shopper.email}"


ACKNOWLEDGED: dict[str, int] = {}


def shopper_orders(shopper: load.Shopper) -> int:
    return ACKNOWLEDGED.get(shopper.email, 0)


def count_orders(result: load.LoadResult, shopper: load.Shopper) -> None:
    ACKNOWLEDGED[shopper.email] = ACKNOWLEDGED.get(shopper.email, 0) + len(result.orders)


@pytest.fixture(scope="module")
def releases():
    """A and B (the current tree, twice), the broken release; the lab starts on A. Afterwards
    the lab goes back to the release it ran before."""
    original = served_version()
    for tag in (A, B):
        result = subprocess.run(["scripts/lab.sh", "release", tag], cwd=ROOT, capture_output=True, text=True,
                                timeout=900, env=ansible_env())
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for tag, dockerfile in ((BROKEN, BROKEN_DOCKERFILE), (HALF, HALF_DOCKERFILE)):
        built = subprocess.run(["docker", "build", "-q", "-t", f"{REGISTRY}/payments-app:{tag}", "-"],
                               input=dockerfile.format(registry=REGISTRY, base=A), capture_output=True,
                               text=True, timeout=300)
        assert built.returncode == 0, built.stderr
        subprocess.run(["docker", "push", "-q", f"{REGISTRY}/payments-app:{tag}"], check=True,
                       capture_output=True, timeout=300)
    first = run(playbook("deploy.yml", "-e", f"app_version={A}"))
    assert first.returncode == 0, first.stdout[-4000:]
    assert served_version() == A
    yield {"original": original}
    run(playbook("deploy.yml", "-e", f"app_version={original}"))


@pytest.fixture(scope="module")
def shopper(releases) -> load.Shopper:
    return load.sign_up(HTTPS)


def test_deploy_b_over_a_under_load_loses_no_request(releases, shopper):
    result, deploy = under_load(playbook("deploy.yml", "-e", f"app_version={B}"), shopper)
    count_orders(result, shopper)
    print(json.dumps({"deploy_seconds": round(deploy.seconds, 1), **result.summary()}))
    assert deploy.returncode == 0, deploy.output[-4000:]
    assert "failed=0" in deploy.output
    assert_no_failed_request(result)
    assert result.transitions()[0] == A and result.transitions()[-1] == B, result.transitions()
    assert set(result.versions()) == {A, B}
    # Once the deploy is over, only B answers.
    assert {s.version for s in result.samples if s.at > deploy.started_at + deploy.seconds} == {B}
    assert_orders_exactly_once(result, shopper)


def test_a_customer_pays_by_card_in_the_browser_right_after_the_deploy(releases, tmp_path):
    """The front door's purchase (tests/lab/test_front_door.py) on the release just rolled
    out: a release that breaks the checkout page is caught before customers are sent to it."""
    import frontdoor

    assert served_version() == B
    home = frontdoor.trusting_home(tmp_path, "lb1")
    with frontdoor.chromium(home) as browser:
        customer = frontdoor.Customer(browser)
        with customer.problems.none_allowed("sign-up and card payment after the deploy"):
            customer.sign_up()
            order_id = customer.pay_by_card("notebook")
        assert customer.wait_for_order(order_id, "paid")["status"] == "paid"
        customer.close()


def test_release_that_never_becomes_ready_keeps_b_and_fails_naming_the_host(releases, shopper):
    result, deploy = under_load(
        playbook("deploy.yml", "-e", f"app_version={BROKEN}", "-e", "deploy_ready_timeout=15"), shopper)
    count_orders(result, shopper)
    print(json.dumps({"deploy_seconds": round(deploy.seconds, 1), **result.summary()}))
    assert deploy.returncode != 0, deploy.output[-4000:]
    assert "Deploy stopped on app1" in deploy.output, deploy.output[-4000:]
    assert "did not answer /readyz with 200 within 15 s" in deploy.output
    assert "this command never serves HTTP" in deploy.output, "the new container's log lines are not printed"
    assert_no_failed_request(result)
    assert set(result.versions()) == {B}, result.transitions()
    assert_orders_exactly_once(result, shopper)
    # Nothing of the broken release is left running.
    for host in ("app1", "app2"):
        names = subprocess.run(["docker", "exec", host, "docker", "ps", "--format", "{{.Names}} {{.Image}}"],
                               check=True, capture_output=True, text=True).stdout
        assert BROKEN not in names and "payments-app-next" not in names, names


def test_failure_on_the_second_host_switches_the_first_one_back(releases, shopper):
    result, deploy = under_load(
        playbook("deploy.yml", "-e", f"app_version={HALF}", "-e", "deploy_ready_timeout=15"), shopper)
    count_orders(result, shopper)
    print(json.dumps({"deploy_seconds": round(deploy.seconds, 1), **result.summary()}))
    assert deploy.returncode != 0, deploy.output[-4000:]
    assert "Deploy stopped on app2" in deploy.output, deploy.output[-4000:]
    assert "Switched back: app1" in deploy.output, deploy.output[-4000:]
    assert "half release: not on app2" in deploy.output
    assert_no_failed_request(result)
    assert set(result.versions()) <= {B, HALF} and result.transitions()[-1] == B, result.transitions()
    # No mixed versions left: only B once the deploy is over, on both hosts.
    assert {s.version for s in result.samples if s.at > deploy.started_at + deploy.seconds} == {B}
    for host in ("app1", "app2"):
        labels = json.loads(subprocess.run(
            ["docker", "exec", host, "docker", "inspect", "-f", "{{json .Config.Labels}}", "payments-app"],
            check=True, capture_output=True, text=True).stdout)
        assert labels["org.opencontainers.image.version"] == B, (host, labels)
        # The rollback target is still A (the release before B), not the failed one.
        assert labels["org.payments.previous-version"] == A, (host, labels)
    assert_orders_exactly_once(result, shopper)


def test_rollback_from_b_to_a_under_load(releases, shopper):
    result, rollback = under_load(playbook("rollback.yml"), shopper)
    count_orders(result, shopper)
    print(json.dumps({"rollback_seconds": round(rollback.seconds, 1), **result.summary()}))
    assert rollback.returncode == 0, rollback.output[-4000:]
    assert_no_failed_request(result)
    assert result.transitions()[0] == B and result.transitions()[-1] == A, result.transitions()
    assert {s.version for s in result.samples if s.at > rollback.started_at + rollback.seconds} == {A}
    assert_orders_exactly_once(result, shopper)


def test_a_second_deploy_is_refused_while_one_runs(releases):
    first = subprocess.Popen(playbook("deploy.yml", "-e", f"app_version={B}"), cwd=ROOT, env=ansible_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "exec", "lb1", "test", "-s", "/var/lib/payments-deploy/deploy.lock"]).returncode:
            assert time.monotonic() < deadline and first.poll() is None, "the first deploy never took the lock"
            time.sleep(0.2)
        started = time.monotonic()
        second = run(playbook("deploy.yml", "-e", f"app_version={A}"), timeout=120)
        refused_after = time.monotonic() - started
    finally:
        output, _ = first.communicate(timeout=600)
    assert first.returncode == 0, output[-4000:]
    assert second.returncode != 0
    assert "Another deploy holds the lock" in second.stdout, second.stdout[-3000:]
    holder = f"{os.environ.get('USER') or subprocess.run(['id', '-un'], capture_output=True, text=True).stdout.strip()}@"
    assert holder in second.stdout and "since 20" in second.stdout, second.stdout[-3000:]
    assert refused_after < 30, f"refusing took {refused_after:.0f} s"
    assert served_version() == B


def test_every_deploy_is_in_the_deploy_log(releases):
    lines = subprocess.run(["docker", "exec", "app2", "tail", "-n", "5", "/var/log/payments/deploys.log"],
                           check=True, capture_output=True, text=True).stdout.splitlines()
    records = [json.loads(line) for line in lines]
    last = records[-1]
    assert last["kind"] == "deploy" and last["version"] == B and last["previous_version"] == A
    assert last["result"] == "success" and last["duration_s"] >= 1 and last["who"]
    assert any(r["version"] == BROKEN and r["result"] == "failed" and "app1" in r["failure"] for r in records)
    assert any(r["kind"] == "rollback" and r["version"] == A and r["previous_version"] == B for r in records)
