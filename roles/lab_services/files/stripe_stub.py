"""A Stripe-shaped stand-in for the endpoints localstripe lacks.

This is a stand-in: the real Stripe API cannot be reached from here, and localstripe (the
stateful fake Stripe server the tests and `make dev` use) has no prices, no checkout
sessions and no billing portal. This small aiohttp server serves exactly those, plus
what localstripe's fake Stripe.js needs for an embedded card form:

- `/v1/prices`: create, retrieve, update, list (pagination, `product`, `active`, `type`,
  `currency`, `lookup_keys[]` filters; `expand[]=product` / `data.product`);
- `/v1/checkout/sessions`: create (mode `payment` or `subscription`), retrieve, list,
  `/{id}/line_items`, `/{id}/expire`; each session has a `url`;
- `/v1/billing_portal/sessions`: create;
- `POST /v1/payment_intents/{id}/confirm` with a card (`payment_method_data[card]` or
  `payment_method`), authorised by a secret key or, as from Stripe.js, by the publishable
  key and the client secret (localstripe's own confirm takes no payment method);
- `/js.stripe.com/v3/`: localstripe's fake Stripe.js, whose `confirmCardPayment` then
  sends the card element's number to that confirm (and still asks for 3-D Secure when
  localstripe wants it);
- the hosted pages: a Checkout Session's payment page and the billing portal
  (stripe_stub_hosted.py);
- webhooks as Stripe sends them: signed per attempt, retried, over verified TLS, for
  localstripe's events and the stub's own (checkout.session.completed, charge.refunded
  after a refund), to the endpoints registered with `POST /_config/webhooks/{id}` or
  listed in the `--webhooks` file (stripe_stub_webhooks.py);

and forwards every other request unchanged to localstripe (`--upstream`), so the app's
`STRIPE_API_BASE` points at this stub. Objects are shaped like Stripe's: `object`, ids
prefixed `price_`, `cs_test_`, `bps_`, `created` timestamps, list envelopes
`{"object": "list", "data": [...], "has_more": ..., "url": ...}` and error bodies
`{"error": {"type": "invalid_request_error", "message": ..., "param": ...}}`. Products
and customers referenced by these objects are checked against localstripe.

Run: `python stripe_stub.py --port 8421 --upstream http://127.0.0.1:8420` (the app tests and
`make dev` start it from tests/support/services.py; the lab runs it as a service on its
lab_services host, roles/lab_services). Clients' helpers are in tests/support/stripe_tools.py.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import time
from pathlib import Path
from urllib.parse import parse_qsl

import stripe_stub_hosted as hosted
from stripe_stub_webhooks import Webhooks, new_event

STUB_KINDS = ("prices", "checkout_sessions", "portal_sessions")
STUB_SECRET_KEY = "sk_test_stripe_stub"  # any sk_ key is valid for localstripe
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailers", "transfer-encoding", "upgrade", "host", "content-length",
}


class StripeError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, upstream: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.upstream = upstream  # localstripe's error object, passed on as it is

    def body(self) -> dict:
        if self.upstream is not None:
            return {"error": self.upstream}
        error = {"type": "invalid_request_error", "message": self.message}
        if self.param:
            error["param"] = self.param
        if self.code:
            error["code"] = self.code
        return {"error": error}


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def parse_params(pairs: list[tuple[str, str]]) -> dict:
    """Stripe's form encoding (`a[b][0][c]=v`, `a[]=v`) into nested dicts and lists."""
    root: dict = {}
    for key, value in pairs:
        head, bracket, rest = key.partition("[")
        parts = [head] + (re.findall(r"\[([^\]]*)\]", bracket + rest) if bracket else [])
        node = root
        for part, following in zip(parts, parts[1:] + [None]):
            if following is None:
                if isinstance(node, list):
                    node.append(value)
                else:
                    node[part] = value
            elif isinstance(node, list):
                break  # `a[][b]`: not used by Stripe's clients
            else:
                node = node.setdefault(part, [] if following == "" else {})
    return _listify(root)


def _listify(node):
    if isinstance(node, list):
        return [_listify(v) for v in node]
    if not isinstance(node, dict):
        return node
    if node and all(k.isdigit() for k in node):
        return [_listify(node[k]) for k in sorted(node, key=int)]
    return {k: _listify(v) for k, v in node.items()}


def as_bool(value, default=None):
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).lower() == "true"


def as_int(value, param: str, default=None):
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StripeError(400, f"Invalid integer: {value}", param=param) from None


class Store:
    """In-memory objects of the stub, optionally saved to a JSON file after each write."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self.objects: dict[str, dict[str, dict]] = {kind: {} for kind in STUB_KINDS}
        if path is not None and path.exists():
            loaded = json.loads(path.read_text())
            for kind in STUB_KINDS:
                self.objects[kind] = loaded.get(kind, {})

    def put(self, kind: str, obj: dict) -> dict:
        self.objects[kind][obj["id"]] = obj
        self.save()
        return obj

    def get(self, kind: str, object_id: str, label: str) -> dict:
        try:
            return self.objects[kind][object_id]
        except KeyError:
            raise StripeError(404, f"No such {label}: '{object_id}'", param="id",
                              code="resource_missing") from None

    def clear(self) -> None:
        for kind in STUB_KINDS:
            self.objects[kind].clear()
        self.save()

    def save(self) -> None:
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.objects))
            tmp.replace(self.path)


def paginate(items: list[dict], params: dict, url: str, *, newest_first: bool = True) -> dict:
    """A list envelope: newest first like Stripe; `limit`, `starting_after`, `ending_before`."""
    if newest_first:
        items = sorted(items, key=lambda o: (o["created"], o["_seq"]), reverse=True)
    limit = as_int(params.get("limit"), "limit", 10)
    if not 1 <= limit <= 100:
        raise StripeError(400, "Invalid limit: must be between 1 and 100", param="limit")
    ids = [o["id"] for o in items]
    if params.get("starting_after"):
        cursor = params["starting_after"]
        if cursor not in ids:
            raise StripeError(400, f"No such object: '{cursor}'", param="starting_after")
        rest = items[ids.index(cursor) + 1:]
        page, has_more = rest[:limit], len(rest) > limit
    elif params.get("ending_before"):
        cursor = params["ending_before"]
        if cursor not in ids:
            raise StripeError(400, f"No such object: '{cursor}'", param="ending_before")
        before = items[:ids.index(cursor)]
        page, has_more = before[-limit:], len(before) > limit
    else:
        page, has_more = items[:limit], len(items) > limit
    return {"object": "list", "data": page, "has_more": has_more, "url": url}


def public(obj):
    """Drop the stub's private keys (`_seq`) from an object or a list envelope."""
    if isinstance(obj, dict):
        return {k: public(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, list):
        return [public(v) for v in obj]
    return obj


class Stub:
    def __init__(self, upstream: str, store: Store, webhooks: Webhooks):
        self.upstream = upstream.rstrip("/")
        self.store = store
        self.webhooks = webhooks
        self.seq = max(
            (o.get("_seq", 0) for kind in STUB_KINDS for o in store.objects[kind].values()),
            default=0,
        )
        self.session = None  # aiohttp.ClientSession, created on startup

    def _stamp(self, obj: dict) -> dict:
        self.seq += 1
        obj["_seq"] = self.seq
        return obj

    public = staticmethod(public)

    # -- upstream (localstripe) --

    @staticmethod
    def _auth(request) -> dict:
        """The caller's secret key, or the stub's own for calls made on a browser's behalf."""
        return {"Authorization": request.headers.get("Authorization", f"Bearer {STUB_SECRET_KEY}")}

    async def upstream_get(self, request, path: str) -> dict | None:
        headers = self._auth(request)
        async with self.session.get(self.upstream + path, headers=headers) as response:
            if response.status == 404:
                return None
            body = await response.json(content_type=None)
            if response.status >= 400:
                raise StripeError(response.status, body.get("error", {}).get("message", ""))
            return body

    async def upstream_post(self, request, path: str, data: dict) -> dict:
        headers = self._auth(request)
        async with self.session.post(self.upstream + path, data=flatten(data),
                                     headers=headers) as response:
            body = await response.json(content_type=None)
            if response.status >= 400:
                error = body.get("error", {})
                raise StripeError(response.status, error.get("message", ""), upstream=error)
            return body

    async def require(self, request, path: str, label: str, object_id, param: str) -> dict:
        if not object_id:
            raise StripeError(400, f"Missing required param: {param}.", param=param,
                              code="parameter_missing")
        found = await self.upstream_get(request, f"{path}/{object_id}")
        if found is None:
            raise StripeError(400, f"No such {label}: '{object_id}'", param=param,
                              code="resource_missing")
        return found

    async def expand(self, request, obj: dict, expand: list[str], prefix: str = "") -> dict:
        obj = dict(obj)
        if f"{prefix}product" in expand and isinstance(obj.get("product"), str):
            obj["product"] = await self.upstream_get(request, f"/v1/products/{obj['product']}")
        return obj

    # -- prices --

    async def create_price(self, request, p: dict) -> dict:
        product = p.get("product")
        if p.get("product_data"):
            created = await self.upstream_post(request, "/v1/products", p["product_data"])
            product = created["id"]
        else:
            await self.require(request, "/v1/products", "product", product, "product")
        currency = (p.get("currency") or "").lower()
        if not currency:
            raise StripeError(400, "Missing required param: currency.", param="currency",
                              code="parameter_missing")
        amount = as_int(p.get("unit_amount"), "unit_amount")
        if amount is None and p.get("unit_amount_decimal") is None:
            raise StripeError(400, "Missing required param: unit_amount.", param="unit_amount",
                              code="parameter_missing")
        if amount is not None and amount < 0:
            raise StripeError(400, "Invalid unit_amount: must be >= 0", param="unit_amount")
        recurring = None
        if p.get("recurring"):
            interval = p["recurring"].get("interval")
            if interval not in ("day", "week", "month", "year"):
                raise StripeError(400, f"Invalid recurring[interval]: {interval}",
                                  param="recurring[interval]")
            recurring = {
                "aggregate_usage": None,
                "interval": interval,
                "interval_count": as_int(p["recurring"].get("interval_count"),
                                         "recurring[interval_count]", 1),
                "meter": None,
                "trial_period_days": None,
                "usage_type": p["recurring"].get("usage_type", "licensed"),
            }
        lookup_key = p.get("lookup_key")
        if lookup_key:
            for other in self.store.objects["prices"].values():
                if other.get("lookup_key") == lookup_key:
                    if not as_bool(p.get("transfer_lookup_key"), False):
                        raise StripeError(
                            400, f"A price (`{other['id']}`) already uses that lookup key.",
                            param="lookup_key")
                    other["lookup_key"] = None
        price = self._stamp({
            "id": new_id("price_"),
            "object": "price",
            "active": as_bool(p.get("active"), True),
            "billing_scheme": "per_unit",
            "created": int(time.time()),
            "currency": currency,
            "custom_unit_amount": None,
            "livemode": False,
            "lookup_key": lookup_key,
            "metadata": p.get("metadata") or {},
            "nickname": p.get("nickname"),
            "product": product,
            "recurring": recurring,
            "tax_behavior": p.get("tax_behavior", "unspecified"),
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "recurring" if recurring else "one_time",
            "unit_amount": amount,
            "unit_amount_decimal": str(p.get("unit_amount_decimal", amount)),
        })
        return self.store.put("prices", price)

    def update_price(self, price_id: str, p: dict) -> dict:
        price = self.store.get("prices", price_id, "price")
        for key in ("active",):
            if key in p:
                price[key] = as_bool(p[key])
        for key in ("nickname", "lookup_key", "tax_behavior"):
            if key in p:
                price[key] = p[key] or None
        if "metadata" in p:
            if p["metadata"] == "":
                price["metadata"] = {}
            else:
                for k, v in p["metadata"].items():
                    if v == "":
                        price["metadata"].pop(k, None)
                    else:
                        price["metadata"][k] = v
        return self.store.put("prices", price)

    def list_prices(self, p: dict) -> dict:
        items = list(self.store.objects["prices"].values())
        if p.get("product"):
            items = [o for o in items if o["product"] == p["product"]]
        if p.get("active") is not None:
            items = [o for o in items if o["active"] == as_bool(p["active"])]
        if p.get("type"):
            items = [o for o in items if o["type"] == p["type"]]
        if p.get("currency"):
            items = [o for o in items if o["currency"] == p["currency"].lower()]
        if p.get("lookup_keys"):
            keys = p["lookup_keys"] if isinstance(p["lookup_keys"], list) else [p["lookup_keys"]]
            items = [o for o in items if o.get("lookup_key") in keys]
        return paginate(items, p, "/v1/prices")

    # -- checkout sessions --

    async def create_checkout_session(self, request, p: dict, base_url: str) -> dict:
        mode = p.get("mode")
        if mode not in ("payment", "subscription", "setup"):
            raise StripeError(400, "Missing required param: mode.", param="mode",
                              code="parameter_missing")
        ui_mode = p.get("ui_mode", "hosted")
        if ui_mode == "hosted" and not p.get("success_url"):
            raise StripeError(400, "Missing required param: success_url.",
                              param="success_url", code="parameter_missing")
        if ui_mode == "embedded" and not p.get("return_url") and \
                p.get("redirect_on_completion") != "never":
            raise StripeError(400, "Missing required param: return_url.",
                              param="return_url", code="parameter_missing")
        customer = p.get("customer")
        if customer:
            await self.require(request, "/v1/customers", "customer", customer, "customer")
        line_items, currency, total = [], None, 0
        for index, item in enumerate(p.get("line_items") or []):
            param = f"line_items[{index}][price]"
            if not item.get("price"):
                raise StripeError(400, f"Missing required param: {param}.", param=param,
                                  code="parameter_missing")
            price = self.store.get("prices", item["price"], "price")
            if not price["active"]:
                raise StripeError(400, f"The price `{price['id']}` is not active.", param=param)
            if mode == "payment" and price["type"] == "recurring":
                raise StripeError(400, "You specified `payment` mode but passed a recurring "
                                  "price. Either switch to `subscription` mode or use only "
                                  "one-time prices.", param=param)
            if currency and price["currency"] != currency:
                raise StripeError(400, "All prices must use the same currency.", param=param)
            currency = price["currency"]
            quantity = as_int(item.get("quantity"), f"line_items[{index}][quantity]", 1)
            amount = (price["unit_amount"] or 0) * quantity
            total += amount
            line_items.append({
                "id": new_id("li_"), "object": "item", "amount_discount": 0,
                "amount_subtotal": amount, "amount_tax": 0, "amount_total": amount,
                "currency": price["currency"], "description": price.get("nickname") or "",
                "price": price, "quantity": quantity,
            })
        if mode == "subscription" and line_items and \
                not any(item["price"]["type"] == "recurring" for item in line_items):
            raise StripeError(400, "You must provide at least one recurring price in "
                              "`subscription` mode when using prices.", param="line_items")
        if mode != "setup" and not line_items:
            raise StripeError(400, "Missing required param: line_items.", param="line_items",
                              code="parameter_missing")
        now = int(time.time())
        session_id = new_id("cs_test_")
        session = self._stamp({
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": total if mode != "setup" else None,
            "amount_total": total if mode != "setup" else None,
            "cancel_url": p.get("cancel_url"),
            "client_reference_id": p.get("client_reference_id"),
            "client_secret": (f"{session_id}_secret_{secrets.token_hex(8)}"
                              if ui_mode == "embedded" else None),
            "created": now,
            "currency": currency,
            "customer": customer,
            "customer_email": p.get("customer_email"),
            "expires_at": now + 24 * 3600,
            "livemode": False,
            "metadata": p.get("metadata") or {},
            "mode": mode,
            "payment_intent": None,
            "payment_status": "no_payment_required" if mode == "setup" else "unpaid",
            "return_url": p.get("return_url"),
            "setup_intent": None,
            "status": "open",
            "subscription": None,
            "success_url": p.get("success_url"),
            "ui_mode": ui_mode,
            "url": f"{base_url}/checkout/pay/{session_id}" if ui_mode == "hosted" else None,
            "_line_items": line_items,
            # What Stripe copies onto the PaymentIntent or Subscription it creates.
            "_payment_intent_data": p.get("payment_intent_data") or {},
            "_subscription_data": p.get("subscription_data") or {},
        })
        return self.store.put("checkout_sessions", session)

    def list_checkout_sessions(self, p: dict) -> dict:
        items = list(self.store.objects["checkout_sessions"].values())
        for key in ("customer", "payment_intent", "subscription", "status"):
            if p.get(key):
                items = [o for o in items if o.get(key) == p[key]]
        return paginate(items, p, "/v1/checkout/sessions")

    def expire_checkout_session(self, session_id: str) -> dict:
        session = self.store.get("checkout_sessions", session_id, "checkout.session")
        if session["status"] != "open":
            raise StripeError(400, f"Only Checkout Sessions with a status in [\"open\"] can "
                              f"be expired. This session has status `{session['status']}`.")
        session["status"] = "expired"
        session["url"] = None
        return self.store.put("checkout_sessions", session)

    async def ensure_plan(self, request, price: dict) -> None:
        """A localstripe plan with the price's id and terms (localstripe has no prices)."""
        if await self.upstream_get(request, f"/v1/plans/{price['id']}") is not None:
            return
        recurring = price["recurring"] or {}
        await self.upstream_post(request, "/v1/plans", {
            "id": price["id"], "amount": price["unit_amount"], "currency": price["currency"],
            "interval": recurring.get("interval", "month"),
            "interval_count": recurring.get("interval_count", 1), "product": price["product"]})

    # -- refunds --

    async def create_refund(self, request, p: dict) -> dict:
        """localstripe refunds but sends no charge.refunded: the stub sends it."""
        refund = await self.upstream_post(request, "/v1/refunds", p)
        charge = await self.upstream_get(request, f"/v1/charges/{refund['charge']}")
        if charge is not None:
            self.webhooks.send(new_event("charge.refunded", charge))
        return refund

    # -- payment intents --

    async def confirm_payment_intent(self, request, intent_id: str, p: dict) -> dict:
        """Confirm with a card, as Stripe.js does (publishable key + client secret) or a
        server does (secret key); localstripe's own confirm takes no payment method."""
        intent = await self.upstream_get(request, f"/v1/payment_intents/{intent_id}")
        if intent is None:
            raise StripeError(404, f"No such payment_intent: '{intent_id}'",
                              code="resource_missing")
        if "Authorization" not in request.headers:
            if not str(p.get("key", "")).startswith("pk_") or \
                    p.get("client_secret") != intent["client_secret"]:
                raise StripeError(401, "Invalid API key or client secret provided.")
        payment_method = p.get("payment_method")
        card = (p.get("payment_method_data") or {}).get("card")
        if card:
            card = {k: str(card.get(k, "")) for k in ("number", "exp_month", "exp_year", "cvc")}
            card["number"] = card["number"].replace(" ", "")
            created = await self.upstream_post(request, "/v1/payment_methods",
                                               {"type": "card", "card": card})
            payment_method = created["id"]
        if payment_method:
            await self.upstream_post(request, f"/v1/payment_intents/{intent_id}",
                                     {"payment_method": payment_method})
        return await self.upstream_post(request, f"/v1/payment_intents/{intent_id}/confirm", {})

    # -- billing portal --

    async def create_portal_session(self, request, p: dict, base_url: str) -> dict:
        customer = p.get("customer")
        await self.require(request, "/v1/customers", "customer", customer, "customer")
        session_id = new_id("bps_")
        portal = self._stamp({
            "id": session_id,
            "object": "billing_portal.session",
            "configuration": "bpc_stub",
            "created": int(time.time()),
            "customer": customer,
            "flow": None,
            "livemode": False,
            "locale": p.get("locale"),
            "on_behalf_of": None,
            "return_url": p.get("return_url"),
            "url": f"{base_url}/billing_portal/{session_id}",
        })
        return self.store.put("portal_sessions", portal)


def flatten(data, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts and lists back into Stripe's form encoding."""
    pairs: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            pairs += flatten(value, f"{prefix}[{key}]" if prefix else str(key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            pairs += flatten(value, f"{prefix}[{index}]")
    elif isinstance(data, bool):
        pairs.append((prefix, "true" if data else "false"))
    elif data is not None:
        pairs.append((prefix, str(data)))
    return pairs


def make_app(upstream: str, state_file: str | None = None, *, relay_url: str,
             public_url: str | None = None, webhooks_file: str | None = None,
             ca_file: str | None = None):
    import asyncio

    import aiohttp
    from aiohttp import web

    webhooks = Webhooks(upstream=upstream.rstrip("/"), relay_url=relay_url,
                        endpoints_file=Path(webhooks_file) if webhooks_file else None,
                        ca_file=Path(ca_file) if ca_file else None)
    stub = Stub(upstream, Store(Path(state_file) if state_file else None), webhooks)

    async def on_startup(app):
        stub.session = aiohttp.ClientSession(auto_decompress=False)
        webhooks.session = aiohttp.ClientSession()
        # Events from the first moment on reach the relay: register before serving.
        for _ in range(60):
            try:
                await webhooks.register_relay()
                break
            except aiohttp.ClientError:
                await asyncio.sleep(0.5)
        else:
            raise RuntimeError(f"localstripe at {upstream} did not answer the relay registration")
        app["relay_renewal"] = asyncio.create_task(webhooks.keep_relay_registered())

    async def on_cleanup(app):
        app["relay_renewal"].cancel()
        await stub.session.close()
        await webhooks.session.close()

    async def params_of(request) -> dict:
        pairs = list(parse_qsl(request.query_string, keep_blank_values=True))
        if request.method == "POST" and request.can_read_body:
            raw = await request.read()
            # Stripe.js-style calls post JSON as text/plain (no CORS preflight).
            if request.content_type == "application/json" or raw.lstrip().startswith(b"{"):
                return {**parse_params(pairs), **json.loads(raw or b"{}")}
            pairs += parse_qsl(raw.decode(), keep_blank_values=True)
        return parse_params(pairs)

    def authorized(request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme == "Basic":
            import base64
            credentials = base64.b64decode(credentials).decode().split(":")[0]
        return credentials.startswith("sk_") and len(credentials) > 5  # as localstripe

    def base_url(request) -> str:
        """Where browsers reach the stub: --public-url (the lab: through its load balancer)."""
        return public_url.rstrip("/") if public_url else f"{request.scheme}://{request.host}"

    def stripe_handler(handler, browser: bool = False):
        async def wrapped(request):
            if not browser and not authorized(request):
                return web.json_response(StripeError(
                    401, "You did not provide an API key.").body(), status=401)
            try:
                params = await params_of(request)
                result = await handler(request, params)
            except StripeError as e:
                return web.json_response(e.body(), status=e.status)
            return web.json_response(public(result),
                                     headers={"Request-Id": new_id("req_")})
        return wrapped

    async def create_price(request, p):
        return await stub.expand(request, await stub.create_price(request, p),
                                 _expand_list(p))

    async def get_price(request, p):
        price = stub.store.get("prices", request.match_info["id"], "price")
        return await stub.expand(request, price, _expand_list(p))

    async def update_price(request, p):
        price = stub.update_price(request.match_info["id"], p)
        return await stub.expand(request, price, _expand_list(p))

    async def list_prices(request, p):
        envelope = stub.list_prices(p)
        expand = _expand_list(p)
        envelope["data"] = [await stub.expand(request, o, expand, "data.")
                            for o in envelope["data"]]
        return envelope

    async def create_session(request, p):
        return await stub.create_checkout_session(request, p, base_url(request))

    async def get_session(request, p):
        session = stub.store.get("checkout_sessions", request.match_info["id"],
                                 "checkout.session")
        if "line_items" in _expand_list(p):
            session = dict(session, line_items=paginate(
                session["_line_items"], {"limit": 100},
                f"/v1/checkout/sessions/{session['id']}/line_items", newest_first=False))
        return session

    async def list_sessions(request, p):
        return stub.list_checkout_sessions(p)

    async def session_line_items(request, p):
        session = stub.store.get("checkout_sessions", request.match_info["id"],
                                 "checkout.session")
        return paginate(session["_line_items"], p,
                        f"/v1/checkout/sessions/{session['id']}/line_items", newest_first=False)

    async def expire_session(request, p):
        return stub.expire_checkout_session(request.match_info["id"])

    async def confirm_intent(request, p):
        return await stub.confirm_payment_intent(request, request.match_info["id"], p)

    async def stripe_js(request):
        """localstripe's fake Stripe.js, with confirmCardPayment taking the card element."""
        async with stub.session.get(stub.upstream + "/js.stripe.com/v3/") as response:
            script = await response.text()
        return web.Response(text=script + STRIPE_JS_CONFIRM_WITH_CARD,
                            content_type="application/javascript")

    async def create_portal(request, p):
        return await stub.create_portal_session(request, p, base_url(request))

    async def create_refund(request, p):
        return await stub.create_refund(request, p)

    async def checkout_pay_page(request):
        session = stub.store.get("checkout_sessions", request.match_info["id"], "checkout.session")
        if session["status"] != "open":
            raise web.HTTPSeeOther(session["success_url"].replace(hosted.CHECKOUT_SESSION_ID, session["id"]))
        return web.Response(text=hosted.pay_page(session), content_type="text/html")

    async def checkout_pay(request):
        session = stub.store.get("checkout_sessions", request.match_info["id"], "checkout.session")
        if session["status"] != "open":
            return await checkout_pay_page(request)
        form = dict(await request.post())
        try:
            target = await hosted.complete_checkout(stub, request, session, form)
        except (StripeError, hosted.CardDeclined) as exc:
            message = exc.message if isinstance(exc, StripeError) else str(exc)
            return web.Response(text=hosted.pay_page(session, message), status=402,
                                content_type="text/html")
        raise web.HTTPSeeOther(target)

    async def portal_page(request):
        portal = stub.store.get("portal_sessions", request.match_info["id"], "billing_portal.session")
        return web.Response(text=hosted.portal_page(portal), content_type="text/html")

    async def config_webhook(request):
        """localstripe's registration API, kept by the stub (stripe_stub_webhooks.py)."""
        form = await request.post()
        stub.webhooks.register(request.match_info["id"], form["url"], form["secret"],
                               form.getall("events", None) or form.getall("events[]", None))
        return web.Response()

    async def relay(request):
        event = stub.webhooks.relayed(await request.read(), request.headers.get("Stripe-Signature", ""))
        if event is None:
            return web.json_response({"error": "bad relay signature"}, status=400)
        stub.webhooks.send(event)
        return web.json_response({"received": True})

    async def health(request):
        return web.json_response({"ok": True})

    async def reset(request):
        stub.store.clear()
        return await forward(request)

    async def forward(request):
        """Everything else goes to localstripe unchanged."""
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        async with stub.session.request(
            request.method, stub.upstream + request.rel_url.path_qs, headers=headers,
            data=body or None, allow_redirects=False,
        ) as response:
            payload = await response.read()
            out_headers = {k: v for k, v in response.headers.items()
                           if k.lower() not in HOP_BY_HOP}
            return web.Response(body=payload, status=response.status, headers=out_headers)

    @web.middleware
    async def cors(request, handler):
        """Stripe.js calls from the app's pages (another origin), like localstripe allows."""
        response = await handler(request)
        origin = request.headers.get("Origin")
        if origin and "Access-Control-Allow-Origin" not in response.headers:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Headers"] = "Content-Type, Accept"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS, DELETE"
        return response

    app = web.Application(client_max_size=8 * 1024 * 1024, middlewares=[cors])
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    r = app.router
    r.add_get("/_stub/health", health)
    r.add_post("/v1/prices", stripe_handler(create_price))
    r.add_get("/v1/prices", stripe_handler(list_prices))
    r.add_get("/v1/prices/{id}", stripe_handler(get_price))
    r.add_post("/v1/prices/{id}", stripe_handler(update_price))
    r.add_post("/v1/checkout/sessions", stripe_handler(create_session))
    r.add_get("/v1/checkout/sessions", stripe_handler(list_sessions))
    r.add_get("/v1/checkout/sessions/{id}", stripe_handler(get_session))
    r.add_get("/v1/checkout/sessions/{id}/line_items", stripe_handler(session_line_items))
    r.add_post("/v1/checkout/sessions/{id}/expire", stripe_handler(expire_session))
    r.add_post("/v1/billing_portal/sessions", stripe_handler(create_portal))
    r.add_post("/v1/payment_intents/{id}/confirm", stripe_handler(confirm_intent, browser=True))
    r.add_get("/js.stripe.com/v3/", stripe_js)
    r.add_post("/v1/refunds", stripe_handler(create_refund))
    r.add_get("/checkout/pay/{id}", checkout_pay_page)
    r.add_post("/checkout/pay/{id}", checkout_pay)
    r.add_get("/billing_portal/{id}", portal_page)
    r.add_post("/_config/webhooks/{id}", config_webhook)
    r.add_post("/_stub/relay", relay)
    r.add_delete("/_config/data", reset)
    r.add_route("*", "/{tail:.*}", forward)
    return app


# Appended to localstripe's fake Stripe.js. Its confirmCardPayment only completes a 3-D
# Secure step; Stripe.js creates a card payment method from the element and confirms the
# PaymentIntent with the publishable key and client secret, then runs 3-D Secure if asked.
STRIPE_JS_CONFIRM_WITH_CARD = r"""
;(function () {
  const fakeStripe = Stripe;
  Stripe = (apiKey) => {
    const stripe = fakeStripe(apiKey);
    const authenticate = stripe.confirmCardPayment;
    stripe.confirmCardPayment = async (clientSecret, data) => {
      const card = data && data.payment_method && data.payment_method.card;
      if (!card || !card.value) {
        return authenticate(clientSecret, data);
      }
      const pi = clientSecret.match(/^(pi_\w+)_secret_/)[1];
      try {
        const response = await fetch(
          `${LOCALSTRIPE_BASE_API}/v1/payment_intents/${pi}/confirm`, {
            method: 'POST',
            body: JSON.stringify({
              key: apiKey,
              client_secret: clientSecret,
              payment_method_data: {type: 'card', card: card.value.card},
            }),
          });
        const body = await response.json().catch(() => ({}));
        if (response.status !== 200 || body.error) {
          return {error: body.error || {message: 'The payment failed.'}};
        }
        if (body.status === 'requires_action') {
          return authenticate(clientSecret, data);
        }
        return {paymentIntent: body};
      } catch (err) {
        return {error: {message: String(err)}};
      }
    };
    return stripe;
  };
})();
"""


def _expand_list(p: dict) -> list[str]:
    expand = p.pop("expand", None) or []
    return expand if isinstance(expand, list) else [expand]


def main() -> None:
    import logging

    from aiohttp import web

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8421)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--upstream", default="http://127.0.0.1:8420",
                        help="localstripe's base URL")
    parser.add_argument("--state", help="JSON file to keep the stub's objects in")
    parser.add_argument("--public-url",
                        help="base URL browsers reach the stub at (hosted pages); default: the request's")
    parser.add_argument("--webhooks", help="JSON file of endpoints [{id, url, secret, events}], read at each delivery")
    parser.add_argument("--ca-file", help="CA bundle that TLS webhook endpoints are verified against")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # localstripe posts its events to the relay on the stub's own port.
    relay_host = "127.0.0.1" if args.host in ("0.0.0.0", "127.0.0.1", "") else args.host
    app = make_app(args.upstream, args.state, relay_url=f"http://{relay_host}:{args.port}/_stub/relay",
                   public_url=args.public_url, webhooks_file=args.webhooks, ca_file=args.ca_file)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
