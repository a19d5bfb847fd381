"""Stripe's idempotency and a faulty network, for the retry tests of the order endpoints.

A stand-in, and only for what nothing real here does: localstripe and the Stripe stub in
front of it create a new object for every POST, whatever its `Idempotency-Key`, while the
real Stripe answers a repeated key with the first answer (and refuses the key with other
parameters); and no real network between the app and the stub loses answers on demand.
So the app's Stripe client gets `StripeNetwork` as its HTTP client. It wraps the library's
own httpx client one attempt below the library's retries and adds:

- Stripe's idempotency: a POST that repeats an `Idempotency-Key` gets the stored answer
  (with `Idempotent-Replayed: true`) without reaching the stub; with other parameters it
  gets Stripe's 400 `idempotency_error`. Answers of 500 and above are not stored (as at
  Stripe);
- `lose(path, times)`: the next `times` requests to `path` reach the stub, which does the
  work, and then their answer is lost (an httpx ReadTimeout, what a timeout looks like to
  the library, which retries with the same key);
- `hold(path)`: the next request to `path` waits until the returned event is set (the
  stub has not answered yet), and `reached(path)` is set when it arrived.

Everything else goes to the stub unchanged. The objects are real localstripe objects:
tests count them there. The library's backoff sleeps are skipped.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qsl, urlsplit

import httpx
import stripe

from payments.stripe_gateway import create_stripe_client


class StripeNetwork(stripe.HTTPXClient):
    def __init__(self, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.answers: dict[str, tuple[list, tuple]] = {}  # idempotency key -> (params, answer)
        self.forwarded: list[tuple[str, str]] = []  # (method, path) that reached the stub
        self._lose: dict[str, int] = {}
        self._hold: dict[str, asyncio.Event] = {}
        self._reached: dict[str, asyncio.Event] = {}

    def lose(self, path: str, times: int = 1) -> None:
        self._lose[path] = self._lose.get(path, 0) + times

    def hold(self, path: str) -> asyncio.Event:
        self._hold[path] = release = asyncio.Event()
        self._reached[path] = asyncio.Event()
        return release

    def reached(self, path: str) -> asyncio.Event:
        return self._reached[path]

    async def sleep_async(self, secs: float) -> None:
        await asyncio.sleep(0)

    async def request_async(self, method, url, headers, post_data=None):
        answer = await self._answer(method.lower(), urlsplit(url).path, url, headers, post_data)
        path = urlsplit(url).path
        if self._lose.get(path):
            self._lose[path] -= 1
            self._handle_request_error(httpx.ReadTimeout(f"the answer of {method.upper()} {path} was lost"))
        return answer

    async def _answer(self, method, path, url, headers, post_data):
        key = next((value for name, value in headers.items() if name.lower() == "idempotency-key"), None)
        params = sorted(parse_qsl(post_data or "", keep_blank_values=True))
        if method == "post" and key in self.answers:
            stored_params, (content, status, response_headers) = self.answers[key]
            if stored_params != params:
                return _idempotency_error(key)
            return content, status, httpx.Headers({**response_headers, "Idempotent-Replayed": "true"})
        release = self._hold.pop(path, None)
        if release is not None:
            self._reached[path].set()
            await release.wait()
        self.forwarded.append((method, path))
        answer = await super().request_async(method, url, headers, post_data)
        if method == "post" and key is not None and answer[1] < 500:
            self.answers[key] = (params, answer)
        return answer


def _idempotency_error(key: str):
    body = {"error": {"type": "idempotency_error",
                      "message": f"Keys for idempotent requests can only be used with the same parameters"
                                 f" they were first used with. Try using a key other than '{key}'."}}
    return json.dumps(body).encode(), 400, httpx.Headers({"Content-Type": "application/json"})


async def install(app) -> StripeNetwork:
    """Give `app` (lifespan running) a Stripe client over a new StripeNetwork."""
    network = StripeNetwork(app.state.settings.stripe_timeout_seconds)
    app.state.stripe = create_stripe_client(app.state.settings, network)
    return network
