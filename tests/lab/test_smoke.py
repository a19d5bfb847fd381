"""scripts/smoke.py, the deploy workflow's smoke test, run against the lab as CI runs it
after a deploy (`make smoke URL=...`): through the load balancer, with the certificate
verified for the site's public name (Pebble's, the lab's ACME CA) and the running release's
version expected on every answer. A wrong version must make it fail, or it proves nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_acme import NAME, pebble_root  # noqa: E402  (tests/lab/test_acme.py)

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
URL = "https://127.0.0.1:8443"


@pytest.fixture(scope="module")
def cafile(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("smoke") / "pebble-root.pem"
    path.write_text(pebble_root())
    return path


def smoke(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "smoke", f"URL={URL}", f"SMOKE_ARGS={' '.join(arguments)}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_smoke_test_passes_against_the_lab_with_the_running_version(lab, cafile):
    version = os.environ.get("LAB_APP_VERSION")
    assert version, "LAB_APP_VERSION is not set (scripts/lab.sh verify sets it to the running release)"
    result = smoke("--cafile", str(cafile), "--host", NAME, "--expect-version", version)
    assert result.returncode == 0, result.stdout + result.stderr
    checks = [line.split(":", 1)[0] for line in result.stdout.splitlines() if line.startswith(("ok", "FAIL"))]
    expected = ["tls", "health", "headers /", "headers /api/products", "catalog", "webhook unsigned",
                "webhook forged signature", "version"]
    assert checks == [f"ok   {name}" for name in expected], result.stdout


def test_the_smoke_test_fails_on_another_version_and_on_an_untrusted_certificate(lab, cafile, tmp_path):
    wrong_version = smoke("--cafile", str(cafile), "--host", NAME, "--expect-version", "0000000")
    assert wrong_version.returncode != 0
    assert "FAIL version" in wrong_version.stdout, wrong_version.stdout

    # The address's certificate is the lab's self-signed one, which Pebble's root does not vouch for.
    untrusted = smoke("--cafile", str(cafile))
    assert untrusted.returncode != 0
    assert "FAIL tls" in untrusted.stdout, untrusted.stdout
