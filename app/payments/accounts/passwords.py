"""argon2id password hashes (argon2-cffi's RFC 9106 defaults).

Hashing costs tens of milliseconds of CPU, so it runs in a worker thread instead of
blocking the event loop.
"""

from __future__ import annotations

from functools import lru_cache

import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


async def hash_password(password: str) -> str:
    return await anyio.to_thread.run_sync(_hasher.hash, password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(password_hash: str, password: str) -> bool:
    return await anyio.to_thread.run_sync(_verify, password_hash, password)


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's."""
    return _hasher.check_needs_rehash(password_hash)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher.hash("no such user: equal timing")


async def spend_verify_time(password: str) -> None:
    """Do the work of a verification for an unknown email, so response time does not
    tell an attacker which emails have accounts."""
    await verify_password(_dummy_hash(), password)
