"""Variables as Ansible renders them, read on the controller: nothing connects to a host
(`debug` runs on the controller)."""

from __future__ import annotations

import json
import os
import subprocess

from tests.awx.definitions import ROOT

ENV = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
       "ANSIBLE_DEPRECATION_WARNINGS": "0"}


def debug_messages(command: list[str]) -> list:
    """The `msg` of every debug result of an ansible or ansible-playbook run, in order."""
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout[result.stdout.index("{"):])
    return [host_result["msg"] for play in report["plays"] for task in play["tasks"]
            for host_result in task["hosts"].values() if "msg" in host_result]


def stack_value(host: str, expression: str, *extra: str):
    """`expression` rendered for `host` with playbooks/group_vars (the playbooks' folder as
    the playbook directory); `extra`: more arguments, e.g. -i INVENTORY."""
    return debug_messages(["ansible", host, "--playbook-dir", "playbooks", "-m", "ansible.builtin.debug",
                           "-a", f"msg={{{{ {expression} }}}}", *extra])[-1]
