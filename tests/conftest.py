"""Session fixtures shared by every tier: signing keys, a principal minter, mesh config."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.config import MeshConfig
from mesh.principal import KeyRing, Minter, Verifier


@pytest.fixture(scope="session")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    return KeyRing(tmp_path_factory.mktemp("keys")).ensure()


@pytest.fixture(scope="session")
def minter(keyring: KeyRing) -> Minter:
    return Minter(keyring)


@pytest.fixture(scope="session")
def verifier(keyring: KeyRing) -> Verifier:
    return Verifier(jwks_path=keyring.jwks_path)


@pytest.fixture(scope="session")
def mesh_config(keyring: KeyRing, tmp_path_factory: pytest.TempPathFactory) -> MeshConfig:
    state: Path = tmp_path_factory.mktemp("state")
    return MeshConfig(state_dir=state, jwks_path=keyring.jwks_path, port=0)


@pytest.fixture(scope="session")
def backing(tmp_path_factory: pytest.TempPathFactory):
    """A real redis-server and PostgreSQL 16 + pgvector for the whole test session."""
    from mesh.backing import start_backing

    services = start_backing(tmp_path_factory.mktemp("backing"))
    yield services
    services.stop()
