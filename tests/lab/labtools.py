"""What the lab tests share: the environment ansible-playbook runs with, and its command line."""

from __future__ import annotations

import os
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
