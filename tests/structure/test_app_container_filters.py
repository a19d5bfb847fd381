"""playbooks/filter_plugins/app_container.py: the one reading of a running app container's
port and release, shared by a converge (tasks/app-active-ports.yml) and a deploy
(tasks/release/plan.yml)."""

from __future__ import annotations

import importlib.util

from tests.awx.definitions import ROOT

_spec = importlib.util.spec_from_file_location("app_container", ROOT / "playbooks" / "filter_plugins" / "app_container.py")
app_container = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(app_container)


def container(*env: str) -> dict:
    return {"Config": {"Env": list(env), "Image": "payments-app:1.4.2"}}


def test_the_port_is_the_containers_port_variable():
    assert app_container.container_port(container("PATH=/usr/bin", "PORT=8001"), 8000) == 8001


def test_a_container_without_port_listens_on_the_default():
    assert app_container.container_port(container("PATH=/usr/bin"), "8000") == 8000
    assert app_container.container_port({"Config": {"Env": None}}, 8000) == 8000


def test_a_variable_is_matched_by_its_whole_name():
    env = container("APP_VERSION_LABEL=x", "APP_VERSION=1.4.2=rc")
    assert app_container.container_env(env, "APP_VERSION", "?") == "1.4.2=rc"
    assert app_container.container_env(container("APP_VERSIONS=2"), "APP_VERSION", "?") == "?"


def test_both_readers_use_the_filters():
    for path in ("playbooks/tasks/app-active-ports.yml", "playbooks/tasks/release/plan.yml"):
        text = (ROOT / path).read_text()
        assert "app_container_port(" in text and "'^PORT='" not in text, path
