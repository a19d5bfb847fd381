"""Run a job template of awx/job_templates.yml the way AWX runs a job, against the lab.

AWX hands a job to ansible-runner: a private data directory holding the extra vars
(env/extravars), the environment (env/envvars), the job's own options (env/cmdline: --check
for a check job, --diff) and its time limit (env/settings: job_timeout), with the project as
the working directory, so the project's ansible.cfg applies. ansible-runner runs the playbook
with no prompt and writes the job's artifacts: rc, status, stdout and one JSON file per event.
This module does the same with `ansible-runner run`, taking everything from the template's
definition (tests/awx/definitions.py), so the job test and AWX cannot drift apart.

What differs from AWX: the inventory is the lab's (AWX syncs production's or staging's from
the repository), and the vault password is the lab's demo one from ansible.cfg (AWX passes its
vault credential instead).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.awx import definitions
from tests.lab.labtools import ROOT

IDENT = "job"
FAILED_EVENTS = ("runner_on_failed", "runner_on_unreachable")


@dataclass
class JobRun:
    template: str
    rc: int
    status: str  # ansible-runner's: successful, failed, timeout, canceled
    stdout: str
    events: list[dict]

    def failed_tasks(self) -> list[str]:
        """Tasks that failed on a host (not those whose failure the playbook ignores)."""
        failed = []
        for event in self.events:
            data = event.get("event_data", {})
            if event.get("event") in FAILED_EVENTS and not data.get("ignore_errors"):
                failed.append(f"{data.get('host')}: {data.get('task')}")
        return failed

    def summary(self) -> str:
        return f"job {self.template!r}: rc {self.rc}, {self.status}; output ends: {self.stdout[-3000:]}"


def _job_options(template: dict) -> list[str]:
    options = []
    if template.get("job_type", "run") == "check":
        options.append("--check")
    if template.get("diff_mode"):
        options.append("--diff")
    return options


def run_job(name: str, private_data_dir: Path, answers: dict | None = None,
            inventory: str = "inventories/lab") -> JobRun:
    """Launch job template `name` with survey `answers` through `ansible-runner run`."""
    template = definitions.template(name)
    env_dir = private_data_dir / "env"
    env_dir.mkdir(parents=True, exist_ok=True)
    (env_dir / "extravars").write_text(json.dumps(definitions.launch_extra_vars(template, answers)))
    # The execution environment's PATH: here the project's venv, which holds ansible-core.
    (env_dir / "envvars").write_text(json.dumps({
        "PATH": f"{ROOT / '.venv/bin'}:{os.environ.get('PATH', '')}",
        "ANSIBLE_FORCE_COLOR": "0",
    }))
    (env_dir / "cmdline").write_text(" ".join(_job_options(template)))
    timeout = template.get("timeout", 0)
    (env_dir / "settings").write_text(json.dumps({"job_timeout": timeout}))

    subprocess.run(
        [str(ROOT / ".venv/bin/ansible-runner"), "run", str(private_data_dir), "--ident", IDENT,
         "--project-dir", str(ROOT), "--playbook", template["playbook"],
         "--inventory", str(ROOT / inventory), "--quiet"],
        cwd=ROOT, env={**os.environ, "PATH": f"{ROOT / '.venv/bin'}:{os.environ.get('PATH', '')}"},
        timeout=(timeout or 3600) + 60, check=False,
    )
    artifacts = private_data_dir / "artifacts" / IDENT
    events = [json.loads(path.read_text()) for path in sorted((artifacts / "job_events").glob("*.json"),
                                                               key=lambda p: int(p.name.split("-", 1)[0]))]
    return JobRun(
        template=name,
        rc=int((artifacts / "rc").read_text().strip()),
        status=(artifacts / "status").read_text().strip(),
        stdout=(artifacts / "stdout").read_text(),
        events=events,
    )
