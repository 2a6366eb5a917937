"""The conformance kit as a pytest plugin: `pytest -p connectors.conformance.pytest_plugin --conformance-target …`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mesh.principal import KeyRing, Minter

from .kit import Conformance, Profile


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("agentmesh-conformance")
    group.addoption("--conformance-target", help="HOST:PORT of the ConnectorService under test")
    group.addoption("--conformance-profile", type=Path, help="profile JSON (see connectors/README.md)")
    group.addoption("--conformance-keys", type=Path, help="key ring folder whose jwks.json the target trusts")


@pytest.fixture(scope="session")
def conformance_results(request: pytest.FixtureRequest) -> dict[str, tuple[bool, str]]:
    target = request.config.getoption("--conformance-target")
    if not target:
        pytest.skip("no --conformance-target given")
    profile = Profile.load(request.config.getoption("--conformance-profile"))
    minter = Minter(KeyRing(request.config.getoption("--conformance-keys")).ensure())
    results = asyncio.run(Conformance(target, profile, minter).run())
    return {r.name: (r.passed, r.detail) for r in results}


def test_conformance(conformance_results: dict[str, tuple[bool, str]]) -> None:
    failed = {name: detail for name, (ok, detail) in conformance_results.items() if not ok}
    assert not failed, "\n".join(f"{name}: {detail}" for name, detail in failed.items())
