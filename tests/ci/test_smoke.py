"""scripts/smoke.py's checks, as functions of a response: what passes, and that each
problem a deploy could leave is reported. Its run against the lab's load balancer is a lab
test; here only its refusal of a site that does not answer goes over the network (a closed
port on loopback)."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys

import pytest

from tests.awx.definitions import ROOT

SCRIPT = ROOT / "scripts" / "smoke.py"
_spec = importlib.util.spec_from_file_location("smoke", SCRIPT)
smoke = importlib.util.module_from_spec(_spec)
sys.modules["smoke"] = smoke  # dataclasses resolve their module by name
_spec.loader.exec_module(smoke)

GOOD_HEADERS = {
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
    "permissions-policy": "camera=(), microphone=()",
    "content-security-policy": "default-src 'self'; object-src 'none'; frame-ancestors 'none'",
}


def response(status=200, body=None, headers=None, raw=None):
    return smoke.Response(status, headers or {}, raw if raw is not None else json.dumps(body).encode())


def test_hsts_max_age_is_read_from_the_header():
    assert smoke.hsts_max_age("max-age=63072000; includeSubDomains") == 63072000
    assert smoke.hsts_max_age('includeSubDomains; max-age="31536000"') == 31536000
    assert smoke.hsts_max_age("includeSubDomains") is None
    assert smoke.hsts_max_age(None) is None


def test_the_load_balancers_headers_pass():
    assert smoke.check_security_headers(GOOD_HEADERS) == []


@pytest.mark.parametrize("name,value,expected", [
    ("strict-transport-security", None, "no Strict-Transport-Security"),
    ("strict-transport-security", "max-age=86400", "under a year"),
    ("x-frame-options", "SAMEORIGIN", "X-Frame-Options"),
    ("x-content-type-options", None, "X-Content-Type-Options"),
    ("referrer-policy", None, "Referrer-Policy"),
    ("permissions-policy", None, "Permissions-Policy"),
    ("content-security-policy", "script-src 'self'", "Content-Security-Policy"),
])
def test_a_missing_or_weak_header_is_reported(name, value, expected):
    headers = {k: v for k, v in GOOD_HEADERS.items() if k != name}
    if value is not None:
        headers[name] = value
    problems = smoke.check_security_headers(headers)
    assert len(problems) == 1 and expected in problems[0], problems


def test_ready_health_passes():
    body = {"status": "ready", "checks": {"database": {"status": "ok"}, "redis": {"status": "ok", "latency_ms": 1}}}
    assert smoke.check_health(response(200, body)) == []


@pytest.mark.parametrize("status,body,expected", [
    (503, {"status": "not_ready", "checks": {"database": {"status": "error"}, "redis": {"status": "ok"}}}, "status 503"),
    (200, {"status": "ready", "checks": {"database": {"status": "ok"}}}, "checks.redis"),
    (200, {"status": "starting", "checks": {"database": {"status": "ok"}, "redis": {"status": "ok"}}}, "not ready"),
    (200, None, "not JSON"),
])
def test_unhealthy_answers_are_reported(status, body, expected):
    raw = b"<html>bad gateway</html>" if body is None else None
    problems = smoke.check_health(response(status, body, raw=raw))
    assert problems and any(expected in p for p in problems), problems


def test_detailed_health_shape():
    body = {"status": "degraded", "version": "v2", "uptime": 3.2,
            "checks": {"database": {"status": "ok"}, "redis": {"status": "ok"}, "stripe": {"status": "error"}}}
    assert smoke.check_api_health(response(200, body)) == []
    # Outside the admin and monitoring networks the load balancer answers 404.
    assert "admin or monitoring" in smoke.check_api_health(response(404, raw=b"not found"))[0]
    assert smoke.check_api_health(response(200, {"status": "down", "checks": {}}))


def test_catalog_with_products_passes():
    body = {"products": [{"slug": "pen", "name": "Pen", "prices": [{"unit_amount": 500}]}]}
    assert smoke.check_catalog(response(200, body), min_products=1) == []


@pytest.mark.parametrize("status,body,minimum,expected", [
    (200, {"products": []}, 1, "0 products"),
    (200, {"products": [{"slug": "pen"}]}, 1, "lacks"),
    (200, {"items": []}, 0, "not a list"),
    (500, {"error": {"code": "internal"}}, 1, "status 500"),
])
def test_a_broken_catalog_is_reported(status, body, minimum, expected):
    problems = smoke.check_catalog(response(status, body), min_products=minimum)
    assert problems and expected in problems[0], problems


def test_webhook_refused_with_invalid_signature_passes():
    body = {"error": {"code": "invalid_signature", "message": "The webhook signature could not be verified."}}
    assert smoke.check_webhook_refused(response(400, body)) == []


@pytest.mark.parametrize("status,body,expected", [
    (200, {"received": True}, "must be refused"),
    (400, {"error": {"code": "bad_request"}}, "not invalid_signature"),
    (400, None, "without the app's error body"),
    (404, {"error": {"code": "not_found"}}, "status 404"),
])
def test_an_accepted_or_odd_webhook_answer_is_reported(status, body, expected):
    raw = b"<html>400</html>" if body is None else None
    problems = smoke.check_webhook_refused(response(status, body, raw=raw))
    assert problems and expected in problems[0], problems


def test_every_answer_must_carry_the_expected_version():
    answers = {"GET /": response(200, {}, {"x-app-version": "abc"}), "GET /health": response(200, {}, {"x-app-version": "abc"})}
    assert smoke.check_version(answers, "abc") == []
    answers["GET /health"] = response(200, {}, {"x-app-version": "old"})
    assert "GET /health" in smoke.check_version(answers, "abc")[0]


def test_only_tls_1_2_and_newer_pass():
    assert smoke.tls_version_ok("TLSv1.3") and smoke.tls_version_ok("TLSv1.2")
    assert not smoke.tls_version_ok("TLSv1.1") and not smoke.tls_version_ok(None)


def test_target_takes_the_host_name_apart_from_the_address():
    target = smoke.parse_target("https://127.0.0.1:8443/", host="payments.lab.test")
    assert (target.address, target.port, target.server_name, target.base_path) == ("127.0.0.1", 8443, "payments.lab.test", "")
    assert smoke.parse_target("https://payments.example.invalid").port == 443
    with pytest.raises(ValueError):
        smoke.parse_target("payments.example.invalid")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_site_that_does_not_answer_fails_with_a_clear_message():
    result = subprocess.run([sys.executable, str(SCRIPT), f"https://127.0.0.1:{free_port()}", "--insecure", "--timeout", "2"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "FAIL tls" in result.stdout and "Connection refused" in result.stdout
    assert "smoke: FAILED: tls" in result.stderr


def test_a_bad_url_is_a_usage_error():
    result = subprocess.run([sys.executable, str(SCRIPT), "payments.example.invalid"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "not an http(s) URL" in result.stderr
