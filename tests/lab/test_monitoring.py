"""Monitoring of the running lab: Prometheus and Alertmanager on mon1 (roles/monitoring),
Prometheus published on 127.0.0.1:9090, and the lab's alert receiver on mon1
(roles/lab_services, entry point alert_receiver), which records every notification that
Alertmanager sends to its Slack-compatible webhook, its generic webhook and e-mail.

1. Prometheus scrapes every target it is given, and each app host on the port of the pair
   that runs its release.
2. A fault makes its alert arrive at the receiver within a bounded time, and the alert
   resolves once the fault is undone: the app container stopped on one app host
   (AppHostDown, checked at all three channels); PostgreSQL stopped on the replica
   (PostgresDown from its exporter, and PostgresReplicaNotStreaming from the primary's); WAL
   archiving failing on the primary (PostgresWalArchiveFailing); nginx stopped on the load
   balancer (SiteProbeFailing, from the blackbox exporter's HTTPS probe of the site's public
   name). Each prints how long the alert took to arrive and to resolve.
3. The probe reads the certificate the site serves: its expiry is the served chain's.

Faults change the running lab (the load balancer loses an upstream for a minute): selected by
the `lab_monitoring` marker and run only when LAB_MONITORING=1 (`scripts/lab.sh
verify-monitoring`), after the end-to-end tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labtools import run_in  # noqa: E402  (tests/lab/labtools.py)

pytestmark = [
    pytest.mark.lab,
    pytest.mark.lab_monitoring,
    pytest.mark.timeout(900),
    pytest.mark.skipif(os.environ.get("LAB_MONITORING") != "1",
                       reason="monitoring tests run with LAB_MONITORING=1 (scripts/lab.sh verify-monitoring)"),
]

PROMETHEUS = "http://127.0.0.1:9090"
MONITORING_HOST = "mon1"
RECEIVED = "/var/log/lab-alerts/received.jsonl"  # roles/lab_services: lab_services_alert_receiver_log
APP_JOB = "app"
# Scraped every 5 s, AppHostDown after 20 s down, sent 1 s after it reaches Alertmanager
# (inventories/lab/group_vars/monitoring.yml): well inside these bounds.
ALERT_WITHIN = 120
RESOLVED_WITHIN = 120


def prometheus(path: str) -> dict:
    with urllib.request.urlopen(PROMETHEUS + path, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def received() -> list[dict]:
    """Every notification the receiver recorded, oldest first."""
    text = run_in(MONITORING_HOST, "sh", "-c", f"cat {RECEIVED} 2>/dev/null || true")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def webhook_alerts(notifications: list[dict]) -> list[dict]:
    """The alerts of the generic webhook's notifications (Alertmanager's JSON payload)."""
    alerts = []
    for entry in notifications:
        if entry["channel"] == "http" and entry["path"] == "/webhook":
            alerts += json.loads(entry["body"])["alerts"]
    return alerts


def wait_for_alert(since: int, alertname: str, status: str, labels: dict, within: float) -> tuple[float, list[dict]]:
    """Seconds until the webhook got `alertname` with `labels` in `status`; the notifications."""
    start = time.monotonic()
    while True:
        new = received()[since:]
        for alert in webhook_alerts(new):
            if (alert["labels"].get("alertname") == alertname and alert["status"] == status
                    and all(alert["labels"].get(k) == v for k, v in labels.items())):
                return time.monotonic() - start, new
        assert time.monotonic() - start < within, (
            f"no {status} {alertname} {labels} at the receiver within {within} s; it got: {new[-5:]}")
        time.sleep(2)


def app_container(host: str) -> str:
    names = run_in(host, "docker", "ps", "--format", "{{.Names}}").split()
    running = [name for name in names if name.startswith("payments-app") and not name.endswith("-migrate")]
    assert len(running) == 1, f"{host} runs {running}"
    return running[0]


def wait_until_healthy(host: str, container: str, within: float = 120) -> None:
    deadline = time.monotonic() + within
    while run_in(host, "docker", "inspect", "-f", "{{.State.Health.Status}}", container).strip() != "healthy":
        assert time.monotonic() < deadline, f"{container} on {host} is not healthy after {within} s"
        time.sleep(2)


def test_prometheus_scrapes_every_target_and_each_app_host_on_its_running_port(lab):
    deadline = time.monotonic() + 60
    while True:
        targets = prometheus("/api/v1/targets?state=active")["activeTargets"]
        down = [t["scrapeUrl"] for t in targets if t["labels"]["job"] != APP_JOB and t["health"] != "up"]
        app_up = defaultdict(list)
        for t in targets:
            if t["labels"]["job"] == APP_JOB and t["health"] == "up":
                app_up[t["labels"].get("host")].append(t["labels"]["instance"])
        if not down and all(len(app_up[host]) == 1 for host in lab["app"]):
            break
        assert time.monotonic() < deadline, f"targets down: {down}; app targets up per host: {dict(app_up)}"
        time.sleep(3)
    jobs = {t["labels"]["job"] for t in targets}
    assert {"prometheus", "alertmanager", APP_JOB} <= jobs, jobs
    # Every target is named by the host it scrapes, and each app host by both ports of its pair.
    assert all(t["labels"].get("host") for t in targets), [t["scrapeUrl"] for t in targets if "host" not in t["labels"]]
    pairs = defaultdict(int)
    for t in targets:
        if t["labels"]["job"] == APP_JOB:
            pairs[t["labels"]["host"]] += 1
    assert dict(pairs) == {host: 2 for host in lab["app"]}, dict(pairs)
    # The port Prometheus finds up is the one the host's release listens on (its PORT).
    for host in lab["app"]:
        env = run_in(host, "docker", "inspect", "-f", "{{json .Config.Env}}", app_container(host))
        port = [item.split("=", 1)[1] for item in json.loads(env) if item.startswith("PORT=")]
        assert app_up[host] == [f"{lab['address'][host]}:{port[0]}"], (host, app_up[host], port)


def test_an_app_host_without_its_app_alerts_on_every_channel_and_resolves(lab):
    host = lab["app"][0]
    container = app_container(host)
    since = len(received())
    stopped = time.monotonic()
    run_in(host, "docker", "stop", container, timeout=60)
    try:
        detected, notifications = wait_for_alert(since, "AppHostDown", "firing", {"host": host}, ALERT_WITHIN)
        # The same alert by the Slack-compatible webhook and by e-mail (each sent on its own).
        deadline = time.monotonic() + 30
        while True:
            slack = [n for n in notifications if n["channel"] == "http" and n["path"] == "/slack"
                     and "AppHostDown" in n["body"]]
            mail = [n for n in notifications if n["channel"] == "smtp" and "AppHostDown" in n["data"]]
            if slack and mail:
                break
            assert time.monotonic() < deadline, f"AppHostDown reached the webhook but not Slack or mail: {notifications}"
            time.sleep(2)
            notifications = received()[since:]
        assert json.loads(slack[0]["body"])["channel"] == "#payments-lab"
        assert mail[0]["to"] == ["<oncall@lab.test>"], mail[0]["to"]
    finally:
        run_in(host, "docker", "start", container, timeout=60)
    restarted = time.monotonic()
    resolved, _ = wait_for_alert(since, "AppHostDown", "resolved", {"host": host}, RESOLVED_WITHIN)
    wait_until_healthy(host, container)
    print(f"\nAppHostDown {host}: alert at the receiver {detected:.0f} s after the app stopped; "
          f"resolved {resolved:.0f} s after it started again ({time.monotonic() - stopped:.0f} s in all, "
          f"{restarted - stopped:.0f} s down)")
    # The other app host was never reported down.
    others = [a for a in webhook_alerts(received()[since:]) if a["labels"].get("alertname") == "AppHostDown"
              and a["labels"].get("host") != host]
    assert others == [], others


def test_the_replica_stopped_alerts_down_and_not_streaming_and_both_resolve(lab):
    replica, primary = lab["db_replica"], lab["db_primary"]
    since = len(received())
    stopped = time.monotonic()
    run_in(replica, "systemctl", "stop", "postgresql@15-main", timeout=120)
    try:
        down, _ = wait_for_alert(since, "PostgresDown", "firing", {"host": replica}, ALERT_WITHIN)
        # The primary's exporter sees its WAL sender gone and the replica's slot unused.
        streaming, _ = wait_for_alert(since, "PostgresReplicaNotStreaming", "firing", {"host": primary},
                                      ALERT_WITHIN)
    finally:
        run_in(replica, "systemctl", "start", "postgresql@15-main", timeout=120)
    restarted = time.monotonic()
    up, _ = wait_for_alert(since, "PostgresDown", "resolved", {"host": replica}, RESOLVED_WITHIN)
    resumed, _ = wait_for_alert(since, "PostgresReplicaNotStreaming", "resolved", {"host": primary},
                                RESOLVED_WITHIN)
    print(f"\n{replica} PostgreSQL stopped: PostgresDown at the receiver {down:.0f} s after the stop, "
          f"PostgresReplicaNotStreaming {streaming:.0f} s after; resolved {up:.0f} s and {resumed:.0f} s after "
          f"the start ({restarted - stopped:.0f} s down)")


PGBACKREST_CONF = "/etc/pgbackrest/pgbackrest.conf"  # roles/pgbackrest


def switch_wal_until(host: str, stop: threading.Event) -> None:
    """Write a little and close the WAL segment every few seconds, so the archiver has one to
    push (an idle primary archives nothing)."""
    while not stop.wait(4):
        subprocess.run(["docker", "exec", "-u", "postgres", host, "psql", "-qAt",
                        "-c", "select txid_current()", "-c", "select pg_switch_wal()"],
                       capture_output=True, timeout=30, check=False)


def archived_count(host: str) -> int:
    """WAL segments the host's archiver has pushed since the statistics were reset."""
    return int(run_in(host, "su", "postgres", "-c", "psql -qAt -c 'select archived_count from pg_stat_archiver'"))


def test_wal_archiving_failing_alerts_and_resolves_when_the_archive_catches_up(lab):
    """The repository's bucket renamed in the primary's pgBackRest configuration (a mistake an
    operator can make, and one the lab's S3 stand-in refuses at once: an unreachable endpoint
    is retried by pgBackRest for minutes before archive_command fails)."""
    primary = lab["db_primary"]
    archived_before = archived_count(primary)
    run_in(primary, "sh", "-c", f"cp -p {PGBACKREST_CONF} {PGBACKREST_CONF}.lab-test && "
                                f"sed -i 's/^repo1-s3-bucket=.*/&-missing/' {PGBACKREST_CONF}")
    since = len(received())
    broken = time.monotonic()
    stop = threading.Event()
    writer = threading.Thread(target=switch_wal_until, args=(primary, stop), daemon=True)
    writer.start()
    try:
        try:
            failing, _ = wait_for_alert(since, "PostgresWalArchiveFailing", "firing", {"host": primary},
                                        ALERT_WITHIN)
        finally:
            run_in(primary, "mv", f"{PGBACKREST_CONF}.lab-test", PGBACKREST_CONF)
        fixed = time.monotonic()
        resolved, _ = wait_for_alert(since, "PostgresWalArchiveFailing", "resolved", {"host": primary},
                                     RESOLVED_WITHIN)
    finally:
        stop.set()
        writer.join(timeout=60)
    # Nothing was lost: the segments queued while it failed were archived once it was fixed.
    deadline = time.monotonic() + 60
    while (pending := run_in(primary, "sh", "-c", "ls /var/lib/postgresql/15/main/pg_wal/archive_status | "
                                                  "grep -c '[.]ready$' || true").strip()) != "0":
        assert time.monotonic() < deadline, f"{pending} WAL segments still wait to be archived on {primary}"
        time.sleep(2)
    archived_after = archived_count(primary)
    assert archived_after > archived_before, (archived_before, archived_after)
    # The replica, which archives nothing, was never reported.
    others = [a for a in webhook_alerts(received()[since:])
              if a["labels"].get("alertname") == "PostgresWalArchiveFailing" and a["labels"].get("host") != primary]
    assert others == [], others
    print(f"\n{primary} WAL archiving failing: PostgresWalArchiveFailing at the receiver {failing:.0f} s after "
          f"the break; resolved {resolved:.0f} s after the fix ({fixed - broken:.0f} s broken, "
          f"{archived_after - archived_before} segments archived meanwhile and after)")


PROBE_JOB = "blackbox-https"  # playbooks/group_vars/all/monitoring.yml


def probe_values(metric: str) -> dict[str, float]:
    result = prometheus(f"/api/v1/query?query={metric}{{job=%22{PROBE_JOB}%22}}")["result"]
    return {r["metric"]["instance"]: float(r["value"][1]) for r in result}


def served_chain_expiry(lab) -> float:
    """notAfter (Unix time) of the certificate the load balancer serves for the public name."""
    import socket
    import ssl

    from cryptography import x509

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", 8443), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=lab["public_hostname"]) as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()


def test_the_site_is_probed_over_https_and_its_certificate_expiry_is_the_served_ones(lab):
    url = f"https://{lab['public_hostname']}/health"
    deadline = time.monotonic() + 60
    while probe_values("probe_success").get(url) != 1:
        assert time.monotonic() < deadline, f"the probe of {url} does not succeed: {probe_values('probe_success')}"
        time.sleep(3)
    expiry = probe_values("probe_ssl_earliest_cert_expiry")[url]
    leaf = served_chain_expiry(lab)
    # The earliest expiry of the chain: the leaf's, or an intermediate's that ends sooner.
    assert expiry <= leaf, (expiry, leaf)
    assert expiry > time.time() + 14 * 86400, f"the served chain expires at {expiry}"
    firing = [a for a in prometheus("/api/v1/alerts")["alerts"] if a["labels"]["alertname"] == "TlsCertificateExpiringSoon"]
    assert firing == [], firing


def test_nginx_stopped_on_the_load_balancer_alerts_that_the_site_is_down_and_resolves(lab):
    lb, url = lab["lb"], f"https://{lab['public_hostname']}/health"
    since = len(received())
    stopped = time.monotonic()
    run_in(lb, "systemctl", "stop", "nginx", timeout=60)
    try:
        down, _ = wait_for_alert(since, "SiteProbeFailing", "firing", {"instance": url}, ALERT_WITHIN)
    finally:
        run_in(lb, "systemctl", "start", "nginx", timeout=60)
    restarted = time.monotonic()
    up, _ = wait_for_alert(since, "SiteProbeFailing", "resolved", {"instance": url}, RESOLVED_WITHIN)
    print(f"\n{lb} nginx stopped: SiteProbeFailing at the receiver {down:.0f} s after the stop; resolved "
          f"{up:.0f} s after the start ({restarted - stopped:.0f} s down)")
