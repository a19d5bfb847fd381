"""What the lab tests share: the environment ansible-playbook runs with, its command line, and
a command run inside a lab host."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def ansible_env() -> dict:
    """The caller's environment with the project's venv and ansible.cfg; LAB_APP_VERSION is
    dropped so the inventory's app_version comes from the command line (-e app_version=...)."""
    env = {k: v for k, v in os.environ.items() if k != "LAB_APP_VERSION"}
    env["PATH"] = f"{ROOT / '.venv/bin'}:{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    return env


def playbook(name: str, *extra: str) -> list[str]:
    return ["ansible-playbook", "-i", "inventories/lab", f"playbooks/{name}", *extra]


def run_in(host: str, *command: str, input: str | None = None, timeout: float = 300) -> str:
    """stdout of `command` run inside the lab host `host` (docker exec); fails the test with
    its stderr when it exits non-zero."""
    result = subprocess.run(["docker", "exec", "-i", host, *command], input=input, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{host}: {command[:6]} failed: {result.stderr[-2000:]}"
    return result.stdout
