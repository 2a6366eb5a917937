"""The registry as memory's peer: each tenant's memory TTL (cached) and the ForgetUser audit row."""

from __future__ import annotations

import logging
import time

import grpc
from google.protobuf import struct_pb2

from agentmesh.registry.v1 import registry_pb2, registry_service_pb2, registry_service_pb2_grpc
from mesh import client
from mesh.errors import details_of, from_details
from mesh.principal import Principal

log = logging.getLogger("agentmesh.memory")


class RegistryPeer:
    """Calls the registry with the caller's principal; every call states its timeout."""

    def __init__(self, address: str, timeout_s: float, settings_ttl_s: float) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.settings_ttl_s = settings_ttl_s
        self._channel = client.channel(address)
        self._stub = registry_service_pb2_grpc.RegistryServiceStub(self._channel)
        self._ttls: dict[str, tuple[float, float | None]] = {}  # tenant -> (fetched at, memory TTL seconds)

    async def memory_ttl_s(self, principal: Principal, timeout_s: float) -> float | None:
        """The tenant's memory TTL in seconds (None: the tenant sets none). When the registry cannot be reached the
        last value fetched is used, and failing that None; a warning is logged."""
        cached = self._ttls.get(principal.tenant)
        if cached is not None and time.monotonic() - cached[0] < self.settings_ttl_s:
            return cached[1]
        try:
            response = await self._stub.GetTenant(
                registry_service_pb2.GetTenantRequest(tenant_id=principal.tenant),
                metadata=client.metadata(principal), timeout=min(self.timeout_s, timeout_s))
        except grpc.aio.AioRpcError as err:
            log.warning("tenant settings unavailable", extra={"fields": {
                "tenant": principal.tenant, "code": err.code().name, "registry": self.address}})
            return cached[1] if cached is not None else None
        ttl = response.tenant.memory_ttl.ToTimedelta().total_seconds() if response.tenant.HasField("memory_ttl") \
            else 0.0
        value = ttl if ttl > 0 else None
        self._ttls[principal.tenant] = (time.monotonic(), value)
        return value

    async def audit_forget_user(self, principal: Principal, tenant: str, user: str, counts: dict[str, int],
                                timeout_s: float) -> str:
        """Appends the `forget_user` audit row; a failure is raised as a MeshError so the caller retries."""
        detail = struct_pb2.Struct()
        detail.update({name: float(value) for name, value in counts.items()})
        acting = principal.user if principal.user != user else ""
        event = registry_pb2.AuditEvent(tenant_id=tenant, user=user, acting_identity=acting, kind="forget_user",
                                        outcome="ok", code="OK", request_id=principal.request_id,
                                        run_id=principal.run_id, detail=detail)
        try:
            response = await self._stub.AppendAuditEvent(
                registry_service_pb2.AppendAuditEventRequest(event=event), metadata=client.metadata(principal),
                timeout=min(self.timeout_s, timeout_s))
        except grpc.aio.AioRpcError as err:
            raise from_details(details_of(err)) from None
        return str(response.id)

    async def close(self) -> None:
        await self._channel.close()
