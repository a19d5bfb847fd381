"""Filters over the app container as community.docker.docker_container_info returns it.

The port and the release a running app container has are read in two places: a converge
(tasks/app-active-ports.yml) keeps them, a deploy (tasks/release/plan.yml) changes them.
Both read them here, so the two cannot disagree.
"""

from __future__ import annotations


def container_env(container: dict, name: str, default=None):
    """The value of the environment variable `name` the container was started with, or
    `default` when it has none."""
    prefix = f"{name}="
    for item in ((container or {}).get("Config") or {}).get("Env") or []:
        if item.startswith(prefix):
            return item[len(prefix):]
    return default


def container_port(container: dict, default_port) -> int:
    """The port the app listens on in the container (its PORT; roles/app sets it)."""
    return int(container_env(container, "PORT", default_port))


class FilterModule:
    def filters(self):
        return {"app_container_env": container_env, "app_container_port": container_port}
