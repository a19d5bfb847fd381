"""`ansible-playbook -i inventories/lab playbooks/site.yml --check --diff` prints no secret.

The secrets are the values of the lab's vault (inventories/lab/group_vars/all/vault.yml,
decrypted with `ansible-vault view`, which finds the lab's password file through ansible.cfg's
vault_identity_list). Neither the values, nor their URL-encoded form (the app's DATABASE_URL
and REDIS_URL carry them so), nor their SHA-256 (Redis's ACL file stores that) may appear in
the output.

On a converged lab a check run changes nothing, so it prints no diff at all and could not
show a leak. The test therefore runs site.yml twice, in check mode (nothing is changed on the
hosts), the way labtools.ansible_env runs every playbook (no LAB_APP_VERSION: each app host
keeps the release it runs):

1. as is: it prints none of the values;
2. with every vault value replaced for the run by a new random one (`-e @file`, same prefix
   such as `sk_test_`): now every file that holds a secret differs from the host's copy, so
   each of those tasks reports a change, and a task without `diff: false` or `no_log` would
   print both sides of its diff, the lab's values and the new ones. Neither may appear, and
   the test requires that those tasks did report their change.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labtools import ROOT, ansible_env, playbook  # noqa: E402  (tests/lab/labtools.py)

pytestmark = [
    pytest.mark.lab,
    # Each run is a check of the whole lab (about 80 s without changes).
    pytest.mark.timeout(1500),
]

VAULT = "inventories/lab/group_vars/all/vault.yml"
RECAP_LINE = re.compile(r"^(?P<host>[A-Za-z0-9_.-]+)\s+:\s+ok=\d+\s+changed=\d+\s+unreachable=(?P<unreachable>\d+)"
                        r"\s+failed=(?P<failed>\d+)", re.MULTILINE)
TASK_BANNER = re.compile(r"^TASK \[(?P<name>[^\]]+)\]", re.MULTILINE)

# The tasks that write a secret to a file, and a host where each one runs. In the second run
# each must report a change: the proof that its diff would have been printed.
SECRET_FILE_TASKS = {
    "redis : Write the ACL file": "cache1",
    "app : Write the environment file": "app1",
    "pgbackrest : Write pgbackrest.conf": "db1",
    "postgresql : Write the replication password file of the postgres user": "db2",
    "lab_services : Write the webhook endpoints of the Stripe stand-in": "labsvc",
}


class Secrets(dict):
    """Vault key -> value, shown by its keys only: a failing test must not print the values."""

    def __repr__(self) -> str:
        return f"<secrets {sorted(self)}>"


def vault_values() -> Secrets:
    result = subprocess.run([str(ROOT / ".venv/bin/ansible-vault"), "view", VAULT], cwd=ROOT, env=ansible_env(),
                            capture_output=True, text=True, timeout=60, check=True)
    values = yaml.safe_load(result.stdout)
    assert values and all(key.startswith("vault_") for key in values), "the lab vault has no vault_* values"
    return Secrets({key: str(value) for key, value in values.items()})


def forms(value: str) -> set[str]:
    """The ways a secret could show up in the output."""
    return {value, urllib.parse.quote(value, safe=""), hashlib.sha256(value.encode()).hexdigest()}


def replacement(value: str) -> str:
    """A new random secret with the same prefix (sk_test_, whsec_, ...) as `value`."""
    prefix = re.match(r"^(?:[a-z]+_)*", value).group(0)
    return prefix + secrets.token_hex(24)


def redacted(text: str, *hidden: Secrets) -> str:
    for named in hidden:
        for key, value in named.items():
            for form in forms(value):
                text = text.replace(form, f"<{key}>")
    return text


def check_run(*extra: str, hidden: tuple[Secrets, ...]) -> str:
    """The output of a --check --diff run of site.yml on the lab, which must succeed on every host."""
    result = subprocess.run(playbook("site.yml", "--check", "--diff", *extra), cwd=ROOT,
                            env=ansible_env() | {"ANSIBLE_NOCOLOR": "1"}, capture_output=True, text=True, timeout=1500)
    output = result.stdout + result.stderr
    recap = {m["host"]: (int(m["unreachable"]), int(m["failed"])) for m in RECAP_LINE.finditer(result.stdout)}
    assert result.returncode == 0 and recap and all(counts == (0, 0) for counts in recap.values()), \
        f"rc={result.returncode}, recap {recap}:\n{redacted(output[-6000:], *hidden)}"
    return output


def leaks(output: str, named: dict[str, str]) -> list[str]:
    """'<vault key> in task <task>' for every form of every value found in the output."""
    found = []
    for key, value in named.items():
        for form in forms(value):
            for match in re.finditer(re.escape(form), output):
                tasks = list(TASK_BANNER.finditer(output, 0, match.start()))
                found.append(f"{key} in task {tasks[-1]['name'] if tasks else '(before the first task)'}")
    return sorted(set(found))


def changed_hosts(output: str, task: str) -> set[str]:
    """The hosts that task reported `changed` on."""
    banners = list(TASK_BANNER.finditer(output))
    hosts: set[str] = set()
    for i, banner in enumerate(banners):
        if banner["name"] == task:
            end = banners[i + 1].start() if i + 1 < len(banners) else len(output)
            hosts |= set(re.findall(r"^changed: \[([^\]]+)\]", output[banner.end():end], re.MULTILINE))
    return hosts


@pytest.fixture(scope="module")
def vault(lab) -> dict[str, str]:
    return vault_values()


def test_check_diff_prints_no_vault_value(vault):
    found = leaks(check_run(hidden=(vault,)), vault)
    assert not found, f"--check --diff printed secrets: {found}"


def test_check_diff_with_every_secret_changed_prints_neither_side(vault, tmp_path):
    new = Secrets({key: replacement(value) for key, value in vault.items()})
    extra = tmp_path / "replaced-secrets.yml"
    extra.write_text(yaml.safe_dump(dict(new)))
    output = check_run("-e", f"@{extra}", hidden=(vault, new))
    found = leaks(output, vault) + [f"{leak} (the replacement)" for leak in leaks(output, new)]
    unchanged = {task: host for task, host in SECRET_FILE_TASKS.items() if host not in changed_hosts(output, task)}
    assert not found and not unchanged, (
        f"--check --diff printed secrets: {found}; tasks that reported no change, so their diff was never put "
        f"to the test: {unchanged}")
