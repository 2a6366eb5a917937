"""The memory service's typed configuration (`AGENTMESH_*`): TTLs, embeddings, context assembly, peers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from mesh.config import MeshConfig


class MemoryConfig(MeshConfig):
    """Settings of the memory service; redis_url, database_url and database_admin_url come from MeshConfig."""

    registry_addr: str | None = Field(default=None, description="registry host:port: tenant memory TTLs and the "
                                                                "ForgetUser audit row; unset: defaults, no audit")
    redis_cluster: bool = Field(default=False, description="connect to redis_url as a Redis Cluster")
    session_ttl_s: float = Field(default=24 * 3600.0, description="session lifetime, refreshed on every append")
    session_max_turns: int = Field(default=200, ge=2, description="turns kept per session (oldest dropped)")
    working_state_ttl_s: float = Field(default=3600.0, description="run working-state lifetime, refreshed on update")
    memory_ttl_s: float = Field(default=90 * 86400.0, description="long-term fact lifetime when the tenant sets none")
    tenant_settings_ttl_s: float = Field(default=60.0, description="how long a tenant's memory TTL is cached")
    purge_interval_s: float = Field(default=600.0, description="how often expired facts are deleted (0: never)")
    embedding_provider: Literal["local", "openai"] = Field(
        default="local", description="local: all-MiniLM-L6-v2 on CPU; openai: the OpenAI embeddings API")
    openai_base_url: str | None = Field(default=None, description="OpenAI-compatible API base URL (…/v1)")
    openai_api_key: SecretStr | None = None
    openai_embedding_model: str = "text-embedding-3-small"
    openai_embedding_dimensions: int = Field(default=1536, gt=0, le=16000)
    openai_timeout_s: float = 5.0
    summarizer: Literal["extractive", "openai"] = Field(
        default="extractive", description="how older turns are condensed: extractive, or the OpenAI-compatible "
                                          "chat model openai_summary_model (extractive when it fails)")
    openai_summary_model: str = "gpt-4o-mini"
    openai_summary_timeout_s: float = Field(default=3.0, description="a slower summary falls back to extractive")
    recall_top_k: int = Field(default=5, gt=0, le=100, description="facts returned by Recall when top_k is 0")
    context_top_k: int = Field(default=5, ge=0, le=50, description="facts BuildContext considers")
    context_min_score: float = Field(default=0.25, description="cosine similarity below which a fact is left out")
    registry_timeout_s: float = Field(default=2.0, description="timeout of a registry call")
