"""The audit trail: user actions, security events and payment events, kept 90 days.

Action names are namespaced by kind, e.g. `user.signed_up`, `security.sign_in_failed`,
`security.webhook_bad_signature`, `payment.succeeded`.
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


async def purge(conn, *, older_than_days: int = 90) -> int:
    """Delete rows older than the retention period; returns how many went."""
    cursor = await conn.execute(
        "DELETE FROM audit_logs WHERE created_at < now() - make_interval(days => %s)",
        (older_than_days,),
    )
    return cursor.rowcount
