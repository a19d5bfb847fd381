"""What a webhook handler gets: the open transaction and a list of after-commit effects."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

AfterCommit = Callable[[], Awaitable[None] | None]


@dataclass
class WebhookContext:
    # A psycopg AsyncConnection inside the event's transaction: every write a handler
    # makes commits or rolls back together with the stripe_events row.
    conn: Any
    redis: Any
    stripe: Any
    # Effects outside PostgreSQL (metrics, cache invalidation) must not happen for a
    # transaction that rolls back: handlers queue them here, the processor runs them
    # after the commit.
    after_commit: list[AfterCommit] = field(default_factory=list)

    def on_commit(self, effect: AfterCommit) -> None:
        self.after_commit.append(effect)
