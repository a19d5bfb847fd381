"""Verifying a webhook delivery: Stripe's signature and its timestamp (300 s tolerance)."""

from __future__ import annotations

import orjson
import stripe

TOLERANCE_SECONDS = 300


class InvalidWebhook(Exception):
    """The delivery is not a verified Stripe event; the message says why (for the audit log)."""


def verify_event(payload: bytes, signature_header: str | None, secret: str) -> dict:
    """The event as a plain dict, only if Stripe signed exactly these bytes recently."""
    if not signature_header:
        raise InvalidWebhook("missing Stripe-Signature header")
    try:
        stripe.WebhookSignature.verify_header(payload, signature_header, secret, tolerance=TOLERANCE_SECONDS)
    except stripe.SignatureVerificationError as exc:
        raise InvalidWebhook(str(exc)) from None
    except UnicodeDecodeError:
        raise InvalidWebhook("payload is not UTF-8") from None
    try:
        event = orjson.loads(payload)
    except ValueError:  # orjson.JSONDecodeError, also for invalid UTF-8
        raise InvalidWebhook("payload is not JSON") from None
    if not _is_event(event):
        raise InvalidWebhook("payload is not a Stripe event")
    return event


def _is_event(event) -> bool:
    return (
        isinstance(event, dict)
        and isinstance(event.get("id"), str) and event["id"] != ""
        and isinstance(event.get("type"), str) and event["type"] != ""
        and isinstance(event.get("created"), int) and not isinstance(event["created"], bool)
        and isinstance(event.get("data"), dict)
        and isinstance(event["data"].get("object"), dict)
    )
