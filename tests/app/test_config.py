"""Settings.from_env: every required variable is checked at start-up and named on failure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from payments.config import ConfigError, Settings

REPO = Path(__file__).resolve().parents[2]
VALID = {
    "DATABASE_URL": "postgresql://app:secret@db.internal:5432/payments",
    "REDIS_URL": "redis://cache.internal:6379/0",
    "STRIPE_SECRET_KEY": "sk_test_123",
    "STRIPE_PUBLISHABLE_KEY": "pk_test_123",
    "STRIPE_WEBHOOK_SECRET": "whsec_123",
    "SESSION_SECRET": "x" * 40,
    "PUBLIC_BASE_URL": "https://shop.example.com",  # required since APP_ENV defaults to production
}
REQUIRED = list(VALID)


def test_valid_environment_gives_settings_with_defaults():
    settings = Settings.from_env(VALID)
    assert settings.database_url == VALID["DATABASE_URL"]
    assert settings.app_env == "production"
    assert settings.port == 8000
    assert settings.stripe_js_url == "https://js.stripe.com/v3/"
    assert settings.stripe_api_base is None
    assert settings.graceful_timeout_seconds == 30
    assert (settings.order_rate_limit_per_user, settings.order_rate_limit_window_seconds) == (10, 60)
    assert settings.stripe_health_max_age_seconds == 30
    assert settings.stripe_max_network_retries == 2


def test_order_limit_health_age_and_stripe_retries_are_read():
    settings = Settings.from_env({**VALID, "ORDER_RATE_LIMIT_PER_USER": "100000", "ORDER_RATE_LIMIT_WINDOW_SECONDS": "30",
                                  "STRIPE_HEALTH_MAX_AGE_SECONDS": "5", "STRIPE_MAX_NETWORK_RETRIES": "0",
                                  "STRIPE_TIMEOUT_SECONDS": "10"})
    assert (settings.order_rate_limit_per_user, settings.order_rate_limit_window_seconds) == (100_000, 30)
    assert settings.stripe_health_max_age_seconds == 5
    # One attempt of 10 s per call, two calls, and the PostgreSQL margin.
    assert settings.idempotency_lock_seconds == 2 * 10 + 30
    # Empty, as an inventory that sets nothing writes it, means the default.
    assert Settings.from_env({**VALID, "ORDER_RATE_LIMIT_PER_USER": ""}).order_rate_limit_per_user == 10



@pytest.mark.parametrize("name", REQUIRED)
def test_missing_required_variable_is_named(name):
    env = {k: v for k, v in VALID.items() if k != name}
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)


@pytest.mark.parametrize("name", REQUIRED)
def test_blank_required_variable_counts_as_missing(name):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({**VALID, name: "   "})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "mysql://db/payments"),
        ("DATABASE_URL", "not a url"),
        ("REDIS_URL", "http://cache:6379"),
        ("STRIPE_SECRET_KEY", "pk_test_wrong_kind"),
        ("STRIPE_PUBLISHABLE_KEY", "sk_test_wrong_kind"),
        ("STRIPE_WEBHOOK_SECRET", "secret"),
        ("SESSION_SECRET", "too-short"),
        ("STRIPE_API_BASE", "localhost:8420"),
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("WEB_CONCURRENCY", "0"),
        ("APP_ENV", "staging-ish"),
        ("DB_POOL_MAX_SIZE", "-1"),
        ("STRIPE_TIMEOUT_SECONDS", "nan"),
        ("GRACEFUL_TIMEOUT", "soon"),
        ("GRACEFUL_TIMEOUT", "-5"),
        ("ORDER_RATE_LIMIT_PER_USER", "0"),
        ("ORDER_RATE_LIMIT_WINDOW_SECONDS", "a minute"),
        ("STRIPE_HEALTH_MAX_AGE_SECONDS", "0"),
        ("STRIPE_MAX_NETWORK_RETRIES", "9"),
        ("PUBLIC_BASE_URL", "shop.example.com"),
        ("PUBLIC_BASE_URL", "ftp://shop.example.com"),
        ("PUBLIC_BASE_URL", "https://shop.example.com/?from=config"),
        ("PUBLIC_BASE_URL", "https://shop.example.com/#top"),
        ("PUBLIC_BASE_URL", "https://admin:secret@shop.example.com"),
        ("PUBLIC_BASE_URL", "https://shop.example.com:https"),
    ],
)
def test_malformed_variable_is_named(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({**VALID, name: value})


def test_public_base_url_missing_in_production_is_a_clear_error():
    env = {k: v for k, v in VALID.items() if k != "PUBLIC_BASE_URL"}
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env({**env, "APP_ENV": "production"})
    message = str(excinfo.value)
    assert message.startswith("PUBLIC_BASE_URL is required") and "APP_ENV=dev" in message


def test_public_base_url_is_optional_in_dev():
    env = {k: v for k, v in VALID.items() if k != "PUBLIC_BASE_URL"}
    assert Settings.from_env({**env, "APP_ENV": "dev"}).public_base_url is None


@pytest.mark.parametrize(("value", "expected"), [
    ("https://shop.example.com", "https://shop.example.com"),
    ("https://shop.example.com/", "https://shop.example.com"),
    ("https://127.0.0.1:8443", "https://127.0.0.1:8443"),
    ("http://127.0.0.1:8000/shop/", "http://127.0.0.1:8000/shop"),
])
def test_public_base_url_is_kept_without_a_trailing_slash(value, expected):
    assert Settings.from_env({**VALID, "PUBLIC_BASE_URL": value}).public_base_url == expected


def test_error_message_does_not_echo_secrets():
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env({**VALID, "DATABASE_URL": "mysql://app:hunter2@db/payments"})
    assert "hunter2" not in str(excinfo.value)


def test_pool_min_larger_than_max_is_refused():
    with pytest.raises(ConfigError, match="DB_POOL_MIN_SIZE"):
        Settings.from_env({**VALID, "DB_POOL_MIN_SIZE": "20", "DB_POOL_MAX_SIZE": "5"})


def test_server_settings_are_read():
    settings = Settings.from_env({**VALID, "PORT": "9000", "HOST": "127.0.0.1", "WEB_CONCURRENCY": "4",
                                  "APP_ENV": "dev", "APP_VERSION": "1.2.3",
                                  "STRIPE_API_BASE": "http://127.0.0.1:8420", "GRACEFUL_TIMEOUT": "45"})
    assert (settings.port, settings.host, settings.workers) == (9000, "127.0.0.1", 4)
    assert settings.graceful_timeout_seconds == 45
    assert settings.is_dev and settings.app_version == "1.2.3"
    assert settings.stripe_api_base == "http://127.0.0.1:8420"


def test_serve_refuses_to_start_and_names_the_missing_variable():
    env = {k: v for k, v in VALID.items() if k != "STRIPE_WEBHOOK_SECRET"}
    env["PATH"] = "/usr/bin:/bin"
    result = subprocess.run([sys.executable, "-m", "payments", "serve"], cwd=REPO / "app", env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "STRIPE_WEBHOOK_SECRET" in result.stderr


def test_serve_in_production_refuses_to_start_without_a_public_base_url():
    env = {k: v for k, v in VALID.items() if k != "PUBLIC_BASE_URL"}
    env["PATH"] = "/usr/bin:/bin"
    result = subprocess.run([sys.executable, "-m", "payments", "serve"], cwd=REPO / "app", env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "PUBLIC_BASE_URL is required" in result.stderr
