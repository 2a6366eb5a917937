"""The gateway's peers over gRPC; a failed call comes back as our MeshError with the peer's details."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

import grpc

from agentmesh.common.v1 import common_pb2
from agentmesh.executor.v1 import executor_pb2, executor_service_pb2, executor_service_pb2_grpc
from agentmesh.memory.v1 import memory_service_pb2, memory_service_pb2_grpc
from agentmesh.planner.v1 import planner_service_pb2, planner_service_pb2_grpc
from agentmesh.registry.v1 import registry_pb2, registry_service_pb2, registry_service_pb2_grpc
from mesh import client
from mesh.errors import MeshError, details_of, from_details
from mesh.principal import Principal

T = TypeVar("T")


def _error(err: grpc.aio.AioRpcError, peer: str) -> MeshError:
    failure = from_details(details_of(err))
    if not failure.message:
        failure.message = f"{peer}: {err.code().name}"
    return failure


async def _stream(call: Any, peer: str) -> AsyncIterator[Any]:
    try:
        async for item in call:
            yield item
    except grpc.aio.AioRpcError as err:
        raise _error(err, peer) from None
    finally:
        call.cancel()


class Peers:
    """Stubs over one channel per peer; the principal travels in metadata, the timeout is the caller's budget."""

    def __init__(self, registry: str, memory: str, planner: str, executor: str) -> None:
        self._channels = [client.channel(a) for a in (registry, memory, planner, executor)]
        self.registry = registry_service_pb2_grpc.RegistryServiceStub(self._channels[0])
        self.memory = memory_service_pb2_grpc.MemoryServiceStub(self._channels[1])
        self.planner = planner_service_pb2_grpc.PlannerServiceStub(self._channels[2])
        self.executor = executor_service_pb2_grpc.ExecutorServiceStub(self._channels[3])

    async def close(self) -> None:
        for chan in self._channels:
            await chan.close()

    # --- registry ----------------------------------------------------------------------------------------------
    async def resolve_person(self, who: Principal, query: str, timeout_s: float) -> common_pb2.Person:
        try:
            answer = await self.registry.ResolvePerson(registry_service_pb2.ResolvePersonRequest(query=query),
                                                       metadata=client.metadata(who), timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _error(err, "registry") from None
        return answer.person

    async def list_people(self, who: Principal, timeout_s: float) -> list[common_pb2.Person]:
        try:
            answer = await self.registry.ListPeople(registry_service_pb2.ListPeopleRequest(),
                                                    metadata=client.metadata(who), timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _error(err, "registry") from None
        return list(answer.people)

    async def list_tools(self, who: Principal, timeout_s: float) -> registry_service_pb2.ListToolsResponse:
        try:
            return await self.registry.ListTools(registry_service_pb2.ListToolsRequest(),
                                                 metadata=client.metadata(who), timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _error(err, "registry") from None

    async def get_tenant(self, operator: Principal, tenant: str, timeout_s: float) -> registry_pb2.Tenant:
        try:
            answer = await self.registry.GetTenant(registry_service_pb2.GetTenantRequest(tenant_id=tenant),
                                                   metadata=client.metadata(operator), timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _error(err, "registry") from None
        return answer.tenant

    async def audit(self, who: Principal, event: registry_pb2.AuditEvent, timeout_s: float) -> None:
        try:
            await self.registry.AppendAuditEvent(registry_service_pb2.AppendAuditEventRequest(event=event),
                                                 metadata=client.metadata(who), timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _error(err, "registry") from None

    # --- memory ------------------------------------------------------------------------------------------------
    async def build_context(self, who: Principal, request: memory_service_pb2.BuildContextRequest,
                            timeout_s: float) -> memory_service_pb2.BuildContextResponse:
        try:
            return await self.memory.BuildContext(request, metadata=client.metadata(who), timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _error(err, "memory") from None

    async def append_turn(self, who: Principal, session_id: str, turn: common_pb2.Turn, timeout_s: float) -> None:
        try:
            await self.memory.AppendTurn(memory_service_pb2.AppendTurnRequest(session_id=session_id, turn=turn),
                                         metadata=client.metadata(who), timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _error(err, "memory") from None

    async def record_run(self, who: Principal, request: memory_service_pb2.RecordRunRequest,
                         timeout_s: float) -> None:
        try:
            await self.memory.RecordRun(request, metadata=client.metadata(who), timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _error(err, "memory") from None

    # --- planner -----------------------------------------------------------------------------------------------
    def plan(self, who: Principal, request: planner_service_pb2.PlanRequest,
             timeout_s: float) -> AsyncIterator[planner_service_pb2.PlanResponse]:
        return _stream(self.planner.Plan(request, metadata=client.metadata(who), timeout=timeout_s), "planner")

    def respond(self, who: Principal, request: planner_service_pb2.RespondRequest,
                timeout_s: float) -> AsyncIterator[planner_service_pb2.RespondResponse]:
        return _stream(self.planner.Respond(request, metadata=client.metadata(who), timeout=timeout_s), "planner")

    # --- executor ----------------------------------------------------------------------------------------------
    def execute(self, who: Principal, request: executor_service_pb2.ExecuteRequest,
                timeout_s: float) -> AsyncIterator[executor_service_pb2.ExecuteResponse]:
        return _stream(self.executor.Execute(request, metadata=client.metadata(who), timeout=timeout_s), "executor")

    async def confirm(self, who: Principal, request: executor_service_pb2.ConfirmStepRequest,
                      timeout_s: float) -> AsyncIterator[executor_service_pb2.ExecuteResponse]:
        call = self.executor.ConfirmStep(request, metadata=client.metadata(who), timeout=timeout_s)
        async for item in _stream(call, "executor"):
            yield item.event

    async def get_run(self, who: Principal, run_id: str, timeout_s: float) -> executor_pb2.Run:
        try:
            answer = await self.executor.GetRun(executor_service_pb2.GetRunRequest(run_id=run_id),
                                                metadata=client.metadata(who), timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _error(err, "executor") from None
        return answer.run
