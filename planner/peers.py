"""The registry as the planner's peer: each tenant's model settings (GetTenant with the caller's principal, cached)."""

from __future__ import annotations

import logging
import time

import grpc

from agentmesh.registry.v1 import registry_service_pb2, registry_service_pb2_grpc
from mesh import client
from mesh.principal import Principal
from planner.config import ModelLimits
from planner.convert import to_dict
from planner.models.tenants import TenantModels, from_policy

log = logging.getLogger("agentmesh.planner")


class RegistryTenants:
    """TenantSettings from RegistryService.GetTenant: the policy's `model_tiers` (and `model_limits` when set),
    cached for `ttl_s`. When the registry cannot be reached, the last settings fetched are used, and failing that
    the embedded planner alone (logged): planning never depends on the registry being up."""

    def __init__(self, address: str, timeout_s: float, ttl_s: float, defaults: ModelLimits) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.defaults = defaults
        self._channel = client.channel(address)
        self._stub = registry_service_pb2_grpc.RegistryServiceStub(self._channel)
        self._cache: dict[str, tuple[float, TenantModels]] = {}

    async def get(self, principal: Principal, timeout_s: float) -> TenantModels:
        cached = self._cache.get(principal.tenant)
        if cached is not None and time.monotonic() - cached[0] < self.ttl_s:
            return cached[1]
        try:
            response = await self._stub.GetTenant(registry_service_pb2.GetTenantRequest(tenant_id=principal.tenant),
                                                  metadata=client.metadata(principal),
                                                  timeout=max(min(self.timeout_s, timeout_s), 0.01))
        except grpc.aio.AioRpcError as err:
            log.warning("tenant model settings unavailable", extra={"fields": {
                "tenant": principal.tenant, "code": err.code().name, "registry": self.address}})
            return cached[1] if cached is not None else TenantModels({}, self.defaults)
        settings = from_policy(to_dict(response.tenant.policy), self.defaults)
        self._cache[principal.tenant] = (time.monotonic(), settings)
        return settings

    async def close(self) -> None:
        await self._channel.close()
