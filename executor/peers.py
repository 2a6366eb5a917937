"""The ports over gRPC: RegistryService (Invoke, ListTools, ListPeople), PlannerService.Plan, MemoryService state."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import grpc

from agentmesh.common.v1 import common_pb2
from agentmesh.memory.v1 import memory_service_pb2, memory_service_pb2_grpc
from agentmesh.planner.v1 import planner_service_pb2, planner_service_pb2_grpc
from agentmesh.registry.v1 import registry_service_pb2, registry_service_pb2_grpc
from connectors.common import vendorwait  # the vendor-wait trailing metadata of the Invoke contract
from mesh import client
from mesh.errors import details_of
from mesh.principal import Principal

from . import convert
from .model import Effect, Plan, StepError
from .ports import (
    CatalogQuery,
    OutputsQuery,
    ReplanRequest,
    StepOutput,
    ToolCall,
    ToolFailure,
    ToolInfo,
    ToolReply,
)

_OUTPUT_PREFIX = "step:"  # working-state key of a step's output: step:<id>


def failure(err: grpc.aio.AioRpcError, default_reason: str) -> ToolFailure:
    """A failed call as the port's failure: the peer's code, ErrorInfo reason, metadata and RetryInfo."""
    details = details_of(err)
    code = details.code.name
    reason = details.reason or {"DEADLINE_EXCEEDED": "DEADLINE", "UNAVAILABLE": "UPSTREAM_UNAVAILABLE",
                                "CANCELLED": "CANCELLED"}.get(code, default_reason)
    message = details.message or code
    if details.field_violations:
        message += " (" + "; ".join(f"{f}: {d}" for f, d in details.field_violations) + ")"
    return ToolFailure(StepError(code, reason, message, dict(details.metadata), details.retry_after_s))


class RegistryInvoker:
    """ToolInvoker: RegistryService.Invoke as the run's principal, with the remaining budget as its deadline."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = registry_service_pb2_grpc.RegistryServiceStub(channel)

    async def invoke(self, call: ToolCall) -> ToolReply:
        request = registry_service_pb2.InvokeRequest(tool=call.tool, arguments=convert.struct(call.arguments),
                                                     idempotency_key=call.idempotency_key)
        try:
            response = await self.stub.Invoke(request, metadata=client.metadata(call.principal),
                                              timeout=call.timeout_s)
        except grpc.aio.AioRpcError as err:
            refused = failure(err, "INTERNAL")
            refused.vendor_wait_s = vendorwait.from_metadata(err.trailing_metadata())
            raise refused from None
        arguments = convert.to_dict(response.arguments) if response.HasField("arguments") else None
        waited = response.vendor_wait.ToNanoseconds() / 1e9 if response.HasField("vendor_wait") else None
        return ToolReply(convert.to_dict(response.result), response.summary, response.replayed, arguments, waited)


class RegistryCatalog:
    """ToolCatalog: RegistryService.ListTools, cached briefly per (tenant, user, groups) — a permission set."""

    def __init__(self, channel: grpc.aio.Channel, ttl_s: float = 30.0, max_entries: int = 10_000) -> None:
        self.stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._cache: dict[tuple[str, str, tuple[str, ...]], tuple[float, registry_service_pb2.ListToolsResponse]] = {}

    async def listing(self, principal: Principal, timeout_s: float) -> registry_service_pb2.ListToolsResponse:
        key = (principal.tenant, principal.user, tuple(sorted(principal.groups)))
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        try:
            response = await self.stub.ListTools(registry_service_pb2.ListToolsRequest(),
                                                 metadata=client.metadata(principal), timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            raise failure(err, "UPSTREAM_UNAVAILABLE") from None
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[key] = (time.monotonic() + self.ttl_s, response)
        return response

    async def tools(self, query: CatalogQuery) -> Mapping[str, ToolInfo]:
        listing = await self.listing(query.principal, query.timeout_s)
        return {t.name: ToolInfo(Effect.WRITE if t.effect == common_pb2.EFFECT_WRITE else Effect.READ,
                                 t.confirm_before) for t in listing.tools}


class PlannerReplanner:
    """Replanner: PlannerService.Plan with the previous plan and the observations, reading the stream to its plan."""

    def __init__(self, planner: grpc.aio.Channel, registry: grpc.aio.Channel, catalog: RegistryCatalog) -> None:
        self.planner = planner_service_pb2_grpc.PlannerServiceStub(planner)
        self.registry = registry_service_pb2_grpc.RegistryServiceStub(registry)
        self.catalog = catalog

    async def replan(self, request: ReplanRequest) -> Plan:
        deadline = time.monotonic() + request.timeout_s
        listing = await self.catalog.listing(request.principal, request.timeout_s)
        metadata = client.metadata(request.principal)
        try:
            people = await self.registry.ListPeople(registry_service_pb2.ListPeopleRequest(), metadata=metadata,
                                                    timeout=max(deadline - time.monotonic(), 0.001))
            context = request.context if isinstance(request.context, common_pb2.Context) else common_pb2.Context()
            plan_request = planner_service_pb2.PlanRequest(
                request=request.request, tools=listing.tools, denied_tools=listing.denied_tools, context=context,
                people=people.people, previous_plan=convert.plan_proto(request.previous_plan),
                observations=[convert.step_result(s) for s in request.observations],
                tools_fingerprint=listing.fingerprint)
            stream = self.planner.Plan(plan_request, metadata=metadata,
                                       timeout=max(deadline - time.monotonic(), 0.001))
            async for event in stream:
                if event.HasField("plan"):
                    stream.cancel()
                    return convert.plan_from_proto(event.plan)
        except grpc.aio.AioRpcError as err:
            raise failure(err, "UPSTREAM_UNAVAILABLE") from None
        raise ToolFailure(StepError("UNAVAILABLE", "UPSTREAM_UNAVAILABLE", "the planner ended without a plan"))


class MemoryWorkingMemory:
    """WorkingMemory: MemoryService working state (Redis, 1 h TTL), one key per step output."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = memory_service_pb2_grpc.MemoryServiceStub(channel)

    async def put(self, output: StepOutput) -> None:
        values: dict[str, Any] = {f"{_OUTPUT_PREFIX}{output.step_id}": output.output}
        try:
            await self.stub.UpdateWorkingState(
                memory_service_pb2.UpdateWorkingStateRequest(run_id=output.run_id, values=convert.struct(values)),
                metadata=client.metadata(output.principal), timeout=output.timeout_s)
        except grpc.aio.AioRpcError as err:
            raise failure(err, "UPSTREAM_UNAVAILABLE") from None

    async def outputs(self, query: OutputsQuery) -> dict[str, Any]:
        try:
            response = await self.stub.GetWorkingState(
                memory_service_pb2.GetWorkingStateRequest(run_id=query.run_id),
                metadata=client.metadata(query.principal), timeout=query.timeout_s)
        except grpc.aio.AioRpcError as err:
            raise failure(err, "UPSTREAM_UNAVAILABLE") from None
        state = convert.to_dict(response.state)
        return {k.removeprefix(_OUTPUT_PREFIX): v for k, v in state.items() if k.startswith(_OUTPUT_PREFIX)}
