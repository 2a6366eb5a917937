"""The gateway's typed configuration (`AGENTMESH_*`): peers, deadlines, caches, the Slack app."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from mesh.config import MeshConfig


class GatewayConfig(MeshConfig):
    """Settings of the gateway; redis_url, database_url and database_admin_url come from MeshConfig."""

    registry_addr: str | None = Field(default=None, description="registry host:port (required)")
    memory_addr: str | None = Field(default=None, description="memory host:port (required)")
    planner_addr: str | None = Field(default=None, description="planner host:port (required)")
    executor_addr: str | None = Field(default=None, description="executor host:port (required)")
    signing_keys_dir: Path | None = Field(default=None, description="key ring the gateway mints principals with; "
                                                                    "default <state_dir>/keys")
    request_timeout_s: float = Field(default=5.0, gt=0, le=300,
                                     description="a request's deadline when its tenant sets none")
    context_budget_tokens: int = Field(default=2000, gt=0, description="token budget of the planner's context")
    max_replans: int = Field(default=2, ge=0, le=5, description="re-plan rounds the executor may take")
    key_cache_ttl_s: float = Field(default=60.0, ge=0, description="how long a verified API key is cached")
    directory_cache_ttl_s: float = Field(default=60.0, ge=0,
                                         description="how long a user's directory entry (groups) is cached")
    tenant_cache_ttl_s: float = Field(default=30.0, ge=0, description="how long tenant settings are cached")
    tools_cache_ttl_s: float = Field(default=15.0, ge=0, description="how long a permission set's tools are cached")
    run_log_ttl_s: float = Field(default=3600.0, gt=0, description="how long a run's events stay re-attachable")
    background_timeout_s: float = Field(default=5.0, gt=0,
                                        description="deadline of after-the-answer work: turns, run summary, audit")
    max_request_chars: int = Field(default=4000, gt=0, description="longest request text accepted")
    max_in_flight: int = Field(default=256, gt=0, description="open Converse streams per gateway process; beyond, "
                                                               "requests are refused at once with OVERLOADED")
    pool_size: int = Field(default=10, description="PostgreSQL connections of the app role")
    secret_key: SecretStr | None = Field(default=None, description="Fernet key of stored Slack bot tokens; default: "
                                                                   "a key file generated under state_dir")
    # The Slack app: HTTP Events API on slack_port (unset: off), Socket Mode when slack_app_token is set.
    slack_signing_secret: SecretStr | None = Field(default=None, description="the Slack app's signing secret")
    slack_app_token: SecretStr | None = Field(default=None, description="xapp- token: turns Socket Mode on")
    slack_port: int | None = Field(default=None, description="HTTP port of the Events API endpoint; 0 picks one")
    slack_api_url: str = Field(default="https://slack.com/api/", description="Slack Web API base URL")
    slack_update_interval_s: float = Field(default=1.0, ge=0, description="least time between two chat.update "
                                                                          "calls of one progress message")

    @property
    def keys_dir(self) -> Path:
        return self.signing_keys_dir or self.state_dir / "keys"

    @property
    def slack_enabled(self) -> bool:
        return self.slack_signing_secret is not None and (self.slack_port is not None
                                                          or self.slack_app_token is not None)
