"""The GitHub workflows against the repository: every job runs a make target or script that
exists (so each step runs the same by hand), CI runs every stage of scripts/test.sh, actions
are pinned to a full commit SHA, secrets reach steps only through env (never expanded into a
command line), and production deploys only behind its environment after staging. actionlint
checks the workflows' syntax and expressions in the lint stage; what only a real GitHub runner
shows (the runners, the environments' approvals, GHCR) is not tested here."""

from __future__ import annotations

import os
import re

import pytest
import yaml

from tests.awx.definitions import ROOT

WORKFLOWS = {path.name: path for path in (ROOT / ".github" / "workflows").glob("*.yml")}


def load(name: str) -> dict:
    return yaml.safe_load(WORKFLOWS[name].read_text())


def steps(workflow: dict):
    for job_name, job in workflow["jobs"].items():
        for step in job.get("steps") or []:
            yield job_name, step


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), re.M))


def test_ci_and_deploy_workflows_exist():
    assert {"ci.yml", "deploy.yml"} <= set(WORKFLOWS)


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_every_step_runs_a_make_target_or_script_that_exists(name):
    targets = make_targets()
    for job, step in steps(load(name)):
        command = step.get("run", "")
        for target in re.findall(r"(?:^|[;&|]\s*)make ([a-z][a-z0-9-]*)", command, re.M):
            assert target in targets, f"{name} {job}: make {target} is not a Makefile target"
        for script in re.findall(r"\b(scripts/[\w./-]+)", command):
            path = ROOT / script
            assert path.is_file() and os.access(path, os.X_OK), f"{name} {job}: {script} is missing or not executable"


def test_ci_runs_every_stage_of_make_test():
    stages = re.search(r'stages=\$\{STAGES:-"([^"]+)"\}', (ROOT / "scripts" / "test.sh").read_text())[1].split()
    ran = [step["env"]["STAGES"] for _, step in steps(load("ci.yml"))
           if step.get("run", "").strip() == "make test" and "STAGES" in step.get("env", {})]
    assert sorted(ran) == sorted(stages)


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_actions_are_pinned_to_a_full_commit_sha(name):
    for job, step in steps(load(name)):
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), f"{name} {job}: {step['uses']} is not pinned"


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_secrets_reach_steps_only_through_env(name):
    for job, step in steps(load(name)):
        assert "secrets." not in step.get("run", ""), f"{name} {job}: a secret expanded into a command line"
        assert not re.search(r"set -x|echo \"?\$\{?(VAULT_PASSWORD|SSH_PRIVATE_KEY|REGISTRY_PASSWORD)",
                             step.get("run", "")), f"{name} {job}: a secret could be printed"


def test_deploy_builds_once_then_staging_then_approved_production_then_notifies():
    jobs = load("deploy.yml")["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/ci.yml"
    assert jobs["image"]["needs"] == "test" and jobs["image"]["permissions"]["packages"] == "write"
    assert jobs["staging"]["needs"] == "image" and jobs["staging"]["environment"]["name"] == "staging"
    assert jobs["production"]["needs"] == "staging" and jobs["production"]["environment"]["name"] == "production"
    assert jobs["notify"]["if"] == "always()" and set(jobs["notify"]["needs"]) == {"test", "image", "staging", "production"}
    image_runs = [s["run"] for s in jobs["image"]["steps"] if "run" in s]
    assert any("scripts/push-image.sh" in run and "$GITHUB_SHA" in run for run in image_runs)
    for env in ("staging", "production"):
        runs = [s["run"] for s in jobs[env]["steps"] if "run" in s]
        assert f'scripts/deploy.sh {env} "$GITHUB_SHA"' in runs
        assert any(run.startswith("make smoke") and "--expect-version $GITHUB_SHA" in run for run in runs)


def test_ci_is_reusable_and_does_not_run_twice_on_main():
    on = load("ci.yml")[True]  # YAML 1.1 reads the key `on` as true
    assert "workflow_call" in on and "pull_request" in on
    assert on["push"]["branches-ignore"] == ["main"]
    assert load("deploy.yml")[True]["push"]["branches"] == ["main"]


def test_deploy_script_writes_the_vault_password_to_a_private_file_and_never_prints_it():
    script = (ROOT / "scripts" / "deploy.sh").read_text()
    assert "umask 077" in script and "mktemp -d" in script and "trap 'rm -rf" in script
    assert re.search(r'printf \'%s\\n\' "\$VAULT_PASSWORD" >"\$secrets/vault-password"', script)
    assert "set -x" not in script and not re.search(r"echo[^\n]*VAULT_PASSWORD\b", script)
    assert "unset VAULT_PASSWORD" in script
