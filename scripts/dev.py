"""`make dev`: the app on http://127.0.0.1:8000 with everything it needs, on this machine.

Starts what the environment does not already point at, with data under .cache/dev/:

- PostgreSQL 15 (database `payments`) unless DATABASE_URL is set;
- Redis unless REDIS_URL is set;
- localstripe and the Stripe stub (roles/lab_services/files/stripe_stub.py) unless STRIPE_API_BASE
  is set; localstripe then sends its webhooks to the app's /api/webhooks/stripe, signed
  with STRIPE_WEBHOOK_SECRET;
- an SMTP server that keeps every mail in .cache/dev/smtp/maildir (aiosmtpd) unless SMTP_HOST
  is set, and the mail worker (`python -m payments mail-worker`) that delivers the outbox to it.

Then applies migrations (`python -m payments migrate`), seeds the demo catalog
(`python -m payments seed --stripe`: in localstripe too, so checkout works) and runs
the app (`python -m payments serve`) in the foreground. Ctrl-C stops the app, then the services. Every variable set in the
environment overrides the defaults below (PORT, STRIPE_*, SESSION_SECRET, ...).

Usage: .venv/bin/python scripts/dev.py [--reset]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.support import services, stripe_tools  # noqa: E402

STATE_DIR = REPO_ROOT / ".cache" / "dev"
DEV_DATABASE = "payments"

DEFAULTS = {
    "APP_ENV": "dev",
    "APP_VERSION": "dev",
    "HOST": "127.0.0.1",
    "PORT": "8000",
    "WEB_CONCURRENCY": "1",
    "LOG_LEVEL": "info",
    "STRIPE_SECRET_KEY": "sk_test_dev_localstripe",
    "STRIPE_PUBLISHABLE_KEY": "pk_test_dev_localstripe",
    "STRIPE_WEBHOOK_SECRET": "whsec_dev_localstripe",
    "MAIL_FROM": "Payments dev <shop@dev.test>",
    "MAIL_RETRY_BASE_SECONDS": "2",
}


def say(message: str) -> None:
    print(f"dev: {message}", flush=True)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def state_dir(name: str) -> Path:
    """A directory under .cache/dev that the `postgres` user can reach when we are root."""
    for path in (REPO_ROOT / ".cache", STATE_DIR):
        path.mkdir(exist_ok=True)
        if path.stat().st_uid == os.geteuid():
            path.chmod(path.stat().st_mode | 0o011)
    return STATE_DIR / name


def session_secret() -> str:
    """Kept in .cache/dev so sign-ins survive a restart of `make dev`."""
    path = state_dir("session_secret")
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def ensure_database(admin_url: str, name: str) -> str:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return admin_url.rsplit("/", 1)[0] + "/" + name


def run_payments(command: str, env: dict) -> None:
    say(f"python -m payments {command}")
    result = subprocess.run([sys.executable, "-m", "payments", *command.split()], env=env,
                            cwd=REPO_ROOT)
    if result.returncode != 0:
        raise SystemExit(f"dev: `python -m payments {command}` failed ({result.returncode})")


def start_services(env: dict, started: list) -> bool:
    """Start what the environment lacks; returns whether we run localstripe ourselves."""
    if not env.get("DATABASE_URL"):
        pg = services.start_postgres(state_dir("postgres"), durable=True)
        started.append(pg)
        env["DATABASE_URL"] = ensure_database(pg.url, DEV_DATABASE)
        say(f"PostgreSQL  {env['DATABASE_URL']}  (log {pg.log_path})")
    if not env.get("REDIS_URL"):
        redis = services.start_redis(state_dir("redis"))
        started.append(redis)
        env["REDIS_URL"] = redis.url
        say(f"Redis       {redis.url}")
    own_stripe = not env.get("STRIPE_API_BASE")
    if own_stripe:
        localstripe = services.start_localstripe(state_dir("localstripe"), from_scratch=False)
        started.append(localstripe)
        stub = services.start_stripe_stub(state_dir("stripe_stub"), localstripe.url,
                                          state_file=state_dir("stripe_stub.json"))
        started.append(stub)
        env["STRIPE_API_BASE"] = stub.url
        env.setdefault("STRIPE_JS_URL", f"{stub.url}/js.stripe.com/v3/")
        say(f"localstripe {localstripe.url}, Stripe stub {stub.url} (STRIPE_API_BASE)")
    if not env.get("SMTP_HOST"):
        smtp = services.start_smtp_sink(state_dir("smtp"))
        started.append(smtp)
        env.update(SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp.port), SMTP_STARTTLS="false")
        say(f"SMTP sink   {smtp.url}  (mail kept in {state_dir('smtp') / 'maildir'})")
    return own_stripe


def start_mail_worker(env: dict) -> subprocess.Popen:
    """The outbox's sender beside the app, as on the app hosts; stopped with the app."""
    say("python -m payments mail-worker")
    return subprocess.Popen([sys.executable, "-m", "payments", "mail-worker"], env=env, cwd=REPO_ROOT,
                            process_group=0)


def serve(env: dict) -> int:
    """The app in the foreground until it exits or we are interrupted."""
    app = subprocess.Popen([sys.executable, "-m", "payments", "serve"], env=env, cwd=REPO_ROOT)

    def forward_term(signum, frame):
        app.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward_term)
    try:
        return app.wait()
    except KeyboardInterrupt:
        # The terminal sent SIGINT to the app as well; give it time to shut down cleanly.
        try:
            return app.wait(15)
        except subprocess.TimeoutExpired:
            app.terminate()
            return app.wait()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the app locally with its services.")
    parser.add_argument("--reset", action="store_true",
                        help="delete .cache/dev (database, Stripe objects) before starting")
    args = parser.parse_args()
    if args.reset and STATE_DIR.exists():
        say(f"removing {STATE_DIR}")
        shutil.rmtree(STATE_DIR)

    env = dict(os.environ)
    for key, value in DEFAULTS.items():
        env.setdefault(key, value)
    if not env.get("SESSION_SECRET"):
        env["SESSION_SECRET"] = session_secret()
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT / "app")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    host, port = env["HOST"], int(env["PORT"])
    if not port_is_free(host, port):
        raise SystemExit(f"dev: {host}:{port} is in use; set PORT to another port")

    started: list[services.Service] = []
    try:
        own_stripe = start_services(env, started)
        run_payments("migrate", env)
        # --stripe: products and prices exist in localstripe too, so checkout works;
        # seeding is idempotent (it finds the demo products it created before).
        run_payments("seed --stripe", env)
        app_url = f"http://{host}:{port}"
        if own_stripe:
            stripe_tools.register_webhook(
                env["STRIPE_API_BASE"], f"{app_url}/api/webhooks/stripe",
                env["STRIPE_WEBHOOK_SECRET"], endpoint_id="dev")
            say(f"localstripe sends webhooks to {app_url}/api/webhooks/stripe")
        say(f"app on {app_url}  (Ctrl-C stops the app and the services)")
        mail_worker = start_mail_worker(env)
        try:
            return serve(env)
        finally:
            mail_worker.terminate()
            mail_worker.wait(20)
    except KeyboardInterrupt:
        return 130
    except services.ServiceError as error:
        say(f"error: {error}")
        return 1
    finally:
        for service in reversed(started):
            service.stop()
        if started:
            say("services stopped")


if __name__ == "__main__":
    sys.exit(main())
