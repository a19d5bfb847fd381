"""Validation of the search text people send as ?q=."""

from __future__ import annotations

from payments.errors import ApiError

MAX_QUERY_LENGTH = 200


def normalize_query(raw: str | None) -> str | None:
    """The query to search for, None for "no search"; 400 when it is unreasonable."""
    if raw is None:
        return None
    query = " ".join(raw.split())
    if len(query) > MAX_QUERY_LENGTH:
        raise ApiError(400, "invalid_query", f"Search text must be at most {MAX_QUERY_LENGTH} characters.")
    if "\x00" in query:
        raise ApiError(400, "invalid_query", "Search text contains a NUL character.")
    return query or None
