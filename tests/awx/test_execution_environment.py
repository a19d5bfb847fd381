"""execution-environment.yml: `ansible-builder create` writes a build context whose
Containerfile installs the collections of requirements.yml, the Python packages the
controller needs and the ansible-core and ansible-runner the tests run. The image itself is
not built here: that needs its base image and a container engine (README, "AWX and CI")."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.awx.definitions import ROOT

DEFINITION = ROOT / "execution-environment.yml"


def dev_pin(name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==(\S+)$", (ROOT / "requirements-dev.txt").read_text(), re.M)
    assert match, f"{name} is not pinned in requirements-dev.txt"
    return match[1]


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ee") / "context"
    result = subprocess.run(
        ["ansible-builder", "create", "-f", str(DEFINITION), "-c", str(out), "--output-filename", "Containerfile"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"ansible-builder create failed:\n{result.stdout}\n{result.stderr}"
    return out


def test_definition_is_schema_version_3_with_a_base_image_default():
    definition = yaml.safe_load(DEFINITION.read_text())
    assert definition["version"] == 3
    assert definition["images"]["base_image"]["name"]


def test_containerfile_takes_the_base_image_as_a_build_arg(context):
    containerfile = (context / "Containerfile").read_text()
    base = yaml.safe_load(DEFINITION.read_text())["images"]["base_image"]["name"]
    assert f'ARG EE_BASE_IMAGE="{base}"' in containerfile
    assert "FROM $EE_BASE_IMAGE AS base" in containerfile


def test_containerfile_installs_the_collections_of_requirements_yml(context):
    containerfile = (context / "Containerfile").read_text()
    assert re.search(r"ansible-galaxy collection install .*-r requirements\.yml", containerfile)
    wanted = yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]
    copied = yaml.safe_load((context / "_build" / "requirements.yml").read_text())["collections"]
    assert copied == wanted
    names = {c["name"] for c in copied}
    assert {"awx.awx", "community.crypto", "community.docker", "community.general", "community.postgresql",
            "ansible.posix"} <= names


def test_containerfile_installs_the_python_the_controller_needs(context):
    containerfile = (context / "Containerfile").read_text()
    assert "COPY _build/requirements.txt requirements.txt" in containerfile
    python = (context / "_build" / "requirements.txt").read_text().split()
    assert any(re.fullmatch(r"cryptography==[\d.]+", line) for line in python), python
    refs = re.search(r'^ARG ANSIBLE_INSTALL_REFS="([^"]*)"', containerfile, re.M)[1].split()
    # The same ansible-core and ansible-runner as the tests and the lab.
    assert sorted(refs) == sorted([f"ansible-core=={dev_pin('ansible-core')}", f"ansible-runner=={dev_pin('ansible-runner')}"])
    bindep = (context / "_build" / "bindep.txt").read_text()
    assert "openssh-clients" in bindep


def installed_collection_version(name: str) -> str:
    namespace, collection = name.split(".")
    spec = importlib.util.find_spec("ansible_collections")
    for location in spec.submodule_search_locations:
        manifest = Path(location) / namespace / collection / "MANIFEST.json"
        if manifest.is_file():
            return json.loads(manifest.read_text())["collection_info"]["version"]
    raise AssertionError(f"{name} is not installed with the ansible package")


def test_requirements_yml_pins_the_collections_the_tests_run():
    """The EE (and an AWX project) gets what the tests, lint and the lab ran: the versions
    bundled in the pinned ansible package."""
    for collection in yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]:
        assert collection["version"] == installed_collection_version(collection["name"]), collection
