"""The job templates of awx/job_templates.yml, read the way AWX uses them.

- `templates()`, `template(name)`, `environments()`: the definitions as written;
- `launch_extra_vars(template, answers)`: the extra vars of a job launched from the template
  (AWX's order: the template's extra_vars, then the survey's defaults, then the answers), which
  is what a job test passes to ansible-runner to run the job as AWX would;
- `playbook_files(path)`: the files a playbook reads (imported playbooks, vars files, task
  files, roles, the playbook-adjacent group_vars), to check which variables it uses.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "awx" / "job_templates.yml"
PLAYBOOKS = ROOT / "playbooks"


def _load(path: Path):
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError:  # a tag PyYAML does not know (!vault, !unsafe): nothing to follow
        return None


@cache
def _data() -> dict:
    return yaml.safe_load(DEFINITIONS.read_text())


def templates() -> list[dict]:
    return _data()["awx_job_templates"]


def environments() -> list[dict]:
    return _data()["awx_environments"]


def template(name: str) -> dict:
    found = [t for t in templates() if t["name"] == name]
    if len(found) != 1:
        raise KeyError(f"{len(found)} job templates named {name!r} in {DEFINITIONS}")
    return found[0]


def launch_extra_vars(template: dict, answers: dict | None = None) -> dict:
    """The extra vars AWX gives a job launched from `template` with survey `answers`."""
    extra_vars = dict(template.get("extra_vars") or {})
    for question in template.get("survey") or []:
        if question.get("default") is not None:
            extra_vars[question["variable"]] = question["default"]
    extra_vars.update(answers or {})
    return extra_vars


# --- What a playbook reads -------------------------------------------------------------

_TASK_LISTS = ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always")
_INCLUDE_TASKS = {"import_tasks", "include_tasks", "ansible.builtin.import_tasks", "ansible.builtin.include_tasks"}
_INCLUDE_ROLE = {"import_role", "include_role", "ansible.builtin.import_role", "ansible.builtin.include_role"}
_IMPORT_PLAYBOOK = {"import_playbook", "ansible.builtin.import_playbook"}


def _static(value) -> bool:
    return isinstance(value, str) and "{{" not in value and "{%" not in value


def _include_arg(task: dict, keys: set[str]):
    for key in keys:
        if key in task:
            arg = task[key]
            return arg.get("file") or arg.get("name") if isinstance(arg, dict) else arg
    return None


def _role_files(name: str, found: set[Path]) -> None:
    role = ROOT / "roles" / name
    if not role.is_dir():
        return
    new = [p for p in role.rglob("*") if p.is_file() and "molecule" not in p.parts and p not in found]
    found.update(new)
    meta = role / "meta" / "main.yml"
    if meta.is_file():
        for dep in (_load(meta) or {}).get("dependencies") or []:
            dep_name = dep.get("role") if isinstance(dep, dict) else dep
            if _static(dep_name):
                _role_files(dep_name, found)
    for path in new:
        if path.suffix == ".yml" and "tasks" in path.parts:
            _walk_tasks(_load(path) or [], path.parent, found)


def _walk_tasks(tasks: list, base: Path, found: set[Path]) -> None:
    for task in tasks or []:
        if not isinstance(task, dict):
            continue
        for key in _TASK_LISTS:
            if isinstance(task.get(key), list):
                _walk_tasks(task[key], base, found)
        path = _include_arg(task, _INCLUDE_TASKS)
        if _static(path):
            # Relative to the including file, else to the playbooks (as Ansible searches).
            target = next((c for c in (base / path, PLAYBOOKS / path) if c.is_file()), None)
            if target is not None and target not in found:
                found.add(target)
                _walk_tasks(_load(target) or [], target.parent, found)
        role = _include_arg(task, _INCLUDE_ROLE)
        if _static(role):
            _role_files(role, found)


def playbook_files(path: Path, found: set[Path] | None = None) -> set[Path]:
    """Every file `path` (a playbook) reads that can be named without running it."""
    found = set() if found is None else found
    found.add(path)
    found.update(p for p in (PLAYBOOKS / "group_vars").rglob("*.yml"))
    for play in _load(path) or []:
        imported = _include_arg(play, _IMPORT_PLAYBOOK)
        if _static(imported):
            target = path.parent / imported
            if target not in found:
                playbook_files(target, found)
            continue
        for vars_file in play.get("vars_files") or []:
            if _static(vars_file) and (path.parent / vars_file).is_file():
                found.add((path.parent / vars_file).resolve())
        for role in play.get("roles") or []:
            name = role.get("role") or role.get("name") if isinstance(role, dict) else role
            if _static(name):
                _role_files(name, found)
        for key in _TASK_LISTS:
            _walk_tasks(play.get(key) or [], path.parent, found)
    return found


@cache
def _closure(path: Path) -> frozenset[Path]:
    return frozenset(playbook_files(path))


@cache
def _code(path: Path) -> str:
    """The file without its comment lines (a variable named only in a comment is not used)."""
    return "\n".join(line for line in path.read_text(errors="replace").splitlines() if not line.lstrip().startswith("#"))


def uses_variable(playbook: Path, variable: str) -> bool:
    pattern = re.compile(rf"(?<![\w.]){re.escape(variable)}(?!\w)")
    return any(pattern.search(_code(p)) for p in _closure(playbook))


def reads_with_empty_default(playbook: Path, variable: str) -> bool:
    """Whether the playbook reads `variable` as `variable | default('')`, so "" means unset."""
    pattern = re.compile(rf"(?<![\w.]){re.escape(variable)}\s*\|\s*default\(\s*(''|\"\")\s*\)")
    return any(pattern.search(_code(p)) for p in _closure(playbook))
