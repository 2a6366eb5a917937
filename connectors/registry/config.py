"""The registry's typed configuration (`AGENTMESH_*`): database, secret store, OAuth callback, manifest watch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr

from mesh.config import MeshConfig


class RegistryConfig(MeshConfig):
    """Settings of the registry service; database_url / database_admin_url come from MeshConfig."""

    secret_store: Literal["embedded", "vault"] = Field(
        default="embedded", description="embedded: Fernet-encrypted rows in PostgreSQL; vault: HashiCorp Vault KV v2")
    secret_key: SecretStr | None = Field(
        default=None, description="the embedded store's Fernet key; default: a key file generated under state_dir")
    vault_url: str = "http://127.0.0.1:8200"
    vault_token: SecretStr | None = None
    vault_mount: str = Field(default="secret", description="the KV v2 mount point")
    vault_prefix: str = Field(default="agentmesh", description="path prefix: <prefix>/<tenant>/<connector>/<subject>")
    vault_timeout_s: float = 5.0
    public_url: str = Field(default="", description="base URL of the OAuth callback as the user's browser reaches it; "
                                                     "default http://<host>:<callback_port>")
    callback_port: int | None = Field(default=0, description="HTTP port of the OAuth callback; 0 picks one, "
                                                             "unset disables it (CompleteAccountLink still works)")
    catalog_path: Path | None = Field(default=None, description="JSON list of catalog tool specs offered as denied "
                                                                "tools; default: the manifests shipped in connectors/")
    signing_keys_dir: Path | None = Field(default=None, description="key ring the registry signs its own operator "
                                                                    "principal with (manifest watch); default "
                                                                    "<state_dir>/keys when it exists")
    watch_interval_s: float = Field(default=15.0, description="how often connector health and versions are checked")
    connector_timeout_s: float = Field(default=3.0, description="timeout of Describe and health checks")
    idempotency_ttl_s: float = Field(default=48 * 3600.0, ge=24 * 3600.0,
                                     description="how long idempotency records are kept (at least 24 h)")
    link_state_ttl_s: float = Field(default=900.0, description="how long an account-link URL stays valid")
    refresh_margin_s: float = Field(default=120.0, description="refresh a user token this long before it expires")
    oauth_timeout_s: float = 5.0
    audit_months_ahead: int = Field(default=3, description="monthly audit partitions created ahead of time")
    pool_size: int = Field(default=20, description="PostgreSQL connections of the app role")
    reserve_s: float = Field(default=0.05, description="deadline kept back from a connector call for bookkeeping")

    @property
    def registry_dir(self) -> Path:
        return self.state_dir / "registry"

    def fernet_key(self) -> bytes:
        """The embedded store's key: from config, else a key file created (0600) on first use."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.registry_dir / "secret.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process created it first
            else:
                with os.fdopen(fd, "wb") as out:
                    out.write(Fernet.generate_key())
        return path.read_bytes().strip()

    @property
    def resolved_signing_keys_dir(self) -> Path | None:
        folder = self.signing_keys_dir or self.state_dir / "keys"
        return folder if (folder / "current").exists() else None
