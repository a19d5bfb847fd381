"""Fixtures for the app tests, on top of tests/conftest.py.

`app` is overridden here so tests can reach `app.state` (pool, Redis, Stripe client):
asgi-lifespan's `manager.app` is a wrapper function without `.state`. This yields the
Starlette object itself, with the lifespan running; `client` keeps working unchanged.
"""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from asgi_lifespan import LifespanManager

from payments.app import create_app


@pytest.fixture
async def app(settings):
    application = create_app(settings)
    async with LifespanManager(application, startup_timeout=30, shutdown_timeout=30):
        yield application


@pytest.fixture
async def client_for():
    """`await client_for(settings)`: a client for another app built from changed settings."""
    started = []

    async def make(settings, **changes):
        application = create_app(dataclasses.replace(settings, **changes))
        manager = LifespanManager(application, startup_timeout=30, shutdown_timeout=30)
        await manager.__aenter__()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://testserver")
        started.append((manager, client))
        return client

    yield make
    for manager, client in reversed(started):
        await client.aclose()
        await manager.__aexit__(None, None, None)
