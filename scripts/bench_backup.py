#!/usr/bin/env python3
"""`make bench-backup`: pgBackRest backup, restore, RPO and failover figures, in one run.

Runs on the molecule scenario roles/pgbackrest/molecule/bench (bench-pg-1: PostgreSQL 15
primary, bench-pg-2: its asynchronous streaming replica, bench-s3: the S3 stand-in holding the
encrypted repository; backups read their files from the replica):

1. brings the scenario up (`molecule create` + `converge -s bench`), or reuses it when it is up
   and healthy (primary running, replica streaming);
2. `pgbench -i -s SCALE` on the primary, waits until the replica has replayed it;
3. a full backup (`pgbackrest --type=full backup` on the primary, files from the replica), timed,
   against a plain `tar` of the replica's data directory into a file on the replica host;
4. `pgbackrest restore` of that backup into a scratch directory on the replica host, timed,
   against an untar of the tar; then the full restore time: restore + start on port 5499 +
   `SELECT count(*) FROM pgbench_accounts` returning SCALE x 100,000;
5. a steady write load on the primary, then `docker kill` of the primary (its disk is never
   used again): failover time to the first write on the promoted replica, rows and seconds of
   writes lost by the replica (asynchronous streaming) and by a restore of the repository to
   the end of the archive (asynchronous archiving, archive_timeout 60 s);
6. destroys the scenario unless --keep.

Prints each figure and writes them into docs/benchmarks.md, section "## Backups" (only that
section is replaced). Every command has a timeout. Traffic stays on the scenario's network.

Usage:
    scripts/bench_backup.py                      # scale 50 (about 750 MB), as recorded
    scripts/bench_backup.py --scale 5 --keep     # a quick try; keep the containers
    scripts/bench_backup.py --no-record          # print only
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench_docs import replace_section  # scripts/bench_docs.py (scripts/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
ROLE_DIR = ROOT / "roles" / "pgbackrest"
SCENARIO = "bench"
PRIMARY, REPLICA, S3 = "bench-pg-1", "bench-pg-2", "bench-s3"
STANZA = "payments"
PG_BIN = "/usr/lib/postgresql/15/bin"
PG_HOME = "/var/lib/postgresql/15"
DATA_DIR = f"{PG_HOME}/main"
RESTORE_DIR = f"{PG_HOME}/bench-restore"
RPO_DIR = f"{PG_HOME}/bench-rpo"
UNTAR_DIR = f"{PG_HOME}/bench-untar"
TAR_FILE = f"{PG_HOME}/bench-main.tar"
SCRATCH_PORT = 5499
BENCH_DB = "bench"
MB = 1_000_000

TARGET_RESTORE_SECONDS = 300
TARGET_RPO_SECONDS = 60
TARGET_FAILOVER_SECONDS = 30


# --- commands -----------------------------------------------------------------------------------

def env() -> dict:
    out = dict(os.environ)
    out["PATH"] = f"{ROOT / '.venv/bin'}:{out.get('PATH', '')}"
    out["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    return out


def run(argv: list[str], timeout: float, check: bool = True, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)[:300]} -> rc {result.returncode}\n{result.stdout[-3000:]}\n"
                           f"{result.stderr[-3000:]}")
    return result


def on(host: str, script: str, timeout: float = 60, user: str = "postgres", check: bool = True) -> str:
    """Run a shell script in a container (as postgres by default); its stdout, stripped."""
    return run(["docker", "exec", "-u", user, host, "bash", "-c", script], timeout, check).stdout.strip()


def psql(host: str, sql: str, port: int = 5432, db: str = "postgres", timeout: float = 60) -> str:
    return on(host, f"psql -XAtq -v ON_ERROR_STOP=1 -p {port} -d {db} -c {shlex.quote(sql)}", timeout)


def timed(func, *args, **kwargs) -> tuple[float, object]:
    start = time.monotonic()
    result = func(*args, **kwargs)
    return time.monotonic() - start, result


def say(text: str) -> None:
    print(f"[{datetime.datetime.now():%H:%M:%S}] {text}", flush=True)


def wait_for(what: str, probe, timeout: float, interval: float = 1.0):
    """Call probe() until it returns something truthy; its result."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = probe()
        except (RuntimeError, subprocess.TimeoutExpired):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


# --- the scenario -------------------------------------------------------------------------------

def molecule(command: str, timeout: float) -> None:
    say(f"molecule {command} -s {SCENARIO}")
    run(["molecule", command, "-s", SCENARIO], timeout, cwd=ROLE_DIR)


def container_running(name: str) -> bool:
    result = run(["docker", "inspect", "-f", "{{.State.Running}}", name], 30, check=False)
    return result.stdout.strip() == "true"


def scenario_healthy() -> bool:
    if not all(container_running(name) for name in (PRIMARY, REPLICA, S3)):
        return False
    try:
        return (psql(PRIMARY, "SELECT pg_is_in_recovery()") == "f"
                and psql(REPLICA, "SELECT pg_is_in_recovery() AND pg_last_wal_receive_lsn() IS NOT NULL") == "t")
    except (RuntimeError, subprocess.TimeoutExpired):
        return False


def scenario_up() -> str:
    if scenario_healthy():
        return "reused (up and healthy)"
    if any(container_running(name) for name in (PRIMARY, REPLICA, S3)):
        molecule("destroy", 600)  # left over from a run with --keep: the primary was killed
    molecule("create", 900)
    molecule("converge", 2400)
    if not scenario_healthy():
        raise RuntimeError("the bench scenario converged but the primary or the replica is not healthy")
    return "created and converged"


# --- measurements -------------------------------------------------------------------------------

def load_pgbench(scale: int) -> float:
    on(PRIMARY, f"dropdb --if-exists {BENCH_DB} && createdb {BENCH_DB}")
    seconds, _ = timed(on, PRIMARY, f"pgbench -i -q -s {scale} {BENCH_DB}", timeout=1800)
    return seconds


def wait_replayed(timeout: float = 900) -> float:
    """Wait until the replica has replayed everything the primary has written so far."""
    lsn = psql(PRIMARY, "SELECT pg_current_wal_lsn()")
    sql = f"SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '{lsn}') >= 0"
    seconds, _ = timed(wait_for, "replica replay", lambda: psql(REPLICA, sql) == "t", timeout)
    return seconds


def dir_bytes(host: str, path: str, exclude_wal: bool = True) -> int:
    exclude = "--exclude=pg_wal " if exclude_wal else ""
    return int(on(host, f"du -sb {exclude}{path}", timeout=300, user="root").split()[0])


def full_backup() -> tuple[float, dict]:
    argv = f"pgbackrest --stanza={STANZA} --type=full backup"
    seconds, _ = timed(on, PRIMARY, argv, timeout=3600)
    info = json.loads(on(PRIMARY, f"pgbackrest --stanza={STANZA} --output=json info"))[0]
    return seconds, info["backup"][-1]


def tar_baseline() -> float:
    """A plain tar of the replica's (running, idle) data directory, without pg_wal, to a file."""
    on(REPLICA, f"rm -f {TAR_FILE}")
    # rc 1 = "file changed as we read it": the replica is running (as pgBackRest reads it).
    script = f"tar -cf {TAR_FILE} --exclude=./pg_wal -C {DATA_DIR} . ; rc=$?; sync -f {TAR_FILE}; [ $rc -le 1 ]"
    seconds, _ = timed(on, REPLICA, script, timeout=1800)
    return seconds


def untar_baseline() -> float:
    on(REPLICA, f"rm -rf {UNTAR_DIR} && mkdir -m 0700 {UNTAR_DIR}")
    seconds, _ = timed(on, REPLICA, f"tar -xf {TAR_FILE} -C {UNTAR_DIR} && sync -f {UNTAR_DIR}", timeout=1800)
    return seconds


def restore(path: str, options: str) -> float:
    """pgbackrest restore into an empty scratch directory on the replica host; its seconds."""
    stop_scratch(path)
    on(REPLICA, f"rm -rf {path} && mkdir -m 0700 {path}")
    # archive-mode=off: the scratch cluster must never push WAL into the real repository.
    argv = f"pgbackrest --stanza={STANZA} --pg1-path={path} --archive-mode=off {options} restore"
    seconds, _ = timed(on, REPLICA, f"{argv} && sync -f {path}", timeout=3600)
    return seconds


def start_scratch(path: str) -> None:
    """Start a restored copy on localhost:5499, recovering from the archive only."""
    conf = "\n".join([
        f"port = {SCRATCH_PORT}",
        "listen_addresses = 'localhost'",
        "unix_socket_directories = '/var/run/postgresql'",
        "shared_buffers = 128MB",
        "archive_mode = off",
        "primary_conninfo = ''",
        "",
    ])
    hba = "local all postgres peer\nhost all postgres 127.0.0.1/32 trust\n"
    on(REPLICA, f"printf %s {shlex.quote(conf)} > {path}/postgresql.conf && "
                f"printf %s {shlex.quote(hba)} > {path}/pg_hba.conf && rm -f {path}/standby.signal")
    on(REPLICA, f"{PG_BIN}/pg_ctl -D {path} -l {path}.log -w -t 600 start", timeout=660)


def stop_scratch(path: str) -> None:
    on(REPLICA, f"if [ -f {path}/postmaster.pid ]; then {PG_BIN}/pg_ctl -D {path} -m immediate -w stop; fi",
       timeout=120, check=False)


def count_accounts() -> int:
    return int(psql(REPLICA, "SELECT count(*) FROM pgbench_accounts", port=SCRATCH_PORT, db=BENCH_DB, timeout=600))


def wait_promoted(port: int, timeout: float = 900) -> None:
    wait_for("end of recovery", lambda: psql(REPLICA, "SELECT NOT pg_is_in_recovery()", port=port) == "t", timeout)


# --- RPO and failover ---------------------------------------------------------------------------

@dataclass
class WriteLoad:
    """INSERTs into rpo_probe on the primary, one at a time, through one psql session.

    A row counts as acknowledged when psql has printed its RETURNING line (autocommit: after the
    commit). Runs until the primary dies or stop() is called."""

    rate: float
    acknowledged: list[tuple[int, str]] = field(default_factory=list)
    error: str = ""

    def start(self) -> None:
        self._stop = threading.Event()
        self._process = subprocess.Popen(
            ["docker", "exec", "-i", "-u", "postgres", PRIMARY, "psql", "-XAtq", "-d", BENCH_DB],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self._thread = threading.Thread(target=self._write, daemon=True)
        self._thread.start()

    def _write(self) -> None:
        sql = "INSERT INTO rpo_probe DEFAULT VALUES RETURNING id, at;\n"
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                self._process.stdin.write(sql)
                self._process.stdin.flush()
                line = self._process.stdout.readline()
                if not line:
                    return
                row_id, at = line.strip().split("|")
                self.acknowledged.append((int(row_id), at))
                time.sleep(max(0.0, 1 / self.rate - (time.monotonic() - started)))
        except (OSError, ValueError) as exc:
            self.error = repr(exc)

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._process.kill()
        self._process.wait(timeout)


def prepare_rpo_tables() -> None:
    now = "timestamptz NOT NULL DEFAULT clock_timestamp()"
    psql(PRIMARY, "DROP TABLE IF EXISTS rpo_probe, failover_probe; "
                  f"CREATE TABLE rpo_probe (id bigserial PRIMARY KEY, at {now}); "
                  f"CREATE TABLE failover_probe (at {now})", db=BENCH_DB)
    # The tables' creation in the archive, so the restore to the end of the archive has them.
    on(PRIMARY, f"pgbackrest --stanza={STANZA} check", timeout=300)
    wait_replayed()


def kill_primary() -> float:
    """docker kill: the primary dies at once; its disk is never read again. monotonic time of death."""
    run(["docker", "kill", PRIMARY], 60)
    return time.monotonic()


def promote_and_write(died_at: float, timeout: float = 120) -> float:
    """pg_promote() on the replica, then INSERTs until one commits: seconds since the primary died."""
    script = (
        "psql -XAtq -d {db} -c 'SELECT pg_promote(true, 60)' >/dev/null; "
        "for i in $(seq 1 600); do "
        "psql -XAtq -d {db} -c 'INSERT INTO failover_probe DEFAULT VALUES' >/dev/null 2>&1 && exit 0; "
        "sleep 0.1; done; exit 1"
    ).format(db=BENCH_DB)
    on(REPLICA, script, timeout=timeout)
    return time.monotonic() - died_at


def last_row(port: int) -> tuple[int, str]:
    out = psql(REPLICA, "SELECT coalesce(max(id), 0), coalesce(max(at)::text, '') FROM rpo_probe",
               port=port, db=BENCH_DB)
    row_id, at = out.split("|")
    return int(row_id), at


def seconds_between(later: str, earlier: str) -> float:
    sql = f"SELECT extract(epoch FROM '{later}'::timestamptz - '{earlier}'::timestamptz)"
    return float(psql(REPLICA, sql))


def rpo_and_failover(load_seconds: float, rate: float) -> dict:
    prepare_rpo_tables()
    load = WriteLoad(rate=rate)
    load.start()
    say(f"write load: {rate:.0f} INSERTs/s on the primary for {load_seconds:.0f} s, then docker kill {PRIMARY}")
    time.sleep(load_seconds)
    died_at = kill_primary()
    failover_seconds = promote_and_write(died_at)
    say(f"replica promoted, first write {failover_seconds:.1f} s after the primary died")
    load.stop()
    if not load.acknowledged:
        raise RuntimeError(f"the write load acknowledged no row: {load.error}")
    acked_id, acked_at = load.acknowledged[-1]
    # A survivor without any row of the load lost all of it: count from its first row.
    first_at = load.acknowledged[0][1]
    replica_id, replica_at = last_row(5432)

    say("restore of the repository to the end of the archive (primary's timeline) on the replica host")
    start = time.monotonic()
    # The promoted replica archives on timeline 2 now: recover along the backup's timeline only.
    restore_seconds = restore(RPO_DIR, "--type=default --target-timeline=current")
    start_scratch(RPO_DIR)
    wait_promoted(SCRATCH_PORT)
    archive_id, archive_at = last_row(SCRATCH_PORT)
    restore_latest_seconds = time.monotonic() - start
    stop_scratch(RPO_DIR)
    return {
        "load_seconds": load_seconds,
        "rate": rate,
        "acknowledged_rows": len(load.acknowledged),
        "last_acknowledged_id": acked_id,
        "last_acknowledged_at": acked_at,
        "failover_db_seconds": failover_seconds,
        "replica_last_id": replica_id,
        "replica_rows_lost": acked_id - replica_id,
        "replica_seconds_lost": seconds_between(acked_at, replica_at or first_at),
        "archive_last_id": archive_id,
        "archive_rows_lost": acked_id - archive_id,
        "archive_seconds_lost": seconds_between(acked_at, archive_at or first_at),
        "restore_latest_pgbackrest_seconds": restore_seconds,
        "restore_latest_full_seconds": restore_latest_seconds,
    }


# --- the run ------------------------------------------------------------------------------------

def mb_per_s(size: int, seconds: float) -> float:
    return size / MB / seconds if seconds > 0 else float("nan")


def clean_scratch() -> None:
    for path in (RESTORE_DIR, RPO_DIR):
        stop_scratch(path)
    on(REPLICA, f"rm -rf {RESTORE_DIR} {RPO_DIR} {UNTAR_DIR} {TAR_FILE} {RESTORE_DIR}.log {RPO_DIR}.log",
       timeout=300, check=False)


def measure(args) -> dict:
    fig: dict = {"scale": args.scale, "load_start": os.getloadavg()}
    fig["scenario"] = scenario_up()
    say(f"scenario {fig['scenario']}")

    fig["pgbench_seconds"] = load_pgbench(args.scale)
    fig["replay_wait_seconds"] = wait_replayed()
    on(REPLICA, "psql -XAtq -c CHECKPOINT", timeout=600)  # restartpoint: the data files are written
    fig["data_bytes"] = dir_bytes(REPLICA, DATA_DIR)
    fig["wal_bytes"] = dir_bytes(REPLICA, f"{DATA_DIR}/pg_wal", exclude_wal=False)
    say(f"pgbench -i -s {args.scale}: {fig['pgbench_seconds']:.1f} s; replica caught up "
        f"{fig['replay_wait_seconds']:.1f} s later; data directory {fig['data_bytes'] / MB:.0f} MB "
        f"without pg_wal ({fig['wal_bytes'] / MB:.0f} MB)")

    fig["backup_seconds"], backup = full_backup()
    fig["backup_label"] = backup["label"]
    fig["backup_repo_bytes"] = backup["info"]["repository"]["delta"]
    fig["backup_db_bytes"] = backup["info"]["size"]
    fig["tar_seconds"] = tar_baseline()
    fig["tar_bytes"] = int(on(REPLICA, f"stat -c %s {TAR_FILE}"))
    say(f"full backup {fig['backup_seconds']:.1f} s = {mb_per_s(fig['data_bytes'], fig['backup_seconds']):.1f} MB/s "
        f"(repository {fig['backup_repo_bytes'] / MB:.0f} MB); tar {fig['tar_seconds']:.1f} s = "
        f"{mb_per_s(fig['data_bytes'], fig['tar_seconds']):.1f} MB/s; "
        f"backup/tar {fig['tar_seconds'] / fig['backup_seconds']:.2f}")

    start = time.monotonic()
    fig["restore_seconds"] = restore(RESTORE_DIR, f"--set={backup['label']} --type=immediate --target-action=promote")
    start_scratch(RESTORE_DIR)
    fig["accounts"] = count_accounts()
    fig["full_restore_seconds"] = time.monotonic() - start
    stop_scratch(RESTORE_DIR)
    fig["untar_seconds"] = untar_baseline()
    say(f"restore {fig['restore_seconds']:.1f} s = {mb_per_s(fig['data_bytes'], fig['restore_seconds']):.1f} MB/s; "
        f"untar {fig['untar_seconds']:.1f} s = {mb_per_s(fig['data_bytes'], fig['untar_seconds']):.1f} MB/s; "
        f"full restore (restore + start + count = {fig['accounts']:,}) {fig['full_restore_seconds']:.1f} s")
    clean_scratch()

    fig.update(rpo_and_failover(args.load_seconds, args.rate))
    say(f"RPO: acknowledged up to id {fig['last_acknowledged_id']}; replica lost {fig['replica_rows_lost']} rows "
        f"({fig['replica_seconds_lost']:.2f} s); archive restore lost {fig['archive_rows_lost']} rows "
        f"({fig['archive_seconds_lost']:.1f} s of writes); failover (db) {fig['failover_db_seconds']:.1f} s")
    clean_scratch()
    fig["load_end"] = os.getloadavg()
    fig["recorded_at"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return fig


def mark(ok: bool) -> str:
    return "met" if ok else "MISSED"


def section(fig: dict, app_failover: str) -> str:
    data, rows = fig["data_bytes"], fig["scale"] * 100_000
    backup_rate, tar_rate = mb_per_s(data, fig["backup_seconds"]), mb_per_s(data, fig["tar_seconds"])
    restore_rate, untar_rate = mb_per_s(data, fig["restore_seconds"]), mb_per_s(data, fig["untar_seconds"])
    load = ", ".join(f"{value:.1f}" for value in fig["load_start"])
    load_end = ", ".join(f"{value:.1f}" for value in fig["load_end"])
    return "\n".join([
        "## Backups",
        "",
        "`make bench-backup` (scripts/bench_backup.py) on the molecule scenario",
        "roles/pgbackrest/molecule/bench: PostgreSQL 15 primary (bench-pg-1) and its asynchronous streaming",
        "replica (bench-pg-2) from roles/postgresql, pgBackRest 2.45 (lz4, aes-256-cbc, process-max 2, backups",
        "reading their files from the replica over pgBackRest's TLS server), the S3 stand-in (moto behind nginx",
        "TLS, bench-s3) holding the repository; WAL archived by `archive_command`, archive_timeout 60 s. Sizes",
        "are the data directory without pg_wal (what both pgBackRest and the tar copy), MB = 10^6 bytes. The",
        "baselines write and read a plain, uncompressed tar of the replica's data directory (running, idle:",
        "the same files the backup reads) on the replica host's disk; pgBackRest compresses, encrypts and",
        "sends to S3 over TLS. Page caches are warm for both (the files were just written). The backup's",
        "time includes its fixed costs: the checkpoint on the primary (start-fast), waiting for the replica",
        "to replay up to it, and waiting for the backup's last WAL segment to reach the archive. Every figure",
        "is one run on a machine shared with other work.",
        "",
        f"Run {fig['recorded_at']} on {platform.node()} ({os.cpu_count()} CPUs, shared with other jobs: load average "
        f"{load} at the start, {load_end} at the end); pgbench scale {fig['scale']} "
        f"({rows:,} accounts, `pgbench -i` {fig['pgbench_seconds']:.0f} s), data directory {data / MB:.0f} MB "
        f"(+ {fig['wal_bytes'] / MB:.0f} MB pg_wal), "
        f"scenario {fig['scenario']}.",
        "",
        "| measure | pgBackRest | baseline (tar) | pgBackRest / tar MB/s | target |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| full backup | {fig['backup_seconds']:.1f} s, {backup_rate:.1f} MB/s "
        f"(repository {fig['backup_repo_bytes'] / MB:.0f} MB) | tar {fig['tar_seconds']:.1f} s, {tar_rate:.1f} MB/s "
        f"| {backup_rate / tar_rate:.2f}x | |",
        f"| restore of that backup (files only) | {fig['restore_seconds']:.1f} s, {restore_rate:.1f} MB/s "
        f"| untar {fig['untar_seconds']:.1f} s, {untar_rate:.1f} MB/s | {restore_rate / untar_rate:.2f}x | |",
        f"| full restore time: restore + start on port {SCRATCH_PORT} + `SELECT count(*) FROM pgbench_accounts` "
        f"= {fig['accounts']:,} | {fig['full_restore_seconds']:.1f} s | | | <= {TARGET_RESTORE_SECONDS} s "
        f"({mark(fig['full_restore_seconds'] <= TARGET_RESTORE_SECONDS and fig['accounts'] == rows)}) |",
        f"| the same backup to the end of the archive (all WAL since, until recovery has finished), "
        f"after the RPO load, beside the promoted replica on the same host "
        f"| {fig['restore_latest_full_seconds']:.1f} s (restore {fig['restore_latest_pgbackrest_seconds']:.1f} s) "
        "| | | |",
        "",
        f"RPO and failover: a write load of one INSERT at a time (sequence id, `clock_timestamp()`), paced at "
        f"up to {fig['rate']:.0f} rows/s ({fig['acknowledged_rows'] / fig['load_seconds']:.1f} achieved), "
        f"on the primary for {fig['load_seconds']:.0f} s "
        f"({fig['acknowledged_rows']} rows acknowledged, the last id {fig['last_acknowledged_id']}), then "
        "`docker kill` of the primary; its disk is never used again (losing it). Rows lost = last acknowledged id",
        "minus the highest id the survivor holds; seconds of writes lost = `clock_timestamp()` of the last",
        "acknowledged row minus that of the last surviving row.",
        "",
        "| survivor | rows lost | seconds of writes lost | target |",
        "| --- | ---: | ---: | --- |",
        f"| the repository: restore to the end of the archive (`--type=default`, the primary's timeline, "
        f"recovery from the archive only) on the replica host | {fig['archive_rows_lost']} "
        f"| {fig['archive_seconds_lost']:.1f} s | <= {TARGET_RPO_SECONDS} s "
        f"({mark(fig['archive_seconds_lost'] <= TARGET_RPO_SECONDS)}) |",
        f"| the streaming replica (asynchronous in this scenario), its last replayed row | "
        f"{fig['replica_rows_lost']} | {fig['replica_seconds_lost']:.2f} s | 0 only with synchronous "
        "replication: proven by the lab's failover test, not here |",
        "",
        "| failover | seconds | target |",
        "| --- | ---: | --- |",
        f"| database level: `docker kill` of the primary to the first committed INSERT on the replica after "
        f"`pg_promote()` (promoted at once) | {fig['failover_db_seconds']:.1f} s | |",
        f"| primary death to the first successful write through the app: tests/lab/test_failover.py prints "
        f"kill_to_first_order_s | {app_failover} | <= {TARGET_FAILOVER_SECONDS} s |",
        "",
        "What the figures mean: archiving is asynchronous, so the repository lags the primary by the WAL",
        "segment in progress, which is archived when it fills (16 MB) or after archive_timeout (60 s) at",
        "the latest, plus the time `archive-push` takes; a light write load therefore loses up to about",
        "60 s of writes when the primary's disk goes, a heavy one less (segments fill sooner). An",
        "asynchronous replica loses only what was not yet streamed (typically well under a second).",
        "",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=50, help="pgbench scale (50: about 750 MB)")
    parser.add_argument("--load-seconds", type=float, default=90.0, help="write load before the primary dies")
    parser.add_argument("--rate", type=float, default=20.0, help="INSERTs per second of the write load")
    parser.add_argument("--keep", action="store_true", help="leave the scenario's containers up")
    parser.add_argument("--no-record", action="store_true", help=f"do not write {Path('docs/benchmarks.md')}")
    parser.add_argument("--app-failover", default="not measured here: the lab's figure",
                        help="kill_to_first_order_s from tests/lab/test_failover.py, to record beside ours")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()

    try:
        fig = measure(args)
    finally:
        if not args.keep:
            molecule("destroy", 600)
    text = section(fig, args.app_failover)
    if not args.no_record:
        replace_section(args.output, "Backups", text)
    print(text)
    print(json.dumps(fig, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
