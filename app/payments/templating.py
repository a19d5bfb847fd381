"""Jinja2 templates for the server-rendered pages."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from starlette.requests import Request
from starlette.templating import Jinja2Templates

from payments.config import Settings

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"
# Stripe amounts are in the smallest unit; these currencies have no minor unit.
ZERO_DECIMAL_CURRENCIES = frozenset({"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg",
                                     "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"})


def format_money(unit_amount: int, currency: str) -> str:
    currency = currency.lower()
    if currency in ZERO_DECIMAL_CURRENCIES:
        return f"{unit_amount:,} {currency.upper()}"
    return f"{unit_amount / 100:,.2f} {currency.upper()}"


@functools.lru_cache(maxsize=None)
def static_url(name: str) -> str:
    """/static/<name>?v=<digest of its content>: the load balancer and browsers cache
    /static/ for days (roles/nginx_lb), so a release that changes a file must change its URL."""
    digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    return f"/static/{name}?v={digest}"


def create_templates(settings: Settings) -> Jinja2Templates:
    def page_globals(request: Request) -> dict:
        return {
            "app_version": settings.app_version,
            "stripe_js_url": settings.stripe_js_url,
            "stripe_publishable_key": settings.stripe_publishable_key,
        }

    templates = Jinja2Templates(directory=TEMPLATES_DIR, context_processors=[page_globals])
    templates.env.filters["money"] = format_money
    templates.env.globals["static_url"] = static_url
    return templates
