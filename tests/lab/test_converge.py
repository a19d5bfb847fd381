"""playbooks/site.yml re-run on the running lab the way a person at a terminal runs it.

`make lab` exports LAB_APP_VERSION for its own runs; nobody else has it. These runs use a clean
environment (`env -i` with only PATH, the project's venv first, and HOME: no LAB_APP_VERSION, no
ANSIBLE_CONFIG, since ansible.cfg in the working directory is found by itself), so a leftover
variable cannot hide a converge that depends on it:

- with no extra vars, site.yml keeps the release each app host runs and changes nothing;
- with another app_version, app.yml (site.yml's play for the app hosts) is refused on every
  app host, pointing at deploy.yml, and changes nothing;
- on an app host without the app container (an absent container name stands in for a fresh
  host, in check mode), it stops naming the host.

Not destructive: no container is replaced, each test checks that none was.
Selected by the `lab_converge` marker; run only when LAB_CONVERGE=1
(`scripts/lab.sh verify-converge`, called by `scripts/lab.sh test` after the idempotence step).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labtools import ROOT, playbook, run_in  # noqa: E402  (tests/lab/labtools.py)

pytestmark = [
    pytest.mark.lab,
    pytest.mark.lab_converge,
    # Each test is one converge of the whole lab (about 80 s without changes).
    pytest.mark.timeout(1500),
    pytest.mark.skipif(os.environ.get("LAB_CONVERGE") != "1",
                       reason="the clean-environment converge runs with LAB_CONVERGE=1 (scripts/lab.sh verify-converge)"),
]

# What a login shell on Debian has, with the project's tools first (as after `. .venv/bin/activate`).
CLEAN_PATH = f"{ROOT / '.venv/bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RECAP_LINE = re.compile(r"^(?P<host>[A-Za-z0-9_.-]+)\s+:\s+(?P<counts>ok=\d+.*)$")
COUNTERS = ("changed", "unreachable", "failed", "rescued", "ignored")


@pytest.fixture(scope="module")
def hosts(lab) -> dict[str, list[str]]:
    """Every host of inventories/lab (tests/lab/conftest.py), and its app hosts."""
    return {"all": sorted(lab["address"]), "app": lab["app"]}


def clean_env() -> dict[str, str]:
    return {"PATH": CLEAN_PATH, "HOME": os.environ.get("HOME", "/root")}


def clean_run(name: str, *extra: str) -> subprocess.CompletedProcess:
    """ansible-playbook -i inventories/lab playbooks/<name> from the repository, in `env -i`."""
    return subprocess.run(["env", "-i", *(f"{key}={value}" for key, value in clean_env().items()),
                           *playbook(name, *extra)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1500)


def recap(output: str) -> dict[str, dict[str, int]]:
    """The counters of each host in the PLAY RECAP."""
    section = output.rsplit("PLAY RECAP", 1)[-1]
    found = {}
    for line in section.splitlines():
        match = RECAP_LINE.match(line.strip())
        if match:
            found[match["host"]] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match["counts"])}
    return found


def changed_tasks(output: str) -> list[str]:
    """`TASK [...]: host` for every task that reported a change (for failure messages)."""
    found, task = [], "?"
    for line in output.splitlines():
        if line.startswith("TASK ["):
            task = line.split("]", 1)[0] + "]"
        elif line.startswith("changed: ["):
            found.append(f"{task}: {line.split('[', 1)[1].split(']', 1)[0]}")
    return found


def flat(output: str) -> str:
    """The output with every run of whitespace as one space (results are wrapped YAML)."""
    return " ".join(output.split())


def app_state(app_hosts: list[str]) -> dict[str, str]:
    """What must not change on each app host: the app container (id, image, start) and its env file."""
    return {host: run_in(host, "sh", "-c",
                         "docker inspect -f '{{.Id}} {{.Config.Image}} {{.State.StartedAt}}' payments-app"
                         " && sha256sum /etc/payments/app.env").strip()
            for host in app_hosts}


def assert_counts(output: str, host: str, **expected: int) -> None:
    """The PLAY RECAP line of `host` says 0 for every counter of COUNTERS but `expected`."""
    counts = recap(output)
    assert host in counts, f"{host} is missing from the PLAY RECAP: {counts}"
    wanted = {name: 0 for name in COUNTERS} | expected
    got = {name: counts[host].get(name) for name in wanted}
    assert got == wanted, f"{host}: {counts[host]}; changed: {changed_tasks(output)}"


def test_plain_site_yml_keeps_every_release_and_changes_nothing(hosts):
    before = app_state(hosts["app"])
    result = clean_run("site.yml")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    for host in hosts["all"]:
        assert_counts(result.stdout, host)
    assert app_state(hosts["app"]) == before


def test_another_app_version_is_refused_pointing_at_deploy_yml_and_changes_nothing(hosts):
    # app.yml is what site.yml runs on the app hosts, where the refusal happens; that the other
    # tiers change nothing under a plain site.yml is the test above (this saves a whole converge).
    other = f"not-running-{uuid.uuid4().hex[:8]}"
    before = app_state(hosts["app"])
    result = clean_run("app.yml", "-e", f"app_version={other}")
    assert result.returncode != 0, result.stdout[-4000:]
    output = flat(result.stdout)
    for host in hosts["app"]:
        running = before[host].split()[1].rsplit(":", 1)[-1]
        assert f"{host} runs release {running}, not app_version={other}" in output, result.stdout[-6000:]
    assert f"ansible-playbook playbooks/deploy.yml -e app_version={other}" in output
    assert "app_version_override_running=true" in output
    for host in hosts["app"]:
        assert_counts(result.stdout, host, failed=1)
    assert app_state(hosts["app"]) == before


def test_an_app_host_without_the_app_and_no_app_version_stops_naming_the_host(hosts):
    # An app container name nobody runs: to app.yml, every app host runs no app yet. Check
    # mode, and the role stops at its first check, before anything could change.
    absent = f"payments-app-absent-{uuid.uuid4().hex[:6]}"
    before = app_state(hosts["app"])
    result = clean_run("app.yml", "--check", "-e", f"app_container_name={absent}")
    assert result.returncode != 0, result.stdout[-4000:]
    output = flat(result.stdout)
    for host in hosts["app"]:
        assert f"{host} runs no {absent} container yet and app_version is empty" in output, result.stdout[-6000:]
        assert_counts(result.stdout, host, failed=1)
    assert app_state(hosts["app"]) == before
