"""Start and stop real local services for the tests, `make dev` and the benchmarks.

Each `start_*` function takes a directory for the service's state, picks a free
loopback port, starts the service as a child process, polls until it answers and
returns a `Service` handle (`url`, `stop()`). Nothing here needs pytest.

- PostgreSQL 15: `initdb` into `<dir>/data`, the server's unix socket inside that
  directory. PostgreSQL refuses to run as root, so when we are root the server runs as
  the `postgres` system user (created by Debian's postgresql package).
- Redis 7: `redis-server` without persistence.
- localstripe: the fake Stripe API (PyPI `localstripe`), bound to loopback, its store
  file inside `<dir>` instead of its hard-coded `/tmp/localstripe.pickle`
  (tests/support/localstripe_server.py).
- The Stripe stub (`roles/lab_services/files/stripe_stub.py`) in front of localstripe.

Children get a parent-death signal, so a test run that is killed does not leave
servers behind.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

SUPPORT_DIR = Path(__file__).resolve().parent
# The Stripe stand-in is the one the lab runs (roles/lab_services): one copy for both.
STRIPE_STUB = SUPPORT_DIR.parents[1] / "roles" / "lab_services" / "files" / "stripe_stub.py"
REPO_ROOT = SUPPORT_DIR.parent.parent
POSTGRES_MAJOR = "15"


class ServiceError(RuntimeError):
    """A service could not be found, started or reached."""


class ServiceExited(ServiceError):
    """The service's process ended before it was ready (e.g. its port was taken)."""


@dataclass
class Service:
    """A running child process and where to reach it."""

    name: str
    url: str
    port: int
    process: subprocess.Popen
    log_path: Path
    stop_signal: int = signal.SIGTERM
    extra: dict = field(default_factory=dict)

    def wait_ready(self, ready, *, timeout: float, what: str) -> "Service":
        """Return self once `ready()` answers; stop the process if it never does."""
        try:
            wait_until(ready, timeout=timeout, what=what, process=self.process, log_path=self.log_path)
        except ServiceError:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Ask the service to stop, wait for it, kill it if it does not."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(self.stop_signal)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __str__(self) -> str:
        return self.url

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# -- helpers -----------------------------------------------------------------------------


def make_state_dir(prefix: str = "payments-services-") -> Path:
    """A new temporary directory for service state, searchable by the `postgres` user."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    process: subprocess.Popen | None = None,
    log_path: Path | None = None,
) -> None:
    """Poll `check` until it returns true; fail early when `process` has exited."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if process is not None and process.poll() is not None:
            raise ServiceExited(
                f"{what} exited with code {process.returncode} before it was ready"
                + _log_hint(log_path)
            )
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
            pass
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} not ready after {timeout:.0f}s" + _log_hint(log_path))
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def _log_hint(log_path: Path | None) -> str:
    if log_path is None or not log_path.exists():
        return ""
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
    return f"; last lines of {log_path}:\n{tail}"


def _die_with_parent(sig: int) -> Callable[[], None]:
    """preexec_fn: deliver `sig` to the child when its parent dies (Linux only)."""

    def preexec() -> None:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
        except Exception:  # noqa: BLE001 - best effort, not on Linux
            pass

    return preexec


def _spawn(
    args: list[str],
    log_path: Path,
    *,
    stop_signal: int = signal.SIGTERM,
    env: dict | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            user=user,
            # Own process group: a Ctrl-C in `make dev` reaches the app, not the services;
            # the caller stops them in order.
            process_group=0,
            preexec_fn=_die_with_parent(stop_signal),
        )


def _start_with_port_retry(start: Callable[[int], Service], attempts: int = 3) -> Service:
    """Another process may grab the free port between our check and the bind: retry."""
    for attempt in range(attempts):
        try:
            return start(free_port())
        except ServiceExited:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _http_answers(url: str) -> bool:
    """Any HTTP response at all (the server is up, whatever it thinks of the path)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except urllib.error.HTTPError as e:
        return e.code < 500


# -- PostgreSQL --------------------------------------------------------------------------


def postgres_bindir() -> Path:
    """Directory with initdb and postgres (version 15), or a clear error."""
    candidates = [Path(f"/usr/lib/postgresql/{POSTGRES_MAJOR}/bin")]
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
            candidates.append(Path(out))
        except (subprocess.CalledProcessError, OSError):
            pass
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "postgres").exists():
            version = subprocess.run([str(bindir / "postgres"), "--version"],
                                     capture_output=True, text=True).stdout
            if re.search(rf"\b{POSTGRES_MAJOR}\.\d+", version):
                return bindir
    raise ServiceError(
        f"PostgreSQL {POSTGRES_MAJOR} server binaries (initdb, postgres) not found via "
        f"`pg_config --bindir` or /usr/lib/postgresql/{POSTGRES_MAJOR}/bin; "
        f"install the postgresql-{POSTGRES_MAJOR} package (scripts/bootstrap.sh does)"
    )


def _postgres_run_as() -> str | None:
    """The user to run PostgreSQL as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ServiceError(
            "running as root and there is no `postgres` user to run PostgreSQL as; "
            "install the postgresql package or run the tests as a normal user"
        ) from None
    return "postgres"


def _prepare_dir_for(path: Path, user: str | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if user is None:
        return
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(path, 0o700)
    probe = subprocess.run(["test", "-w", str(path)], user=user, capture_output=True)
    if probe.returncode != 0:
        raise ServiceError(
            f"user {user!r} cannot write {path}: every parent directory must be "
            f"searchable by it (see make_state_dir(), or chmod o+x the parents)"
        )


def start_postgres(directory: str | os.PathLike, *, durable: bool = False) -> Service:
    """PostgreSQL 15 in `directory` (created; reused if it holds a cluster already).

    `durable=False` turns fsync and friends off (tests). The URL is the superuser's
    (`postgres`, trust authentication on loopback) to the `postgres` database.
    """
    directory = Path(directory).resolve()
    bindir = postgres_bindir()
    user = _postgres_run_as()
    _prepare_dir_for(directory, user)
    data = directory / "data"
    log_path = directory / "postgres.log"
    if not (data / "PG_VERSION").exists():
        result = subprocess.run(
            [
                str(bindir / "initdb"),
                "--pgdata", str(data),
                "--username", "postgres",
                "--auth", "trust",
                "--encoding", "UTF8",
                "--locale", "C.UTF-8",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            user=user,
            cwd=directory,
        )
        if result.returncode != 0:
            raise ServiceError(f"initdb failed:\n{result.stdout}\n{result.stderr}")
    stale_pid = data / "postmaster.pid"
    if stale_pid.exists():
        _stop_stale_postgres(bindir, data, user)

    settings = {
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(directory),
        "max_connections": "200",
        "shared_buffers": "64MB",
        "logging_collector": "off",
    }
    if not durable:
        settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")

    def start(port: int) -> Service:
        args = [str(bindir / "postgres"), "-D", str(data), "-p", str(port)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        # SIGINT is PostgreSQL's "fast" shutdown: roll back clients, checkpoint, exit.
        process = _spawn(args, log_path, stop_signal=signal.SIGINT, user=user, cwd=directory)
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        service = Service("postgres", url, port, process, log_path, signal.SIGINT,
                          extra={"bindir": bindir, "data": data, "socket_dir": directory})
        return service.wait_ready(lambda: _postgres_ready(url), timeout=60, what="PostgreSQL")

    return _start_with_port_retry(start)


def _postgres_ready(url: str) -> bool:
    import psycopg

    with psycopg.connect(url, connect_timeout=2) as conn:
        conn.execute("SELECT 1")
    return True


def _stop_stale_postgres(bindir: Path, data: Path, user: str | None) -> None:
    """A server left running on this data directory (e.g. a killed `make dev`): stop it."""
    subprocess.run(
        [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"],
        capture_output=True,
        user=user,
    )


# -- Redis -------------------------------------------------------------------------------


def start_redis(directory: str | os.PathLike) -> Service:
    """Redis on loopback without persistence (no RDB snapshots, no AOF)."""
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceError("redis-server not found; install the redis-server package")
    log_path = directory / "redis.log"

    def start(port: int) -> Service:
        args = [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
            "--daemonize", "no",
            "--logfile", "",
        ]
        process = _spawn(args, log_path)
        service = Service("redis", f"redis://127.0.0.1:{port}/0", port, process, log_path)
        return service.wait_ready(lambda: _redis_ping(port), timeout=20, what="Redis")

    return _start_with_port_retry(start)


def _redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


# -- localstripe and the Stripe stub -----------------------------------------------------

def start_localstripe(directory: str | os.PathLike, *, from_scratch: bool = True) -> Service:
    """localstripe on loopback; `from_scratch=False` reloads the store kept in `directory`."""
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import localstripe  # noqa: F401
    except ImportError:
        raise ServiceError(
            "localstripe is not installed in this Python; install requirements-dev.txt"
        ) from None
    log_path = directory / "localstripe.log"
    store_file = directory / "localstripe.pickle"

    def start(port: int) -> Service:
        args = [sys.executable, str(SUPPORT_DIR / "localstripe_server.py"),
                "--port", str(port), "--store", str(store_file)]
        if from_scratch:
            args.append("--from-scratch")
        process = _spawn(args, log_path, stop_signal=signal.SIGINT)
        url = f"http://127.0.0.1:{port}"
        service = Service("localstripe", url, port, process, log_path, signal.SIGINT)
        return service.wait_ready(lambda: _http_ok(url + "/js.stripe.com/v3/"), timeout=30, what="localstripe")

    return _start_with_port_retry(start)


def start_stripe_stub(
    directory: str | os.PathLike, upstream: str, *, state_file: str | os.PathLike | None = None
) -> Service:
    """The Stripe stub (prices, checkout and billing portal sessions) in front of `upstream`."""
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "stripe_stub.log"

    def start(port: int) -> Service:
        args = [sys.executable, str(STRIPE_STUB),
                "--port", str(port), "--upstream", upstream]
        if state_file is not None:
            args += ["--state", str(state_file)]
        process = _spawn(args, log_path, stop_signal=signal.SIGINT)
        url = f"http://127.0.0.1:{port}"
        service = Service("stripe_stub", url, port, process, log_path, signal.SIGINT)
        return service.wait_ready(lambda: _http_ok(url + "/_stub/health"), timeout=30, what="Stripe stub")

    return _start_with_port_retry(start)


def start_smtp_sink(directory: str | os.PathLike) -> Service:
    """A real SMTP server on loopback (aiosmtpd) that keeps every message it accepts in the
    maildir `directory`/maildir: what `make dev` hands the mail worker instead of a relay."""
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        raise ServiceError("aiosmtpd is not installed in this Python; install requirements-dev.txt") from None
    log_path = directory / "smtp.log"
    maildir = directory / "maildir"

    def start(port: int) -> Service:
        args = [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
                "-c", "aiosmtpd.handlers.Mailbox", str(maildir)]
        process = _spawn(args, log_path)
        service = Service("smtp", f"smtp://127.0.0.1:{port}", port, process, log_path)
        return service.wait_ready(lambda: _smtp_greets(port), timeout=20, what="the SMTP sink")

    return _start_with_port_retry(start)


def _smtp_greets(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        return s.recv(64).startswith(b"220")


# -- the app ----------------------------------------------------------------------------


def start_app_server(
    directory: str | os.PathLike,
    env: dict,
    *,
    workers: int = 1,
    port: int | None = None,
    app: str = "payments.app:create_app()",
    command: list[str] | None = None,
    ready_path: str = "/livez",
    timeout: float = 60,
) -> Service:
    """The app (or another ASGI app) under hypercorn on 127.0.0.1, as a child process.

    `env` is the whole environment of the server (settings included); `app/` and the
    repository root are put on PYTHONPATH. `command` replaces the hypercorn command line
    (e.g. `python -m payments serve`); it gets HOST, PORT and WEB_CONCURRENCY in its
    environment. Ready once `ready_path` answers (any status: hypercorn accepts
    connections only after the app's lifespan has started).
    """
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "hypercorn.log"
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT / "app"), str(REPO_ROOT)]
        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )

    def start(port: int) -> Service:
        args = command or [sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{port}",
                           "--workers", str(workers), "--graceful-timeout", "5", app]
        env.update(HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY=str(workers))
        process = _spawn(args, log_path, env=env, cwd=REPO_ROOT)
        url = f"http://127.0.0.1:{port}"
        service = Service("hypercorn", url, port, process, log_path, extra={"env": env})
        return service.wait_ready(lambda: _http_answers(url + ready_path), timeout=timeout,
                                  what=f"hypercorn serving {app}")

    if port is not None:
        return start(port)
    return _start_with_port_retry(start)
