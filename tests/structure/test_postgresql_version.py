"""The PostgreSQL major version is one fact: every package, binary, configuration and data
path of roles/postgresql, roles/pgbackrest and the playbooks derives from it. Rendered with
16 (Debian 12 has no PostgreSQL 16 to run), on the controller: nothing connects to a host."""

from __future__ import annotations

import pytest

from tests.awx.definitions import ROOT
from tests.structure.ansible_vars import debug_messages, stack_value


def role_paths(*extra: str) -> dict:
    return debug_messages(["ansible-playbook", "tests/structure/render-postgresql-paths.yml", *extra])[-1]


def stack_paths(*extra: str) -> dict:
    """The stack's paths on the lab's primary, from playbooks/group_vars."""
    return stack_value("db1", "{'version': stack_postgresql_version, 'bin_dir': stack_postgresql_bin_dir, "
                              "'data_dir': stack_postgresql_data_dir, 'scratch': stack_postgresql_scratch_path, "
                              "'unit': stack_postgresql_unit, 'pgbackrest_pg_version': pgbackrest_pg_version, "
                              "'pgbackrest_pg_path': pgbackrest_pg_path}", *extra)


@pytest.mark.parametrize("version", ["15", "16"])
def test_every_path_of_the_roles_derives_from_the_version(version):
    paths = role_paths("-e", f"postgresql_version={version}", "-e", f"pgbackrest_pg_version={version}")
    assert paths == {
        "packages": [f"postgresql-{version}", f"postgresql-client-{version}"],
        "bin_dir": f"/usr/lib/postgresql/{version}/bin",
        "conf_dir": f"/etc/postgresql/{version}/main",
        "data_dir": f"/var/lib/postgresql/{version}/main",
        "service": f"postgresql@{version}-main",
        "pgbackrest_pg_path": f"/var/lib/postgresql/{version}/main",
    }


def test_the_stack_default_is_the_roles_default():
    assert stack_paths()["version"] == role_paths()["service"].removeprefix("postgresql@").removesuffix("-main")


def test_one_line_in_the_inventory_moves_every_path_of_the_stack_to_another_version(tmp_path):
    # The lab's hosts, and the one line an operator writes in the inventory's group_vars/all.
    (tmp_path / "hosts.yml").write_text((ROOT / "inventories" / "lab" / "hosts.yml").read_text())
    (tmp_path / "group_vars" / "all").mkdir(parents=True)
    (tmp_path / "group_vars" / "all" / "postgresql.yml").write_text('postgresql_version: "16"\n')
    assert stack_paths("-i", str(tmp_path)) == {
        "version": "16",
        "bin_dir": "/usr/lib/postgresql/16/bin",
        "data_dir": "/var/lib/postgresql/16/main",
        "scratch": "/var/lib/postgresql/16/scratch",
        "unit": "postgresql@16-main",
        "pgbackrest_pg_version": "16",
        "pgbackrest_pg_path": "/var/lib/postgresql/16/main",
    }
