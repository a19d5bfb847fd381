"""Backups, point-in-time restores and the restore drill against the running lab
(playbooks/backup.yml, playbooks/restore.yml, playbooks/restore_drill.yml).

db1 is the primary, db2 its streaming replica; the pgBackRest repository is the S3 stand-in on
labsvc (roles/s3_standin: moto's S3 server behind nginx TLS, used because no real object store
can run here). Rows are written straight into the app's tables on db1 with psql (a test user,
then orders), SQL runs in the containers with `docker exec`.

1. Orders written before a backup, more orders, time T, more orders: a restore to T into a
   scratch cluster on db2 (restore_scratch=true) holds exactly the orders written up to T.
   The backup is AWX's "backup" job: its template's playbook and extra vars, run through
   ansible-runner as AWX runs a job (tests/lab/awx_job.py).
2. The restore drill passes on the healthy repository and prints its figures: AWX's
   "restore drill" job, run the same way (its template is production's; here it runs on the
   lab's inventory).
3. With one file of the latest backup overwritten in the repository (through the stand-in's S3
   API), the drill fails (non-zero, FAIL), also with `pgbackrest verify` turned off (the
   restore itself must notice); with the original bytes put back, it passes again.

Slow (backups, restores): selected by the `lab_backup` marker and run only when LAB_BACKUP=1
(`scripts/lab.sh verify-backup`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labtools import ansible_env, playbook, run_in  # noqa: E402  (tests/lab/labtools.py)

from tests.lab.awx_job import JobRun, run_job  # noqa: E402

pytestmark = [
    pytest.mark.lab,
    pytest.mark.lab_backup,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(os.environ.get("LAB_BACKUP") != "1",
                       reason="backup tests run with LAB_BACKUP=1 (scripts/lab.sh verify-backup)"),
]

RUN = uuid.uuid4().hex[:8]
SCRATCH_PORT = 5499  # playbooks/restore.yml's default restore_scratch_port

# Runs inside the S3 stand-in's host with the python of moto's virtualenv (boto3 is one of
# moto's dependencies), against moto's own loopback port: neither TLS nor the lab firewall
# in the way. list: "<size> <key>" lines under a prefix; get: the object, base64; put: the
# object from base64 on stdin.
S3_SCRIPT = """
import base64, sys
import boto3
action, endpoint, bucket, key = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="lab-test", aws_secret_access_key="lab-test")
if action == "list":
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        for item in page.get("Contents", []):
            print(item["Size"], item["Key"])
elif action == "get":
    sys.stdout.write(base64.b64encode(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).decode())
elif action == "put":
    s3.put_object(Bucket=bucket, Key=key, Body=base64.b64decode(sys.stdin.read()))
"""


def run(command: list[str], timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, env=ansible_env(), capture_output=True, text=True, timeout=timeout)


def output(result: subprocess.CompletedProcess) -> str:
    """stdout and stderr, whitespace collapsed (a result format may wrap long messages)."""
    return " ".join((result.stdout + result.stderr).split())


def psql(host: str, sql: str, port: int = 5432, database: str = "payments") -> str:
    return run_in(host, "runuser", "-u", "postgres", "--", "psql", "-p", str(port), "-d", database, "-XAtq",
                  "-v", "ON_ERROR_STOP=1", "-c", sql).strip()


def _host_vars(host: str) -> dict:
    """The inventory's (and playbooks/group_vars') variables of `host`, not templated."""
    result = run(["ansible-inventory", "-i", "inventories/lab", "--playbook-dir", "playbooks", "--host", host],
                 timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def lab() -> dict:
    """Hosts and backup settings of the lab, from inventories/lab."""
    listed = run(["ansible-inventory", "-i", "inventories/lab", "--list"], timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    inventory = json.loads(listed.stdout)
    primary = sorted(inventory["db_primary"]["hosts"])[0]
    replica = sorted(inventory["db_replica"]["hosts"])[0]
    s3_host = sorted(inventory["lab_services"]["hosts"])[0]
    db_vars, s3_vars = _host_vars(primary), _host_vars(s3_host)
    for name in ("backup_s3_bucket", "backup_s3_endpoint", "backup_s3_port"):
        assert name in db_vars, f"{name} is not set for {primary} in inventories/lab"
    if psql(primary, "SELECT pg_is_in_recovery()") != "f" or psql(replica, "SELECT pg_is_in_recovery()") != "t":
        pytest.fail(f"the lab is not in its initial shape ({primary} primary, {replica} replica): "
                    "run rejoin.yml/failover.yml back first")
    return {
        "primary": primary,
        "replica": replica,
        "s3_host": s3_host,
        "bucket": db_vars["backup_s3_bucket"],
        "stanza": db_vars.get("pgbackrest_stanza", "payments"),
        "repo_path": db_vars.get("pgbackrest_repo_path", "/pgbackrest").strip("/"),
        # roles/s3_standin's defaults unless the inventory sets them.
        "s3_python": f"{s3_vars.get('s3_standin_home', '/opt/s3-standin')}/venv/bin/python",
        "s3_local": f"http://127.0.0.1:{s3_vars.get('s3_standin_moto_port', 9000)}",
    }


@pytest.fixture(scope="module")
def user_id(lab) -> str:
    """A user of this run that owns the test orders."""
    return psql(lab["primary"], f"INSERT INTO users (email, password_hash) VALUES "
                                f"('backup-test-{RUN}@lab.test', 'not-a-password-hash') RETURNING id")


def write_orders(lab: dict, user_id: str, count: int) -> list[str]:
    values = ", ".join(f"({user_id}, 'payment', 'payment_intent', 'eur', {1000 + n})" for n in range(count))
    ids = psql(lab["primary"], f"INSERT INTO orders (user_id, mode, flow, currency, amount_total) "
                               f"VALUES {values} RETURNING id").splitlines()
    assert len(ids) == count
    return ids


def archive_wal(lab: dict) -> None:
    """`pgbackrest check` on the primary: a WAL switch, archived before it returns."""
    run_in(lab["primary"], "runuser", "-u", "postgres", "--", "pgbackrest", f"--stanza={lab['stanza']}", "check")


def s3(lab: dict, action: str, key: str, data: str | None = None) -> str:
    return run_in(lab["s3_host"], lab["s3_python"], "-c", S3_SCRIPT, action, lab["s3_local"], lab["bucket"], key,
                  input=data)


def drill(*extra: str) -> subprocess.CompletedProcess:
    return run(playbook("restore_drill.yml", *extra), timeout=1500)


def backup_info(lab: dict) -> list:
    """`pgbackrest info` of the lab's stanza, as JSON, read on the primary."""
    return json.loads(run_in(lab["primary"], "runuser", "-u", "postgres", "--", "pgbackrest",
                             f"--stanza={lab['stanza']}", "--output=json", "info"))


def wait_past_backup_stop(lab: dict, timeout: float = 5) -> None:
    """Until the primary's clock is in a later second than the latest backup's stop time.

    pgBackRest keeps that stop time in whole seconds and picks the backup for a time target
    by `stop < target` in whole seconds: a T in the same second as the stop would find no
    backup ("unable to find backup set with stop time less than ...")."""
    info = backup_info(lab)
    stop = int(info[0]["backup"][-1]["timestamp"]["stop"])
    deadline = time.monotonic() + timeout
    while int(float(psql(lab["primary"], "SELECT extract(epoch FROM now())"))) <= stop:
        assert time.monotonic() < deadline, f"the primary's clock did not pass the backup's stop ({stop})"
        time.sleep(0.2)


def assert_job_succeeded(job: JobRun) -> str:
    """The job's exit status and events, as AWX would judge them; its output, collapsed."""
    assert job.rc == 0 and job.status == "successful", job.summary()
    assert job.events, f"job {job.template!r} wrote no events"
    assert job.failed_tasks() == [], f"failed tasks in a successful job: {job.failed_tasks()}"
    assert any(event.get("event") == "playbook_on_stats" for event in job.events), "no play recap event"
    return " ".join(job.stdout.split())


def test_a_job_whose_task_fails_is_reported_failed_with_the_task_named(lab, tmp_path):
    job = run_job("backup", tmp_path / "bad-backup-job", answers={"backup_type": "weekly"})
    assert job.rc != 0 and job.status == "failed", job.summary()
    assert job.failed_tasks() == [f"{lab['primary']}: Check the backup type"], job.failed_tasks()


def test_restore_to_time_t_brings_back_exactly_the_orders_written_up_to_t(lab, user_id, tmp_path):
    before_backup = write_orders(lab, user_id, 3)
    labels_before = {b["label"] for b in backup_info(lab)[0]["backup"]}
    text = assert_job_succeeded(run_job("backup", tmp_path / "backup-job"))
    new = [b for b in backup_info(lab)[0]["backup"] if b["label"] not in labels_before]
    assert len(new) == 1, f"the backup job added {len(new)} backups: {text[-2000:]}"
    # The template's extra vars asked for a differential (a full one only with none to base it on).
    assert new[0]["type"] == ("diff" if labels_before else "full"), new[0]
    assert f"Backup {new[0]['label']} ({new[0]['type']})" in text, text[-3000:]
    wait_past_backup_stop(lab)

    after_backup = write_orders(lab, user_id, 3)
    # T: read after the commit of the orders above, before the next ones start.
    target = psql(lab["primary"], "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
    after_target = write_orders(lab, user_id, 3)
    # Recovery to T stops at the first commit after T: that WAL must be in the repository.
    archive_wal(lab)

    replica = lab["replica"]
    try:
        restore = run(playbook("restore.yml", "-e", json.dumps({
            "restore_host": replica, "restore_scratch": True, "restore_target_time": target})))
        assert restore.returncode == 0, output(restore)[-4000:]
        assert f"port {SCRATCH_PORT}" in output(restore), restore.stdout[-3000:]

        restored = set(psql(replica, f"SELECT id FROM orders WHERE user_id = {user_id}",
                            port=SCRATCH_PORT).splitlines())
        assert restored == set(before_backup + after_backup), (
            f"T={target}: restored {sorted(restored)}; expected the 6 orders written before T, "
            f"not {sorted(after_target)}")
        # The scratch copy is a promoted primary that does not archive; db2 itself still streams.
        assert psql(replica, "SELECT pg_is_in_recovery(), current_setting('archive_mode')",
                    port=SCRATCH_PORT) == "f|off"
        assert psql(replica, "SELECT pg_is_in_recovery()") == "t"
        assert psql(replica, f"SELECT count(*) FROM orders WHERE user_id = {user_id}") == "9"
    finally:
        cleanup = run(playbook("restore.yml", "-e", f"restore_host={replica}", "-e", "restore_scratch_cleanup=true"))
    assert cleanup.returncode == 0, output(cleanup)[-3000:]
    gone = subprocess.run(["docker", "exec", replica, "test", "-e", "/var/lib/postgresql/15/scratch"])
    assert gone.returncode != 0, "the scratch data directory is still there after restore_scratch_cleanup"


def test_restore_drill_passes_on_a_healthy_repository(lab, user_id, tmp_path):
    write_orders(lab, user_id, 2)
    text = assert_job_succeeded(run_job("restore drill", tmp_path / "drill-job"))
    assert "restore drill PASS" in text, text[-5000:]
    assert "restore drill FAIL" not in text
    for table in ("orders", "payments", "stripe_events"):
        figures = re.search(rf"{table}\s+(\d+)\s+(\d+)\s+match [0-9a-f]+", text)
        assert figures, f"no figures for {table}: {text[-4000:]}"
        assert figures.group(1) == figures.group(2)
    assert int(re.search(r"orders\s+(\d+)", text).group(1)) >= 9
    assert "pgbackrest verify: ok" in text


def latest_backup_file(lab: dict) -> tuple[str, int]:
    """The key and size of one data file stored by the latest backup (the largest up to 4 MiB)."""
    info = backup_info(lab)
    label = info[0]["backup"][-1]["label"]
    prefix = f"{lab['repo_path']}/backup/{lab['stanza']}/{label}/pg_data/"
    files = [(int(size), key) for size, key in (line.split(" ", 1) for line in s3(lab, "list", prefix).splitlines())]
    candidates = sorted((size, key) for size, key in files if 0 < size <= 4 * 1024 * 1024)
    assert candidates, f"no data file under {prefix} in bucket {lab['bucket']}: {files[:20]}"
    size, key = candidates[-1]
    return key, size


def test_restore_drill_fails_when_a_backup_file_is_corrupted(lab, user_id):
    key, size = latest_backup_file(lab)
    original = s3(lab, "get", key)
    data = bytearray(base64.b64decode(original))
    assert len(data) == size
    middle = len(data) // 2
    for i in range(middle, min(middle + 64, len(data))):
        data[i] ^= 0xFF
    try:
        s3(lab, "put", key, base64.b64encode(bytes(data)).decode())

        result = drill()
        text = output(result)
        assert result.returncode != 0, f"the drill passed with {key} corrupted: {text[-4000:]}"
        assert "restore drill FAIL" in text, text[-4000:]
        assert "restore drill PASS" not in text

        # Without `pgbackrest verify`, the restore itself must notice.
        unverified = drill("-e", "drill_verify=false")
        text = output(unverified)
        assert unverified.returncode != 0, f"the restore accepted {key} corrupted: {text[-4000:]}"
        assert "restore drill FAIL" in text and "restore drill PASS" not in text, text[-4000:]
        # db2 replays again after the failed drill, and no scratch cluster is left behind.
        assert psql(lab["replica"], "SELECT pg_get_wal_replay_pause_state()") == "not paused"
        leftover = subprocess.run(["docker", "exec", lab["replica"], "test", "-e", "/var/lib/postgresql/15/scratch"])
        assert leftover.returncode != 0, "the failed drill left its scratch cluster behind"
    finally:
        s3(lab, "put", key, original)
    assert s3(lab, "get", key) == original

    healed = drill()
    assert healed.returncode == 0, output(healed)[-5000:]
    assert "restore drill PASS" in output(healed)
