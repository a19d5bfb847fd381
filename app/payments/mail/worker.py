"""`python -m payments mail-worker`: delivers the mail outbox over SMTP, at least once.

One row at a time, in one PostgreSQL transaction:

    claim a due pending row  (SELECT ... FOR UPDATE SKIP LOCKED)
    send it over SMTP        (Message-ID from the row: the same on every attempt)
    mark it sent             (COMMIT)

The row stays locked while it is sent, so several workers (one per app host) never send
the same row at once; SKIP LOCKED lets each take the next. A worker that dies at any
point releases its lock with its connection, and the row is still pending: restarting
loses nothing. The one case that sends twice is a death after the SMTP server accepted the
message and before the COMMIT: the row is sent again, with the same Message-ID (app/README.md).

A failed attempt (server down, a temporary 4xx) leaves the row pending with its error and
`next_attempt_at` pushed back exponentially (MAIL_RETRY_BASE_SECONDS x 2^(attempts-1), at
most MAIL_RETRY_MAX_SECONDS); a permanent refusal of the message itself (5xx for its
recipient or its content) marks it failed. What would fail every row the same way (the
server unreachable, TLS, a refused login or sender: a setting to fix, so retried, never
failed) ends the round after deferring the row in hand.

Synchronous on purpose: one process, one connection, one message at a time; the
throughput of a shop's transactional mail is far below what that carries.
"""

from __future__ import annotations

import smtplib
import ssl
import threading
from dataclasses import dataclass

import psycopg
import structlog
from psycopg.rows import dict_row

from payments.config import MailSettings
from payments.mail.render import build_message

log = structlog.get_logger("payments.mail")

MAX_ERROR_CHARS = 2000

CLAIM_SQL = """
    SELECT id, kind, recipient, context, message_token, attempts
      FROM mail_outbox
     WHERE status = 'pending' AND next_attempt_at <= now()
     ORDER BY next_attempt_at, id
     LIMIT 1
       FOR UPDATE SKIP LOCKED
"""


class SmtpUnreachable(Exception):
    """No usable SMTP conversation (refused, timed out, TLS or login failed): stop this round."""


@dataclass(frozen=True, slots=True)
class Attempt:
    row_id: int
    outcome: str  # sent, retry, failed


def backoff_seconds(settings: MailSettings, attempts: int) -> float:
    """The wait after the `attempts`-th failed attempt (1, 2, ...)."""
    return min(settings.retry_base_seconds * 2 ** max(attempts - 1, 0), settings.retry_max_seconds)


def send(settings: MailSettings, message) -> None:
    try:
        smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds)
    except OSError as exc:
        raise SmtpUnreachable(f"{type(exc).__name__}: {exc}") from exc
    with smtp:
        if settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context(cafile=settings.smtp_ca_file))
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password)
        smtp.send_message(message)


def _permanent(exc: Exception) -> bool:
    """The server refused this message for good (not the connection, the login or the sender)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(500 <= code < 600 for code, _ in exc.recipients.values())
    return isinstance(exc, smtplib.SMTPDataError) and 500 <= exc.smtp_code < 600


def _ends_round(exc: Exception) -> bool:
    """Every other row would fail the same way now."""
    return isinstance(exc, (SmtpUnreachable, ssl.SSLError, smtplib.SMTPAuthenticationError,
                            smtplib.SMTPSenderRefused, smtplib.SMTPNotSupportedError,
                            smtplib.SMTPServerDisconnected, TimeoutError, ConnectionError))


def deliver_one(conn, settings: MailSettings) -> Attempt | None:
    """Claim, send and mark one due row; None when nothing is due. Raises SmtpUnreachable
    after recording the attempt."""
    unreachable = None
    with conn.transaction():
        row = conn.execute(CLAIM_SQL).fetchone()
        if row is None:
            return None
        attempts = row["attempts"] + 1
        try:
            send(settings, build_message(row, sender=settings.mail_from, shop_name=settings.shop_name))
        except (OSError, smtplib.SMTPException, SmtpUnreachable) as exc:
            error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
            if _permanent(exc):
                conn.execute("UPDATE mail_outbox SET status = 'failed', attempts = %s, last_error = %s WHERE id = %s",
                             (attempts, error, row["id"]))
                log.error("mail_refused", outbox_id=row["id"], kind=row["kind"], error=error)
                return Attempt(row["id"], "failed")
            delay = backoff_seconds(settings, attempts)
            conn.execute("UPDATE mail_outbox SET attempts = %s, last_error = %s,"
                         " next_attempt_at = now() + make_interval(secs => %s) WHERE id = %s",
                         (attempts, error, delay, row["id"]))
            log.warning("mail_deferred", outbox_id=row["id"], kind=row["kind"], attempts=attempts,
                        retry_in_seconds=delay, error=error)
            if _ends_round(exc):
                unreachable = SmtpUnreachable(error)
            else:
                return Attempt(row["id"], "retry")
        else:
            conn.execute("UPDATE mail_outbox SET status = 'sent', attempts = %s, sent_at = now(),"
                         " last_error = NULL WHERE id = %s", (attempts, row["id"]))
            log.info("mail_sent", outbox_id=row["id"], kind=row["kind"], attempts=attempts)
            return Attempt(row["id"], "sent")
    raise unreachable  # after the COMMIT of its deferral


def deliver_due(conn, settings: MailSettings, *, stop: threading.Event | None = None) -> list[Attempt]:
    """Every row due now, one by one, until none is left or the server is unreachable."""
    done: list[Attempt] = []
    while stop is None or not stop.is_set():
        try:
            attempt = deliver_one(conn, settings)
        except SmtpUnreachable:
            break
        if attempt is None:
            break
        done.append(attempt)
    return done


def run(settings: MailSettings, stop: threading.Event) -> None:
    """Until `stop` is set (SIGTERM): deliver what is due, then wait MAIL_POLL_SECONDS.
    A lost database connection is reopened on the next round."""
    conn = None
    log.info("mail_worker_started", smtp_host=settings.smtp_host, smtp_port=settings.smtp_port,
             starttls=settings.smtp_starttls)
    try:
        while not stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(settings.database_url, row_factory=dict_row, connect_timeout=5)
                deliver_due(conn, settings, stop=stop)
            except psycopg.Error as exc:
                log.warning("mail_worker_database_error", error=f"{type(exc).__name__}: {exc}")
                if conn is not None:
                    conn.close()
                conn = None
            stop.wait(settings.poll_seconds)
    finally:
        if conn is not None:
            conn.close()
        log.info("mail_worker_stopped")

