"""The audit trail: user actions, security events and payment events, kept 90 days.

Action names are namespaced by kind, e.g. `user.signed_up`, `security.sign_in_failed`,
`security.webhook_bad_signature`, `payment.succeeded`.

Events anyone on the internet can cause by the thousand (a webhook with a bad signature)
are counted instead of appended: `record_counted` keeps one row per action and address
per window, whose `details.count` says how many there were.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from psycopg.types.json import Jsonb


def _valid_ip(ip: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(ip)) if ip else None
    except ValueError:
        return None


async def record(conn, *, action: str, user_id: int | None = None, ip: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
    """Append one row; runs in the caller's transaction so it commits (or not) with the change."""
    await conn.execute(
        "INSERT INTO audit_logs (action, user_id, ip, details) VALUES (%s, %s, %s, %s)",
        (action, user_id, _valid_ip(ip), Jsonb(details or {})),
    )


async def record_counted(conn, *, action: str, ip: str | None, details: dict[str, Any],
                         window_seconds: int = 60) -> None:
    """Count one event in the row of `action` from `ip` written in the last `window_seconds`,
    or start that row (`details` with `count` 1). One statement, no lost counts: concurrent
    updates of the row wait for each other and add to its newest count. Concurrent first
    events of a window may each insert a row (a few rows, never one per event)."""
    await conn.execute(
        """
        WITH counted AS (
            UPDATE audit_logs
               SET details = details || jsonb_build_object(
                       'count', coalesce((details ->> 'count')::bigint, 1) + 1, 'last_at', now())
             WHERE id = (SELECT id FROM audit_logs
                          WHERE action = %(action)s AND ip IS NOT DISTINCT FROM %(ip)s::inet
                            AND created_at > now() - make_interval(secs => %(window)s)
                          ORDER BY created_at DESC LIMIT 1)
            RETURNING id
        )
        INSERT INTO audit_logs (action, ip, details)
        SELECT %(action)s, %(ip)s::inet, %(details)s
         WHERE NOT EXISTS (SELECT 1 FROM counted)
        """,
        {"action": action, "ip": _valid_ip(ip), "window": window_seconds,
         "details": Jsonb({**details, "count": 1, "window_seconds": window_seconds})},
    )


async def purge(conn, *, older_than_days: int = 90) -> int:
    """Delete rows older than the retention period; returns how many went."""
    cursor = await conn.execute(
        "DELETE FROM audit_logs WHERE created_at < now() - make_interval(days => %s)",
        (older_than_days,),
    )
    return cursor.rowcount
