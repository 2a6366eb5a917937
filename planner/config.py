"""The planner service's typed configuration (`AGENTMESH_*`): model providers, limits, cache, breakers, peers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from mesh.config import MeshConfig


class ProviderSettings(BaseModel):
    """One model provider: `kind` says which SDK speaks to it; without an API key it is skipped.

    A self-hosted OpenAI-compatible server (vLLM, Ollama, llama.cpp, a LiteLLM proxy) is `kind: openai` with its
    `base_url` and any non-empty key (they ignore it); that is what marks it as configured.
    """

    kind: Literal["openai", "anthropic"]
    api_key: SecretStr | None = None
    base_url: str | None = None
    stream: bool = Field(default=True, description="stream tokens (false for servers without streamed tool calls)")
    timeout_s: float = Field(default=20.0, gt=0, description="one attempt's ceiling (the request budget may cut it)")
    max_output_tokens: int = Field(default=1500, ge=64)

    @property
    def configured(self) -> bool:
        return self.api_key is not None and bool(self.api_key.get_secret_value())


class ModelLimits(BaseModel):
    """A tenant's model limits: LLM calls per minute, tokens per UTC day, and what happens when one runs out."""

    requests_per_minute: int = Field(default=600, ge=0, description="LLM calls per tenant per minute (0: none)")
    daily_tokens: int = Field(default=2_000_000, ge=0, description="input+output tokens per tenant per UTC day")
    on_exhausted: Literal["reject", "downgrade"] = Field(
        default="reject", description="reject: RESOURCE_EXHAUSTED with RetryInfo; downgrade: use a cheaper tier")


class PlannerConfig(MeshConfig):
    """Settings of the planner service; redis_url and the JWKS come from MeshConfig."""

    registry_addr: str | None = Field(
        default=None, description="registry host:port: each tenant's model_tiers (GetTenant, cached); unset: "
                                  "tenants_file, or the embedded planner only")
    tenants_file: Path | None = Field(
        default=None, description="a policy.json-shaped file of tenants (model_tiers, model_limits) used when no "
                                  "registry is configured")
    tenant_settings_ttl_s: float = Field(default=30.0, ge=0, description="how long a tenant's model settings are "
                                                                          "cached")
    registry_timeout_s: float = Field(default=1.0, gt=0)
    model_providers: dict[str, ProviderSettings] = Field(
        default_factory=dict, description="named providers, JSON: {\"vllm\": {\"kind\": \"openai\", \"base_url\": "
                                          "\"http://gpu:8000/v1\", \"api_key\": \"x\"}}; tiers name them as "
                                          "<provider>:<model>")
    openai_api_key: SecretStr | None = Field(default=None, description="shorthand for the provider `openai`")
    openai_base_url: str | None = None
    anthropic_api_key: SecretStr | None = Field(default=None, description="shorthand for the provider `anthropic`")
    anthropic_base_url: str | None = None
    model_prices: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="extra prices, JSON {model: [usd per 1K input, usd per 1K output]}")
    model_limits: ModelLimits = Field(default_factory=ModelLimits, description="every tenant's default limits")
    plan_cache_ttl_s: int = Field(default=3600, ge=0, description="plan cache lifetime (0 disables the cache)")
    retry_attempts: int = Field(default=3, ge=1, description="attempts per provider call (retryable errors)")
    retry_base_s: float = Field(default=0.2, gt=0)
    retry_cap_s: float = Field(default=2.0, gt=0)
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_min_calls: int = Field(default=4, ge=1)
    breaker_window_s: float = Field(default=60.0, gt=0)
    breaker_cooldown_s: float = Field(default=15.0, gt=0)
    fallback_reserve_s: float = Field(default=0.3, ge=0, description="budget kept for the embedded planner when an "
                                                                      "LLM tier is tried")
    token_batch_chars: int = Field(default=48, ge=1, description="stream a token batch once it holds this much text")
    token_batch_ms: float = Field(default=40.0, ge=0, description="... or once this long has passed")
    max_prompt_tools: int = Field(default=24, ge=1, description="tools described to an LLM (the most relevant)")
    today: dt.date | None = Field(default=None, description="the date relative dates resolve against (default: "
                                                            "today, UTC)")

    def providers(self) -> dict[str, ProviderSettings]:
        """Every named provider, the `openai` / `anthropic` shorthands included."""
        found = dict(self.model_providers)
        if "openai" not in found and self.openai_api_key is not None:
            found["openai"] = ProviderSettings(kind="openai", api_key=self.openai_api_key,
                                               base_url=self.openai_base_url)
        if "anthropic" not in found and self.anthropic_api_key is not None:
            found["anthropic"] = ProviderSettings(kind="anthropic", api_key=self.anthropic_api_key,
                                                  base_url=self.anthropic_base_url)
        return found

    def resolved_today(self) -> dt.date:
        return self.today or dt.datetime.now(dt.UTC).date()
