"""playbooks/awx.yml without an AWX: it passes a syntax check, and its input checks (tag
awx_inputs, which contact no AWX) accept the definitions, name one template per template and
environment, refuse missing inputs and refuse an inventory whose vault is encrypted as a whole.
The run goes through ansible-runner, as AWX runs a job (private data directory, extra vars,
no prompt, the job event stream). What the awx.awx modules then do against the AWX API needs
a real AWX (README, "AWX and CI")."""

from __future__ import annotations

import json
import os
import subprocess

import ansible_runner

from tests.awx import definitions
from tests.awx.definitions import ROOT

PLAYBOOK = "playbooks/awx.yml"


def ansible_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{ROOT / '.venv/bin'}:{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    return env


def inputs(**changes) -> dict:
    credentials = {env["name"]: {"ssh_private_key": "not a key", "vault_password": "not a password"}
                   for env in definitions.environments()}
    return {"awx_project_scm_url": "https://git.example.invalid/payments.git", "awx_credentials": credentials, **changes}


def vault_inventory(path, whole_file: bool):
    """An inventory directory whose group_vars/all/vault.yml is encrypted as a whole or per value."""
    (path / "group_vars" / "all").mkdir(parents=True)
    (path / "hosts.yml").write_text("all: {hosts: {h1: {}}}\n")
    vault = ("$ANSIBLE_VAULT;1.2;AES256;production\n6130\n" if whole_file
             else "vault_x: !vault |\n  $ANSIBLE_VAULT;1.2;AES256;production\n  6130\n")
    (path / "group_vars" / "all" / "vault.yml").write_text(vault)
    return str(path)


def with_production_inventory(inventory: str) -> list[dict]:
    return [dict(env, inventory=inventory) if env["name"] == "production" else env for env in definitions.environments()]


def run_input_checks(extravars: dict) -> subprocess.CompletedProcess:
    """awx.yml's input checks with a plain ansible-playbook (for the refusals)."""
    return subprocess.run(["ansible-playbook", PLAYBOOK, "--tags", "awx_inputs", "-e", json.dumps(extravars)],
                          cwd=ROOT, env=ansible_env(), capture_output=True, text=True, timeout=120)


def test_syntax_check():
    result = subprocess.run(["ansible-playbook", "--syntax-check", PLAYBOOK], cwd=ROOT, env=ansible_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_input_checks_pass_as_an_awx_job_and_name_every_template_and_schedule(tmp_path):
    """Through ansible-runner, as AWX runs a job. Production's inventory here has a vault with
    encrypted values (the form AWX keeps encrypted), which is accepted."""
    extravars = inputs(awx_environments=with_production_inventory(vault_inventory(tmp_path / "inventory", False)))
    (tmp_path / "runner").mkdir()
    runner = ansible_runner.run(
        private_data_dir=str(tmp_path / "runner"), project_dir=str(ROOT), playbook=PLAYBOOK, extravars=extravars,
        tags="awx_inputs", envvars={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}, quiet=True, timeout=120)
    events = list(runner.events)
    failed = [e for e in events if e["event"] in ("runner_on_failed", "runner_item_on_failed")]
    assert runner.rc == 0 and runner.status == "successful" and not failed, runner.stdout.read()
    (summary,) = [e["event_data"]["res"]["msg"] for e in events
                  if e["event"] == "runner_on_ok" and e["event_data"]["task"].startswith("Name the job templates")]
    expected = sorted(f"payments {env}: {t['name']}" for t in definitions.templates() for env in t["environments"])
    assert sorted(summary["templates"]) == expected
    schedules = sorted(f"payments {env}: {s['name']}" for t in definitions.templates()
                       for s in t.get("schedules") or [] for env in s["environments"])
    assert sorted(summary["schedules"]) == schedules
    # Secrets given as extra vars never reach the job's output.
    assert "not a password" not in json.dumps(events)


def test_missing_credentials_are_refused_with_a_message():
    result = run_input_checks(inputs(awx_credentials={"production": {"ssh_private_key": "k"}}))
    assert result.returncode != 0
    assert "Set awx_project_scm_url" in result.stdout and "awx_credentials" in result.stdout, result.stdout


def test_a_whole_file_vault_is_refused(tmp_path):
    inventory = vault_inventory(tmp_path / "inventory", True)
    result = run_input_checks(inputs(awx_environments=with_production_inventory(inventory)))
    assert result.returncode != 0
    assert "is encrypted as a whole" in result.stdout, result.stdout
