"""Typed configuration from the environment (`AGENTMESH_*`), with defaults in code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]


class MeshConfig(BaseSettings):
    """Settings every service shares. Services extend this class with their own fields."""

    model_config = SettingsConfigDict(env_prefix="AGENTMESH_", extra="ignore")

    state_dir: Path = Field(default=REPO_ROOT / ".state", description="local state: keys, endpoints, data")
    host: str = "127.0.0.1"
    port: int = 0
    metrics_port: int | None = Field(default=None, description="Prometheus HTTP port; unset disables, 0 picks one")
    jwks_path: Path | None = Field(default=None, description="JWKS file of the principal verification keys")
    jwks_url: str | None = Field(default=None, description="JWKS endpoint, instead of a file")
    log_level: str = "INFO"
    otel_exporter: str = Field(default="none", description="none | console | otlp")
    otel_endpoint: str = "http://127.0.0.1:4317"
    shutdown_grace_s: float = 10.0
    shutdown_notice_s: float = Field(default=1.0, description="NOT_SERVING is reported this long before draining")
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = Field(default="postgresql://agentmesh_app@127.0.0.1:5432/agentmesh",
                              description="what the service connects as (row-level security applies)")
    database_admin_url: str = Field(default="postgresql://postgres@127.0.0.1:5432/agentmesh",
                                    description="owner connection, used only to apply migrations at start")

    @property
    def resolved_jwks_path(self) -> Path:
        return self.jwks_path or self.state_dir / "keys" / "jwks.json"

    @property
    def endpoints_path(self) -> Path:
        return self.state_dir / "endpoints.json"


def require(value: str | None, variable: str) -> str:
    """A required peer address: fails at boot with a message naming the variable."""
    if not value:
        raise SystemExit(f"agentmesh: {variable} is required (the address of a peer service, host:port)")
    return value


def read_endpoints(state_dir: Path) -> dict[str, Any]:
    """The endpoints file `agentmesh up` writes: every service address, sandbox base URLs, the JWKS path."""
    path = state_dir / "endpoints.json"
    if not path.exists():
        raise SystemExit(f"agentmesh: {path} not found; start the stack with `agentmesh up`")
    data: dict[str, Any] = json.loads(path.read_text())
    return data
