"""The users table and the sign-up / sign-in rules, independent of HTTP."""

from __future__ import annotations

import re

import psycopg.errors

from payments.accounts import passwords
from payments.errors import ApiError

USER_COLUMNS = "id, email, is_admin, stripe_customer_id, created_at"
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD_LENGTH = 8
# argon2 accepts anything, but hashing megabytes per attempt is a cheap DoS.
MAX_PASSWORD_LENGTH = 1024


def normalize_email(raw) -> str:
    if not isinstance(raw, str):
        raise ApiError(422, "invalid_email", "Email must be a string.")
    email = raw.strip().lower()
    if len(email) > 254 or not EMAIL_PATTERN.match(email):
        raise ApiError(422, "invalid_email", "Enter a valid email address.")
    return email


def check_new_password(password) -> str:
    if not isinstance(password, str):
        raise ApiError(422, "invalid_password", "Password must be a string.")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ApiError(422, "weak_password", f"Password must be at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ApiError(422, "invalid_password", f"Password must be at most {MAX_PASSWORD_LENGTH} characters.")
    return password


def public_user(user: dict) -> dict:
    """What the API shows about a user (never the hash)."""
    return {
        "id": user["id"],
        "email": user["email"],
        "is_admin": user["is_admin"],
        "created_at": user["created_at"].isoformat(),
    }


async def get_user(conn, user_id: int) -> dict | None:
    cursor = await conn.execute(f"SELECT {USER_COLUMNS} FROM users WHERE id = %s", (user_id,))
    return await cursor.fetchone()


async def create_user(conn, email: str, password: str) -> dict:
    """A new user; 409 when the email is taken."""
    password_hash = await passwords.hash_password(password)
    try:
        async with conn.transaction():  # a savepoint, so the caller's transaction survives
            cursor = await conn.execute(
                f"INSERT INTO users (email, password_hash) VALUES (%s, %s) RETURNING {USER_COLUMNS}",
                (email, password_hash),
            )
            return await cursor.fetchone()
    except psycopg.errors.UniqueViolation:
        raise ApiError(409, "email_taken", "An account with this email already exists.") from None


async def authenticate(conn, email: str, password: str) -> dict | None:
    """The user if the password matches, else None (same timing for unknown emails)."""
    cursor = await conn.execute(
        f"SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = %s", (email,))
    row = await cursor.fetchone()
    if row is None:
        await passwords.spend_verify_time(password)
        return None
    password_hash = row.pop("password_hash")
    if not await passwords.verify_password(password_hash, password):
        return None
    if passwords.needs_rehash(password_hash):
        await conn.execute("UPDATE users SET password_hash = %s, updated_at = now() WHERE id = %s",
                           (await passwords.hash_password(password), row["id"]))
    return row
