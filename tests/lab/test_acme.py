"""The load balancer's certificate for the site's public name comes from an ACME CA, for real.

The lab runs Pebble, Let's Encrypt's ACME test server, on labsvc (roles/lab_services); lb1's
certbot gets the certificate for payments.lab.test from it over HTTP-01 (Pebble fetches the
token from lb1's port 80 through Docker's DNS), and certbot's renewal runs a deploy hook that
checks the new files and reloads nginx. Addresses (https://127.0.0.1:8443) keep the
self-signed certificate: ACME issues for names.

Clients reach the name through the published port with the name as SNI (curl's --resolve).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load  # noqa: E402  (tests/lab/load.py)
from labtools import run_in  # noqa: E402

pytestmark = pytest.mark.lab

NAME = "payments.lab.test"
PUBLISHED = ("127.0.0.1", 8443)
PEBBLE = "https://10.77.0.5:15000"
PEBBLE_LISTENER_CA = "/etc/pebble/tls/cert.pem"
CERTBOT_CA_BUNDLE = "/etc/letsencrypt/payments-acme-server-ca.pem"


def pebble_root() -> str:
    """The root Pebble signs with now (it makes a new one at every start)."""
    script = ("import ssl, urllib.request\n"
              f"context = ssl.create_default_context(cafile={PEBBLE_LISTENER_CA!r})\n"
              f"print(urllib.request.urlopen({PEBBLE + '/roots/0'!r}, context=context, timeout=10).read().decode())")
    return run_in("labsvc", "python3", "-c", script)


def served_certificate(cadata: str | None) -> dict:
    """The certificate lb1 serves for NAME, verified against `cadata` (None: not verified)."""
    context = ssl.create_default_context(cadata=cadata) if cadata else ssl._create_unverified_context()
    with socket.create_connection(PUBLISHED, timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=NAME) as tls:
            der = tls.getpeercert(binary_form=True)
            parsed = tls.getpeercert() if cadata else {}
    return {"der": der, "parsed": parsed}


def issuer_cn(parsed: dict) -> str:
    return dict(pair[0] for pair in parsed["issuer"])["commonName"]


def test_the_public_name_is_served_with_a_certificate_issued_by_pebble(lab):
    root = pebble_root()
    served = served_certificate(root)  # the handshake verifies the chain to Pebble's root and the name
    assert issuer_cn(served["parsed"]).startswith("Pebble Intermediate CA"), served["parsed"]["issuer"]
    names = {value for kind, value in served["parsed"]["subjectAltName"] if kind == "DNS"}
    assert names == {NAME}
    # The address keeps the self-signed certificate, which Pebble's root does not vouch for.
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection(PUBLISHED, timeout=10) as raw:
            ssl.create_default_context(cadata=root).wrap_socket(raw, server_hostname="127.0.0.1")


def test_a_forced_renewal_reloads_nginx_with_the_new_certificate_and_no_failed_request(lab):
    before = served_certificate(None)["der"]
    renew = ["docker", "exec", "-e", f"REQUESTS_CA_BUNDLE={CERTBOT_CA_BUNDLE}", "lb1",
             "certbot", "renew", "--non-interactive", "--no-random-sleep-on-renew", "--force-renewal",
             "--cert-name", NAME]
    result, command = asyncio.run(load.load_during(renew, shopper=None, concurrency=8, lead=2.0, tail=3.0))
    assert command.returncode == 0, command.output[-3000:]
    summary = result.summary()
    assert result.sent > 100, summary
    assert not result.failures, f"failed requests during the renewal: {summary}"
    after = served_certificate(pebble_root())
    assert after["der"] != before, "nginx still serves the certificate from before the renewal"
    # The deploy hook checked the files and reloaded nginx (it logs the new serial).
    journal = run_in("lb1", "journalctl", "-t", "payments-acme", "--no-pager", "-o", "cat")
    assert "nginx reloaded with serial=" in journal, journal[-2000:]
    print(f"renewal under load: {summary['sent']} requests, {len(result.failures)} failed, "
          f"certbot took {command.seconds:.1f} s")
