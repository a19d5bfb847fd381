"""Fixtures the lab tests share."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from tests.lab.labtools import ROOT


def _inventory() -> dict:
    out = subprocess.run(
        ["ansible-inventory", "-i", str(ROOT / "inventories/lab/hosts.yml"), "--list"],
        check=True, capture_output=True, text=True, cwd=ROOT,
    ).stdout
    return json.loads(out)


@pytest.fixture(scope="module")
def lab() -> dict:
    """Hosts and addresses of the lab, from inventories/lab (the one place they are defined)."""
    try:
        with socket.create_connection(("127.0.0.1", 8443), timeout=2):
            pass
    except OSError:
        message = "the lab is not running on 127.0.0.1:8443 (make lab)"
        if os.environ.get("LAB_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    inventory = _inventory()
    hostvars = inventory["_meta"]["hostvars"]

    def hosts(group: str) -> list[str]:
        return sorted(inventory[group]["hosts"])

    return {
        "lb": hosts("lb")[0],
        "app": hosts("app"),
        "db_primary": hosts("db_primary")[0],
        "db_replica": hosts("db_replica")[0],
        "cache": hosts("cache")[0],
        "address": {name: values["private_address"] for name, values in hostvars.items()},
        # The site's public name (inventories/lab/group_vars/all), served by the load balancer.
        "public_hostname": hostvars[hosts("lb")[0]]["public_hostname"],
    }
