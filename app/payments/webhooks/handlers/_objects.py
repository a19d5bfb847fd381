"""Small readers for the Stripe object inside an event."""

from __future__ import annotations

from typing import Any


def event_object(event: dict) -> dict:
    return event["data"]["object"]


def id_of(value: Any) -> str | None:
    """Stripe fields hold an id, or the object itself when expanded."""
    if isinstance(value, dict):
        return value.get("id")
    return value


def order_id_of(obj: dict) -> str | None:
    """Our order id, which we put in the metadata of every object we create."""
    metadata = obj.get("metadata") or {}
    return metadata.get("order_id") or obj.get("client_reference_id")
