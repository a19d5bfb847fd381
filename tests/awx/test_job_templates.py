"""awx/job_templates.yml against the playbooks it runs: every template names a playbook that
exists, every operator playbook has a template, survey and extra variables are ones the
playbook reads, schedules are valid RRULEs that fire when they say. No AWX here: what AWX
does with these definitions is playbooks/awx.yml's part (tests/awx/test_awx_playbook.py)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import yaml
from dateutil import rrule as dateutil_rrule
from dateutil import tz

from tests.awx import definitions
from tests.awx.definitions import PLAYBOOKS, ROOT

# Top-level playbooks that get no job template of their own, each with the reason.
# Tier playbooks: imported by site.yml; AWX converges one tier through the site template
# with a limit or tags (ask_limit_on_launch, ask_tags_on_launch), as site.yml imports them.
TIER_PLAYBOOKS = {
    "common.yml": "base configuration, imported by site.yml and every tier playbook",
    "db.yml": "tier playbook imported by site.yml (site template, limit db)",
    "cache.yml": "tier playbook imported by site.yml (site template, limit cache)",
    "app.yml": "tier playbook imported by site.yml (site template, limit app)",
    "lb.yml": "tier playbook imported by site.yml (site template, limit lb)",
    "monitoring.yml": "tier playbook imported by site.yml (site template, limit monitoring)",
}
NOT_FOR_AWX = {
    **TIER_PLAYBOOKS,
    "lab_services.yml": "lab only (the lab_services group exists only in inventories/lab)",
    "lab_webhooks.yml": "lab only (the Stripe stand-in's webhooks)",
    "awx.yml": "configures AWX itself: run from a workstation or CI against the AWX API",
}

ENVIRONMENTS = {env["name"] for env in definitions.environments()}
SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
AWX_RRULE = re.compile(r"^DTSTART;TZID=(?P<tz>[A-Za-z_/+-]+):(?P<start>\d{8}T\d{6}) RRULE:(?P<rule>[A-Z0-9=;,+-]+)$")


def template_ids(templates):
    return [t["name"] for t in templates]


TEMPLATES = definitions.templates()
SCHEDULES = [(t, s) for t in TEMPLATES for s in t.get("schedules") or []]


def test_template_names_are_unique():
    names = [t["name"] for t in TEMPLATES]
    assert len(names) == len(set(names)), f"duplicate job template names: {names}"


@pytest.mark.parametrize("template", TEMPLATES, ids=template_ids(TEMPLATES))
def test_template_runs_a_playbook_that_exists(template):
    path = ROOT / template["playbook"]
    assert template["playbook"].startswith("playbooks/") and path.parent == PLAYBOOKS, (
        f"{template['name']}: the playbook must be a top-level playbook under playbooks/, got {template['playbook']}")
    assert path.is_file(), f"{template['name']}: {template['playbook']} does not exist"


@pytest.mark.parametrize("template", TEMPLATES, ids=template_ids(TEMPLATES))
def test_template_is_created_for_known_environments(template):
    assert template["environments"], f"{template['name']}: no environment"
    assert set(template["environments"]) <= ENVIRONMENTS, f"{template['name']}: unknown environment"
    for schedule in template.get("schedules") or []:
        assert set(schedule["environments"]) <= set(template["environments"]), (
            f"{schedule['name']}: scheduled in an environment its template {template['name']!r} is not created for")


def test_every_environment_inventory_is_a_directory_of_the_repository():
    for env in definitions.environments():
        assert (ROOT / env["inventory"] / "hosts.yml").is_file(), f"{env['name']}: {env['inventory']}/hosts.yml missing"


def test_the_tier_playbooks_listed_are_the_ones_site_imports():
    """The exceptions above stay true: site.yml imports exactly the tier and lab playbooks."""
    imported = {p.name for p in definitions.playbook_files(PLAYBOOKS / "site.yml") if p.parent == PLAYBOOKS} - {"site.yml"}
    lab_only = {"lab_services.yml", "lab_webhooks.yml"}
    assert imported == set(TIER_PLAYBOOKS) | lab_only


def test_every_operator_playbook_has_a_job_template():
    playbooks = {p.name for p in PLAYBOOKS.glob("*.yml")}
    assert set(NOT_FOR_AWX) <= playbooks, f"listed but gone: {set(NOT_FOR_AWX) - playbooks}"
    with_template = {Path(t["playbook"]).name for t in TEMPLATES}
    missing = playbooks - set(NOT_FOR_AWX) - with_template
    assert not missing, (
        f"playbooks without a job template in awx/job_templates.yml: {sorted(missing)} "
        "(add one, or list the playbook in NOT_FOR_AWX with the reason)")


def test_the_jobs_the_issue_names_exist():
    by_playbook = {}
    for t in TEMPLATES:
        by_playbook.setdefault(t["playbook"], []).append(t)
    for playbook in ("site", "deploy", "rollback", "backup", "restore_drill", "failover", "dr", "restore", "rejoin"):
        assert f"playbooks/{playbook}.yml" in by_playbook, f"no job template runs playbooks/{playbook}.yml"


@pytest.mark.parametrize("template", TEMPLATES, ids=template_ids(TEMPLATES))
def test_extra_and_survey_variables_are_read_by_the_playbook(template):
    playbook = ROOT / template["playbook"]
    variables = list(template.get("extra_vars") or {}) + [q["variable"] for q in template.get("survey") or []]
    unused = [v for v in variables if not definitions.uses_variable(playbook, v)]
    assert not unused, f"{template['name']}: {template['playbook']} never reads {unused}"


@pytest.mark.parametrize("template", [t for t in TEMPLATES if t.get("survey")],
                         ids=template_ids([t for t in TEMPLATES if t.get("survey")]))
def test_survey_questions_are_valid(template):
    variables = [q["variable"] for q in template["survey"]]
    assert len(variables) == len(set(variables)), f"{template['name']}: a variable asked twice"
    for q in template["survey"]:
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", q["variable"]), q
        assert q["type"] in SURVEY_TYPES, q
        assert isinstance(q["required"], bool) and q["question_name"], q
        if q["type"] in ("multiplechoice", "multiselect"):
            assert q["choices"] and all(isinstance(c, str) for c in q["choices"]), q
            if "default" in q:
                assert q["default"] in q["choices"], q
        if q["type"] in ("text", "textarea") and not q["required"] and q.get("default") is None:
            # AWX may pass "" for an unanswered optional question: "" must mean "not set".
            assert definitions.reads_with_empty_default(ROOT / template["playbook"], q["variable"]), (
                f"{template['name']}: optional question {q['variable']} but {template['playbook']} does not read it "
                f"as {q['variable']} | default('')")


def test_launch_extra_vars_follow_awx_precedence():
    restore = definitions.template("restore")
    assert definitions.launch_extra_vars(restore) == {"restore_scratch": "true", "restore_force": "false"}
    assert definitions.launch_extra_vars(restore, {"restore_host": "db2", "restore_scratch": "false"}) == {
        "restore_scratch": "false", "restore_force": "false", "restore_host": "db2"}


def test_backup_job_runs_unattended_with_a_valid_type():
    """backup.yml asserts backup_type in full, diff, incr; the template passes one and asks nothing."""
    backup = definitions.template("backup")
    extra = definitions.launch_extra_vars(backup)
    assert extra["backup_type"] in ("full", "diff", "incr")
    assert not [q for q in backup.get("survey") or [] if q["required"] and q.get("default") is None]
    assert not backup.get("schedules"), "backups are scheduled by the pgBackRest timers, not by AWX"


def test_scheduled_backups_are_the_pgbackrest_timers():
    """What the backup template's definition says: the timers take the weekly full and daily diff."""
    defaults = yaml.safe_load((ROOT / "roles/pgbackrest/defaults/main.yml").read_text())
    assert defaults["pgbackrest_timers_enabled"] is True
    assert defaults["pgbackrest_timer_full_on_calendar"].startswith("Sun")
    assert defaults["pgbackrest_timer_diff_on_calendar"]


def test_restore_drill_runs_unattended_weekly_in_production():
    drill = definitions.template("restore drill")
    assert drill["playbook"] == "playbooks/restore_drill.yml"
    assert not [q for q in drill.get("survey") or [] if q["required"] and q.get("default") is None], (
        "a scheduled job cannot answer a required survey question")
    assert definitions.launch_extra_vars(drill).get("drill_verify") is True
    (weekly,) = [s for s in drill["schedules"] if "production" in s["environments"]]
    assert "FREQ=WEEKLY" in weekly["rrule"]


def test_daily_drift_check_is_site_in_check_mode():
    drift = [t for t in TEMPLATES if t["playbook"] == "playbooks/site.yml" and t.get("job_type") == "check"]
    assert len(drift) == 1, "one site.yml template with job_type check"
    (drift,) = drift
    assert drift.get("diff_mode") is True and not drift.get("extra_vars")
    daily = [s for s in drift["schedules"] if "FREQ=DAILY" in s["rrule"]]
    assert daily and {"production", "staging"} <= set(daily[0]["environments"])


def test_scheduled_templates_need_no_answer():
    for template, schedule in SCHEDULES:
        unanswered = [q["variable"] for q in template.get("survey") or [] if q["required"] and q.get("default") is None]
        assert not unanswered, f"{schedule['name']}: {template['name']} asks {unanswered} and nobody answers a schedule"


def parse_awx_rrule(text: str):
    """The schedule as AWX reads it: one DTSTART with a TZID, one RRULE, no COUNT above 999."""
    match = AWX_RRULE.match(text)
    assert match, f"not AWX's 'DTSTART;TZID=<zone>:YYYYMMDDTHHMMSS RRULE:...' form: {text!r}"
    zone = tz.gettz(match["tz"])
    assert zone is not None, f"unknown time zone {match['tz']}"
    parts = dict(part.split("=", 1) for part in match["rule"].split(";"))
    assert parts.get("FREQ") in ("MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY"), parts
    assert int(parts.get("COUNT", "1")) <= 999
    start = dt.datetime.strptime(match["start"], "%Y%m%dT%H%M%S").replace(tzinfo=zone)
    return dateutil_rrule.rrulestr(f"RRULE:{match['rule']}", dtstart=start)


@pytest.mark.parametrize("template,schedule", SCHEDULES, ids=[s["name"] for _, s in SCHEDULES])
def test_schedule_rrule_is_valid_and_fires(template, schedule):
    rule = parse_awx_rrule(schedule["rrule"])
    after = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    upcoming = [rule.after(after)]
    for _ in range(3):
        upcoming.append(rule.after(upcoming[-1]))
    assert all(upcoming), f"{schedule['name']} never fires after {after}"
    if "FREQ=WEEKLY" in schedule["rrule"]:
        assert [b - a for a, b in zip(upcoming, upcoming[1:])] == [dt.timedelta(days=7)] * 3
    if "FREQ=DAILY" in schedule["rrule"]:
        assert [b - a for a, b in zip(upcoming, upcoming[1:])] == [dt.timedelta(days=1)] * 3


def test_restore_drill_fires_on_sunday_after_the_full_backup():
    (drill,) = definitions.template("restore drill")["schedules"]
    nxt = parse_awx_rrule(drill["rrule"]).after(dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc))
    # The pgBackRest full backup runs on Sunday at 01:00 (roles/pgbackrest defaults).
    assert nxt.strftime("%a") == "Sun" and nxt.hour > 1


def test_an_invalid_rrule_is_refused():
    with pytest.raises(AssertionError):
        parse_awx_rrule("RRULE:FREQ=WEEKLY;BYDAY=SU")
    with pytest.raises(ValueError):
        parse_awx_rrule("DTSTART;TZID=UTC:20260104T030000 RRULE:FREQ=WEEKLY;BYDAY=XX")
