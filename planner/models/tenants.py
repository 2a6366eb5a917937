"""A tenant's model settings: `model_tiers` (fast/mid/power → provider:model) and limits, from its policy document."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from mesh.principal import Principal
from planner.config import ModelLimits

log = logging.getLogger("agentmesh.planner")
EMBEDDED = "embedded"


@dataclass(frozen=True)
class TenantModels:
    """Which model serves each tier for a tenant, and the tenant's model limits."""

    tiers: Mapping[str, str] = field(default_factory=dict)
    limits: ModelLimits = field(default_factory=ModelLimits)


def from_policy(document: Mapping[str, Any] | None, defaults: ModelLimits) -> TenantModels:
    """Settings from a policy document (fixtures/policy.json shape): `model_tiers`, optional `model_limits`."""
    document = document or {}
    tiers = {str(k): str(v) for k, v in (document.get("model_tiers") or {}).items() if not str(k).startswith("_")}
    limits = defaults
    overrides = document.get("model_limits")
    if isinstance(overrides, Mapping):
        try:
            limits = ModelLimits.model_validate({**defaults.model_dump(), **overrides})
        except ValidationError as err:
            log.warning("ignoring invalid model_limits", extra={"fields": {"error": str(err)}})
    return TenantModels(tiers, limits)


class TenantSettings(Protocol):
    """Where the planner reads a tenant's model settings."""

    async def get(self, principal: Principal, timeout_s: float) -> TenantModels: ...

    async def close(self) -> None: ...


class StaticTenants:
    """Settings from a policy.json-shaped mapping (tenant → policy); unknown tenants use the embedded planner only."""

    def __init__(self, policies: Mapping[str, Mapping[str, Any]], defaults: ModelLimits) -> None:
        self._settings = {tenant: from_policy(policy, defaults) for tenant, policy in policies.items()
                          if not tenant.startswith("_") and isinstance(policy, Mapping)}
        self._default = TenantModels({}, defaults)

    @classmethod
    def from_file(cls, path: Path, defaults: ModelLimits) -> StaticTenants:
        return cls(json.loads(path.read_text()), defaults)

    async def get(self, principal: Principal, timeout_s: float) -> TenantModels:
        return self._settings.get(principal.tenant, self._default)

    async def close(self) -> None:
        return None
