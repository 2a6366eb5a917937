"""docker-compose.yml and the Dockerfile describe every service of DESIGN.md with what each one requires."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mesh.stack import SERVICES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose (Debian's package) is required: make setup installs it"
    out = subprocess.run([binary, "-f", str(ROOT / "docker-compose.yml"), "config"], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return yaml.safe_load(out)


def test_compose_file_is_valid_and_has_every_service(compose) -> None:
    names = set(compose["services"])
    assert {"redis", "postgres", "vault"} <= names
    assert {s.name for s in SERVICES} <= names


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_every_required_variable_is_set(compose, service) -> None:
    spec = compose["services"][service.name]
    env = spec.get("environment") or {}
    missing = [v for v in service.requires if not env.get(v)]
    assert not missing, f"{service.name} lacks {missing}"
    assert spec["command"][-1] == service.module
    assert "mesh.healthcheck" in " ".join(spec["healthcheck"]["test"])


def test_dockerfile_copies_every_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for package in ("gen", "mesh", "connectors", "planner", "executor", "memory", "gateway"):
        assert f"COPY {package} ./{package}" in text
