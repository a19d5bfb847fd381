"""The app's workers per host are one fact (stack_app_workers in playbooks/group_vars/all/
stack.yml): the app role runs that many, and PostgreSQL's connection budget
(postgresql_max_connections in db.yml) counts the same, even for a tier that names no vCPUs."""

from __future__ import annotations

from tests.awx.definitions import ROOT
from tests.structure.ansible_vars import stack_value


def test_the_connection_budget_counts_the_workers_each_app_host_runs(tmp_path):
    (tmp_path / "hosts.yml").write_text((ROOT / "inventories" / "lab" / "hosts.yml").read_text())
    (tmp_path / "host_vars").mkdir()
    # app1 on a tier of 4 vCPUs, app2 on one that says 0: it still runs one worker.
    (tmp_path / "host_vars" / "app1.yml").write_text("tier: {name: big, vcpus: 4, memory_mb: 8192}\n")
    (tmp_path / "host_vars" / "app2.yml").write_text("tier: {name: odd, vcpus: 0, memory_mb: 1024}\n")
    workers = [int(stack_value(host, "stack_app_workers", "-i", str(tmp_path))) for host in ("app1", "app2")]
    assert workers == [4, 1]
    budget = stack_value("db1", "{'pool': stack_app_db_pool_size, 'headroom': stack_db_connection_headroom, "
                                "'max': postgresql_max_connections}", "-i", str(tmp_path))
    assert int(budget["max"]) == sum(workers) * int(budget["pool"]) + int(budget["headroom"])
