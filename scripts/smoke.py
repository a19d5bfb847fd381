#!/usr/bin/env python3
"""Smoke test of a running site, through its load balancer, as a customer's browser and
Stripe reach it. The deploy workflow runs it after each deploy; anyone can run it:

    make smoke URL=https://payments.example.invalid
    make smoke URL=https://127.0.0.1:8443 SMOKE_ARGS=--insecure           # the lab (self-signed)
    scripts/smoke.py https://127.0.0.1:8443 --cafile lb.crt --host payments.lab.test
    scripts/smoke.py https://staging.example.invalid --expect-version 3f2c1e9

Checks, each printed as `ok` or `FAIL` with the reason; the exit status is 1 when any fails
(2 for bad arguments):

- tls: the handshake negotiates TLS 1.2 or newer, the certificate verifies (unless
  --insecure), and a client that offers at most TLS 1.1 is refused;
- health: GET /health (the app's readiness through the load balancer) answers 200 with
  {"status": "ready", "checks": {"database": {"status": "ok"}, "redis": {"status": "ok"}}}.
  /api/health, the detailed report, is served only to loopback, the admin and the
  monitoring networks: --api-health checks it too, from such a network;
- headers: HSTS of at least a year, X-Frame-Options DENY, X-Content-Type-Options nosniff,
  Referrer-Policy, Permissions-Policy and a Content-Security-Policy, on a page and on the API;
- catalog: GET /api/products answers 200 with {"products": [...]}, each with slug, name and
  prices, and at least --min-products of them;
- webhook: POST /api/webhooks/stripe without a Stripe-Signature, and with a forged one, is
  refused with 400 invalid_signature (it is recorded as a bad-signature security event);
- version: with --expect-version, every answer from the app carries that X-App-Version.

Python's standard library only, so it runs wherever python3 does.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import socket
import ssl
import sys
import time
import warnings
from dataclasses import dataclass, field
from urllib.parse import urlsplit

ONE_YEAR = 365 * 24 * 3600
WEBHOOK_PATH = "/api/webhooks/stripe"
USER_AGENT = "payments-smoke/1"


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Target:
    scheme: str
    address: str  # what we connect to
    port: int
    server_name: str  # Host header, SNI and the name the certificate must carry
    base_path: str


@dataclass
class Report:
    results: list[tuple[str, bool, str]] = field(default_factory=list)

    def add(self, name: str, problems: list[str], detail: str = "") -> None:
        ok = not problems
        self.results.append((name, ok, detail if ok else "; ".join(problems)))
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail if ok else '; '.join(problems)}", flush=True)

    @property
    def failed(self) -> list[str]:
        return [name for name, ok, _ in self.results if not ok]


# --- Pure checks: (response) -> list of problems ---------------------------------------

def parse_target(url: str, host: str | None = None) -> Target:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Target(parts.scheme, parts.hostname, port, host or parts.hostname, parts.path.rstrip("/"))


def hsts_max_age(value: str | None) -> int | None:
    """max-age of a Strict-Transport-Security value, None when absent or malformed."""
    if not value:
        return None
    match = re.search(r"(?:^|;)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:;|$)", value, re.I)
    return int(match[1]) if match else None


def check_security_headers(headers: dict[str, str]) -> list[str]:
    problems = []
    max_age = hsts_max_age(headers.get("strict-transport-security"))
    if max_age is None:
        problems.append("no Strict-Transport-Security max-age")
    elif max_age < ONE_YEAR:
        problems.append(f"HSTS max-age {max_age} is under a year ({ONE_YEAR})")
    if headers.get("x-frame-options", "").upper() != "DENY":
        problems.append(f"X-Frame-Options is {headers.get('x-frame-options')!r}, not DENY")
    if headers.get("x-content-type-options", "").lower() != "nosniff":
        problems.append(f"X-Content-Type-Options is {headers.get('x-content-type-options')!r}, not nosniff")
    for name in ("referrer-policy", "permissions-policy"):
        if not headers.get(name):
            problems.append(f"no {name.title()}")
    csp = headers.get("content-security-policy", "")
    if "default-src" not in csp or "frame-ancestors" not in csp:
        problems.append(f"Content-Security-Policy without default-src and frame-ancestors: {csp[:120]!r}")
    return problems


def check_health(response: Response) -> list[str]:
    if response.status != 200:
        return [f"status {response.status}, not 200: {response.body[:200]!r}"]
    try:
        body = response.json()
    except ValueError:
        return [f"not JSON: {response.body[:200]!r}"]
    problems = []
    if not isinstance(body, dict) or body.get("status") != "ready":
        problems.append(f"status is {body.get('status') if isinstance(body, dict) else body!r}, not ready")
    checks = body.get("checks") if isinstance(body, dict) else None
    for name in ("database", "redis"):
        check = checks.get(name) if isinstance(checks, dict) else None
        if not isinstance(check, dict) or check.get("status") != "ok":
            problems.append(f"checks.{name} is {check!r}, not ok")
    return problems


def check_api_health(response: Response) -> list[str]:
    if response.status != 200:
        return [f"status {response.status}, not 200 (is this a loopback, admin or monitoring address?)"]
    try:
        body = response.json()
    except ValueError:
        return [f"not JSON: {response.body[:200]!r}"]
    problems = []
    if body.get("status") not in ("ok", "degraded"):
        problems.append(f"status is {body.get('status')!r}")
    for key in ("version", "uptime", "checks"):
        if key not in body:
            problems.append(f"no {key}")
    for name in ("database", "redis", "stripe"):
        if not isinstance(body.get("checks", {}).get(name), dict):
            problems.append(f"no checks.{name}")
    return problems


def check_catalog(response: Response, min_products: int) -> list[str]:
    if response.status != 200:
        return [f"status {response.status}, not 200: {response.body[:200]!r}"]
    try:
        products = response.json().get("products")
    except (ValueError, AttributeError):
        return [f"not a JSON object: {response.body[:200]!r}"]
    if not isinstance(products, list):
        return [f"products is {type(products).__name__}, not a list"]
    problems = []
    if len(products) < min_products:
        problems.append(f"{len(products)} products, expected at least {min_products}")
    for product in products:
        missing = [key for key in ("slug", "name", "prices") if key not in product]
        if missing or not isinstance(product.get("prices"), list):
            problems.append(f"product {product.get('slug', '?')!r} lacks {missing or ['a prices list']}")
            break
    return problems


def check_webhook_refused(response: Response) -> list[str]:
    if response.status != 400:
        return [f"status {response.status}, not 400: an unsigned webhook must be refused"]
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return [f"400 without the app's error body: {response.body[:200]!r}"]
    return [] if code == "invalid_signature" else [f"error code {code!r}, not invalid_signature"]


def check_version(responses: dict[str, Response], expected: str) -> list[str]:
    wrong = {path: r.headers.get("x-app-version") for path, r in responses.items()
             if r.headers.get("x-app-version") != expected}
    return [f"X-App-Version is not {expected!r}: {wrong}"] if wrong else []


def tls_version_ok(version: str | None) -> bool:
    return version in ("TLSv1.2", "TLSv1.3")


# --- Network ---------------------------------------------------------------------------

def client_context(cafile: str | None, insecure: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cafile)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _Connection(http.client.HTTPSConnection):
    """HTTPS to `address` with `server_name` as SNI and for the certificate check."""

    def __init__(self, target: Target, context: ssl.SSLContext, timeout: float):
        super().__init__(target.address, target.port, context=context, timeout=timeout)
        self._server_name = target.server_name
        self._context = context

    def connect(self):
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._server_name)


def request(target: Target, context: ssl.SSLContext, method: str, path: str, timeout: float,
            body: bytes | None = None, headers: dict[str, str] | None = None) -> Response:
    if target.scheme == "https":
        conn = _Connection(target, context, timeout)
    else:
        conn = http.client.HTTPConnection(target.address, target.port, timeout=timeout)
    try:
        host = target.server_name if target.port in (80, 443) else f"{target.server_name}:{target.port}"
        conn.request(method, target.base_path + path, body=body,
                     headers={"Host": host, "User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})})
        raw = conn.getresponse()
        merged: dict[str, str] = {}
        for name, value in raw.getheaders():
            merged[name.lower()] = f"{merged[name.lower()]}, {value}" if name.lower() in merged else value
        return Response(raw.status, merged, raw.read())
    finally:
        conn.close()


def handshake_version(target: Target, context: ssl.SSLContext, timeout: float) -> str | None:
    with socket.create_connection((target.address, target.port), timeout) as sock:
        with context.wrap_socket(sock, server_hostname=target.server_name) as tls:
            return tls.version()


def old_tls_refused(target: Target, timeout: float) -> bool | None:
    """True when a client offering at most TLS 1.1 fails the handshake; None when this
    machine's OpenSSL cannot even offer TLS 1.1 (then nothing is proven either way)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with warnings.catch_warnings():  # deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        return None
    try:
        handshake_version(target, context, timeout)
    except ssl.SSLError as exc:
        # The client refusing to offer anything it may send proves nothing about the server.
        return None if "NO_PROTOCOLS_AVAILABLE" in str(exc).upper() else True
    except OSError:
        return True
    return False


def run(args: argparse.Namespace) -> Report:
    report = Report()
    target = parse_target(args.url, args.host)
    context = client_context(args.cafile, args.insecure)
    timeout = args.timeout
    seen: dict[str, Response] = {}

    def get(method: str, path: str, **kwargs) -> Response | None:
        try:
            response = request(target, context, method, path, timeout, **kwargs)
        except (OSError, http.client.HTTPException) as exc:
            report.add(f"{method} {path}", [f"no answer from {target.address}:{target.port}: {exc}"])
            return None
        seen[f"{method} {path}"] = response
        return response

    if target.scheme != "https":
        report.add("tls", [f"{args.url} is not HTTPS"])
    else:
        try:
            version = handshake_version(target, context, timeout)
            problems = [] if tls_version_ok(version) else [f"negotiated {version}"]
            refused = old_tls_refused(target, timeout)
            if refused is False:
                problems.append("a TLS 1.1 client was accepted")
            detail = f"{version}, certificate {'not checked (--insecure)' if args.insecure else 'verified'}" + (
                ", TLS 1.1 refused" if refused else ", TLS 1.1 not testable from this client")
            report.add("tls", problems, detail)
        except (OSError, ssl.SSLError) as exc:
            report.add("tls", [f"handshake with {target.address}:{target.port} (SNI {target.server_name}) failed: {exc}"])
            return report  # nothing else can answer

    health = get("GET", "/health")
    if health is not None:
        report.add("health", check_health(health), "/health ready (database ok, redis ok)")
    if args.api_health:
        detailed = get("GET", "/api/health")
        if detailed is not None:
            report.add("api health", check_api_health(detailed), "/api/health answered")

    page = get("GET", "/")
    if page is not None:
        problems = [f"/ answered {page.status}"] if page.status != 200 else []
        report.add("headers /", problems + check_security_headers(page.headers), "HSTS, frame, type, referrer, CSP")

    catalog = get("GET", "/api/products")
    if catalog is not None:
        report.add("headers /api/products", check_security_headers(catalog.headers), "same headers on the API")
        report.add("catalog", check_catalog(catalog, args.min_products), "/api/products listed")

    payload = json.dumps({"id": f"evt_smoke_{int(time.time())}", "type": "smoke.test", "object": "event"}).encode()
    for label, headers in (("unsigned", {}),
                           ("forged signature", {"Stripe-Signature": f"t={int(time.time())},v1={'0' * 64}"})):
        refused = get("POST", WEBHOOK_PATH, body=payload, headers={"Content-Type": "application/json", **headers})
        if refused is not None:
            report.add(f"webhook {label}", check_webhook_refused(refused), "refused with 400 invalid_signature")

    if args.expect_version:
        report.add("version", check_version(seen, args.expect_version), f"X-App-Version {args.expect_version}")
    return report


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="the site's base URL, e.g. https://payments.example.invalid")
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument("--cafile", help="verify the certificate against this CA bundle (e.g. the lab's lb.crt)")
    trust.add_argument("--insecure", action="store_true", help="do not verify the certificate (the lab's self-signed one)")
    parser.add_argument("--host", help="Host header and TLS name, when the URL names an address (e.g. payments.lab.test)")
    parser.add_argument("--expect-version", help="the X-App-Version every answer from the app must carry")
    parser.add_argument("--api-health", action="store_true",
                        help="also check /api/health (served to loopback, admin and monitoring networks only)")
    parser.add_argument("--min-products", type=int, default=1, help="products the catalog must list (default 1)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per connection (default 10)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        parse_target(args.url, args.host)
    except ValueError as exc:
        print(f"smoke: {exc}", file=sys.stderr)
        return 2
    print(f"smoke test of {args.url}" + (f" (Host {args.host})" if args.host else ""), flush=True)
    report = run(args)
    if report.failed:
        print(f"smoke: FAILED: {', '.join(report.failed)}", file=sys.stderr)
        return 1
    print(f"smoke: all {len(report.results)} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
