"""Every setting the app reads, taken from environment variables once at start-up.

`Settings.from_env(os.environ)` validates everything up front: a missing or malformed
required variable raises `ConfigError` naming it, so a bad deploy fails at start-up
instead of on the first request that needs the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_STRIPE_JS_URL = "https://js.stripe.com/v3/"
APP_ENVS = ("dev", "production")
# stripe-python's longest sleep between two attempts of one call (HTTPClient.MAX_DELAY).
STRIPE_RETRY_DELAY_MAX_SECONDS = 5.0
# Stripe calls an order request makes at most: the customer (first order only), the object.
ORDER_STRIPE_CALLS = 2
# What an order request does around its Stripe calls (PostgreSQL: the order, the key, the
# Stripe id; each statement waits at most the pool's 10 s for a connection), on top of them.
ORDER_LOCAL_WORK_SECONDS = 30.0


class ConfigError(ValueError):
    """A required setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    stripe_secret_key: str
    stripe_publishable_key: str
    stripe_webhook_secret: str
    session_secret: str
    app_version: str = "dev"
    app_env: str = "production"
    stripe_api_base: str | None = None
    stripe_js_url: str = DEFAULT_STRIPE_JS_URL
    # Seconds the app waits for Stripe on a request (the library default is 80 s).
    stripe_timeout_seconds: float = 20.0
    # Attempts after the first the Stripe library makes on a network error, a 409 or a 5xx
    # (with the same idempotency key, so safe for POSTs).
    stripe_max_network_retries: int = 2
    # /api/health asks Stripe at most once per this many seconds per process.
    stripe_health_max_age_seconds: float = 30.0
    host: str = "0.0.0.0"
    port: int = 8000
    workers: int = 2
    # On SIGTERM hypercorn stops accepting connections and gives in-flight requests
    # this long to finish; the container's stop timeout must be longer.
    graceful_timeout_seconds: float = 30.0
    db_pool_min_size: int = 1
    db_pool_max_size: int = 10
    redis_max_connections: int = 50
    log_level: str = "info"
    # Sliding: every authenticated request pushes expiry forward by this much.
    session_ttl_seconds: int = 1800
    catalog_cache_ttl_seconds: int = 300
    # Sign-in and sign-up attempts allowed per window; nginx limits first, this is the
    # second line.
    auth_rate_limit_per_ip: int = 10
    auth_rate_limit_per_email: int = 5
    auth_rate_limit_window_seconds: int = 60
    # Orders one user may start (POST /api/payment-intents and /api/checkout/sessions) per
    # window, across every app host: each writes an order and makes one or two Stripe calls.
    # No customer starts ten orders a minute; a script with one account is stopped there.
    order_rate_limit_per_user: int = 10
    order_rate_limit_window_seconds: int = 60
    audit_retention_days: int = 90
    # How many proxies in front of the app append to X-Forwarded-For (nginx: 1).
    # 0 means the socket peer is the client.
    trusted_proxy_hops: int = 0
    # Where customers reach the site (scheme, host, port; no trailing slash): every absolute
    # URL the app hands out (Stripe's success, cancel and portal return URLs) starts with it,
    # never with what the request's Host header says. Required in production; None only in
    # dev, where the request's own base URL is used (payments.http.public_url).
    public_base_url: str | None = None

    @property
    def is_dev(self) -> bool:
        return self.app_env == "dev"

    @property
    def stripe_call_max_seconds(self) -> float:
        """The longest one Stripe call may take: every attempt its whole timeout, and the
        library's longest backoff between attempts."""
        retries = self.stripe_max_network_retries
        return (retries + 1) * self.stripe_timeout_seconds + retries * STRIPE_RETRY_DELAY_MAX_SECONDS

    @property
    def order_stripe_deadline_seconds(self) -> float:
        """An order request's Stripe calls together are cut off after this long (placement.py),
        whatever httpx's per-phase timeouts would allow: the call then counts as unanswered."""
        return ORDER_STRIPE_CALLS * self.stripe_call_max_seconds

    @property
    def idempotency_lock_seconds(self) -> float:
        """How long an Idempotency-Key stays locked by the request using it before a retry may
        take it over (that request died with its worker): longer than a request can run.
        Defaults: 2 x (3 x 20 s + 2 x 5 s) + 30 s = 170 s."""
        return self.order_stripe_deadline_seconds + ORDER_LOCAL_WORK_SECONDS

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "Settings":
        env = _Reader(environ)
        app_env = env.choice("APP_ENV", APP_ENVS, default="production")
        return cls(
            database_url=env.url("DATABASE_URL", schemes=("postgres", "postgresql")),
            redis_url=env.url("REDIS_URL", schemes=("redis", "rediss", "unix")),
            stripe_secret_key=env.prefixed("STRIPE_SECRET_KEY", ("sk_", "rk_")),
            stripe_publishable_key=env.prefixed("STRIPE_PUBLISHABLE_KEY", ("pk_",)),
            stripe_webhook_secret=env.prefixed("STRIPE_WEBHOOK_SECRET", ("whsec_",)),
            session_secret=env.secret("SESSION_SECRET", min_length=32),
            app_version=env.text("APP_VERSION", default="dev"),
            app_env=app_env,
            stripe_api_base=env.url("STRIPE_API_BASE", schemes=("http", "https"), required=False),
            stripe_js_url=env.url("STRIPE_JS_URL", schemes=("http", "https"), default=DEFAULT_STRIPE_JS_URL),
            stripe_timeout_seconds=env.number("STRIPE_TIMEOUT_SECONDS", default=20.0, minimum=0.1),
            stripe_max_network_retries=env.integer("STRIPE_MAX_NETWORK_RETRIES", default=2, minimum=0, maximum=5),
            stripe_health_max_age_seconds=env.number("STRIPE_HEALTH_MAX_AGE_SECONDS", default=30.0, minimum=1.0),
            host=env.text("HOST", default="0.0.0.0"),
            port=env.integer("PORT", default=8000, minimum=1, maximum=65535),
            workers=env.integer("WEB_CONCURRENCY", default=2, minimum=1, maximum=64),
            graceful_timeout_seconds=env.number("GRACEFUL_TIMEOUT", default=30.0, minimum=0.0),
            db_pool_min_size=env.integer("DB_POOL_MIN_SIZE", default=1, minimum=0),
            db_pool_max_size=env.integer("DB_POOL_MAX_SIZE", default=10, minimum=1),
            redis_max_connections=env.integer("REDIS_MAX_CONNECTIONS", default=50, minimum=1),
            log_level=env.choice("LOG_LEVEL", ("debug", "info", "warning", "error"), default="info"),
            session_ttl_seconds=env.integer("SESSION_TTL_SECONDS", default=1800, minimum=60),
            catalog_cache_ttl_seconds=env.integer("CATALOG_CACHE_TTL_SECONDS", default=300, minimum=1),
            auth_rate_limit_per_ip=env.integer("AUTH_RATE_LIMIT_PER_IP", default=10, minimum=1),
            auth_rate_limit_per_email=env.integer("AUTH_RATE_LIMIT_PER_EMAIL", default=5, minimum=1),
            auth_rate_limit_window_seconds=env.integer("AUTH_RATE_LIMIT_WINDOW_SECONDS", default=60, minimum=1),
            order_rate_limit_per_user=env.integer("ORDER_RATE_LIMIT_PER_USER", default=10, minimum=1),
            order_rate_limit_window_seconds=env.integer("ORDER_RATE_LIMIT_WINDOW_SECONDS", default=60, minimum=1),
            audit_retention_days=env.integer("AUDIT_RETENTION_DAYS", default=90, minimum=1),
            trusted_proxy_hops=env.integer("TRUSTED_PROXY_HOPS", default=0, minimum=0, maximum=5),
            public_base_url=env.base_url("PUBLIC_BASE_URL", required=app_env != "dev"),
        ).checked()

    def checked(self) -> "Settings":
        """Cross-field rules that no single variable can check."""
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ConfigError("DB_POOL_MIN_SIZE must not be larger than DB_POOL_MAX_SIZE")
        return self


@dataclass(frozen=True)
class MailSettings:
    """What `python -m payments mail-worker` needs: the database and an SMTP relay."""

    database_url: str
    smtp_host: str
    mail_from: str
    smtp_port: int = 587
    # STARTTLS before authenticating (any relay on the internet); off only for a local sink.
    smtp_starttls: bool = True
    # A CA bundle to verify the relay's certificate with; None: the system's CAs.
    smtp_ca_file: str | None = None
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_timeout_seconds: float = 30.0
    shop_name: str = "the shop"
    # Seconds between looks at the outbox when nothing is due.
    poll_seconds: float = 2.0
    # A failed attempt waits base x 2^(attempts - 1), at most max, before the next.
    retry_base_seconds: float = 10.0
    retry_max_seconds: float = 3600.0
    log_level: str = "info"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "MailSettings":
        env = _Reader(environ)
        user, password = env._raw("SMTP_USER"), env._raw("SMTP_PASSWORD")
        if (user is None) != (password is None):
            raise ConfigError("SMTP_USER and SMTP_PASSWORD are set together or not at all")
        mail_from = env.text("MAIL_FROM")
        if "@" not in mail_from or re.search(r"[\r\n]", mail_from):
            raise ConfigError("MAIL_FROM must be an address, e.g. Shop <shop@example.com>")
        return cls(
            database_url=env.url("DATABASE_URL", schemes=("postgresql", "postgres")),
            smtp_host=env.text("SMTP_HOST"),
            smtp_port=env.integer("SMTP_PORT", default=587, minimum=1, maximum=65535),
            smtp_starttls=env.choice("SMTP_STARTTLS", ("true", "false"), default="true") == "true",
            smtp_ca_file=env._raw("SMTP_CA_FILE"),
            smtp_user=user,
            smtp_password=password,
            smtp_timeout_seconds=env.number("SMTP_TIMEOUT_SECONDS", default=30.0, minimum=0.1),
            mail_from=mail_from,
            shop_name=env.text("SHOP_NAME", default="the shop"),
            poll_seconds=env.number("MAIL_POLL_SECONDS", default=2.0, minimum=0.05),
            retry_base_seconds=env.number("MAIL_RETRY_BASE_SECONDS", default=10.0, minimum=0.05),
            retry_max_seconds=env.number("MAIL_RETRY_MAX_SECONDS", default=3600.0, minimum=0.05),
            log_level=env.choice("LOG_LEVEL", ("debug", "info", "warning", "error"), default="info"),
        )


def database_url_from_env(environ: Mapping[str, str]) -> str:
    """DATABASE_URL alone, for commands (migrate, purge-audit) that need nothing else."""
    return _Reader(environ).url("DATABASE_URL", schemes=("postgres", "postgresql"))


def audit_retention_days_from_env(environ: Mapping[str, str]) -> int:
    """AUDIT_RETENTION_DAYS alone, for `purge-audit`."""
    return _Reader(environ).integer("AUDIT_RETENTION_DAYS", default=90, minimum=1)


class _Reader:
    """Reads one variable at a time and raises ConfigError naming it."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def _raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def _missing(self, name: str) -> ConfigError:
        return ConfigError(f"{name} is required but not set")

    def text(self, name: str, *, default: str | None = None) -> str:
        value = self._raw(name)
        if value is None:
            if default is None:
                raise self._missing(name)
            return default
        return value

    def secret(self, name: str, *, min_length: int) -> str:
        value = self.text(name)
        if len(value) < min_length:
            # Never echo a secret's value, only what is wrong with it.
            raise ConfigError(f"{name} must be at least {min_length} characters long")
        return value

    def prefixed(self, name: str, prefixes: tuple[str, ...]) -> str:
        value = self.text(name)
        if not value.startswith(prefixes) or re.search(r"\s", value):
            raise ConfigError(f"{name} must start with {' or '.join(prefixes)}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], *, default: str) -> str:
        value = self.text(name, default=default).lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        return value

    def url(self, name: str, *, schemes: tuple[str, ...], required: bool = True, default: str | None = None):
        value = self._raw(name)
        if value is None:
            if default is not None:
                return default
            if required:
                raise self._missing(name)
            return None
        parts = urlsplit(value)
        has_location = bool(parts.netloc) or (parts.scheme == "unix" and bool(parts.path))
        if parts.scheme not in schemes or not has_location:
            # The URL may carry a password: name the variable and the expected shape only.
            raise ConfigError(f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return value

    def base_url(self, name: str, *, required: bool) -> str | None:
        """An http(s) origin, optionally with a path prefix; no query, fragment or user info.
        Returned without a trailing slash, so `base + "/path"` is always well-formed."""
        value = self.url(name, schemes=("https", "http"), required=False)
        if value is None:
            if required:
                raise ConfigError(f"{name} is required but not set: the site's public URL, "
                                  f"e.g. https://shop.example.com (optional only with APP_ENV=dev)")
            return None
        parts = urlsplit(value)
        if parts.query or parts.fragment or "@" in parts.netloc or value.endswith(("?", "#")):
            raise ConfigError(f"{name} must be a base URL like https://shop.example.com "
                              f"(no query, fragment or user info)")
        try:
            _ = parts.port  # raises on a malformed port
        except ValueError:
            raise ConfigError(f"{name} has a malformed port") from None
        return value.rstrip("/")

    def integer(self, name: str, *, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, not {raw!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise ConfigError(f"{name} must be between {minimum} and {maximum if maximum is not None else 'any'}, not {value}")
        return value

    def number(self, name: str, *, default: float, minimum: float) -> float:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, not {raw!r}") from None
        if not value >= minimum or value == float("inf"):
            raise ConfigError(f"{name} must be a finite number of at least {minimum}, not {raw!r}")
        return value
