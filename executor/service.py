"""ExecutorService: translates protos in and out of the executor's use cases (executor/app.py)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import grpc

from agentmesh.executor.v1 import executor_service_pb2, executor_service_pb2_grpc
from mesh import principal as principal_mod
from mesh.errors import MeshError, Reason
from mesh.server import OPERATOR_ONLY, USER_ONLY, ServiceSpec

from . import convert, plans
from .app import DOMAIN, ExecutorApp
from .model import Event
from .ports import LeaseLost

SERVICE_NAME = "agentmesh.executor.v1.ExecutorService"
_RUN_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_DEAD_LETTER_ID = re.compile(r"^dl-[0-9]{13}-[0-9a-f]{8}$")
MAX_REPLANS = 5
MAX_PAGE_SIZE = 500
Violations = list[tuple[str, str]]


def _run_id(value: str, required: bool = True) -> Violations:
    if not value:
        return [("run_id", "a run id is required")] if required else []
    if not _RUN_ID.match(value):
        return [("run_id", "1-128 letters, digits, '.', '_', ':' or '-'")]
    return []


def validate_execute(request: executor_service_pb2.ExecuteRequest) -> Violations:
    out = _run_id(request.run_id, required=False)
    if not 0 <= request.max_replans <= MAX_REPLANS:
        out.append(("max_replans", f"0 (the default, 2) to {MAX_REPLANS}"))
    if not request.HasField("plan"):
        out.append(("plan", "a plan is required"))
    else:
        out += plans.violations(convert.plan_from_proto(request.plan))
    return out


def validate_confirm(request: executor_service_pb2.ConfirmStepRequest) -> Violations:
    out = _run_id(request.run_id)
    if not request.step_id:
        out.append(("step_id", "the step awaiting confirmation is required"))
    return out


def validate_run(request: executor_service_pb2.GetRunRequest | executor_service_pb2.CancelRunRequest) -> Violations:
    return _run_id(request.run_id)


def validate_list_dead_letters(request: executor_service_pb2.ListDeadLettersRequest) -> Violations:
    out: Violations = []
    if not 0 <= request.page_size <= MAX_PAGE_SIZE:
        out.append(("page_size", f"0 (the default, 50) to {MAX_PAGE_SIZE}"))
    if request.page_token and not _DEAD_LETTER_ID.match(request.page_token):
        out.append(("page_token", "not a token this service returned"))
    return out


def validate_dead_letter_id(request: executor_service_pb2.GetDeadLetterRequest
                            | executor_service_pb2.ReplayDeadLetterRequest) -> Violations:
    if not _DEAD_LETTER_ID.match(request.dead_letter_id):
        return [("dead_letter_id", "a dead letter id, dl-<13 digits>-<8 hex>")]
    return []


class ExecutorServicer(executor_service_pb2_grpc.ExecutorServiceServicer):
    """The gRPC face of the executor; the principal (tenant, user) comes from the interceptor only."""

    def __init__(self, app: ExecutorApp, reserve_s: float) -> None:
        self.app = app
        self.reserve_s = reserve_s

    def _budget(self, context: grpc.aio.ServicerContext) -> float:
        """What a run may spend: the call's remaining deadline, less what is kept back to end the stream in time."""
        remaining = context.time_remaining() or 0.0
        return max(remaining - max(self.reserve_s, remaining * 0.1), 0.0)

    async def Execute(self, request: executor_service_pb2.ExecuteRequest,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[executor_service_pb2.ExecuteResponse]:
        p = principal_mod.current()
        run_id = request.run_id or p.run_id
        if not run_id:
            raise MeshError(Reason.VALIDATION_FAILED, "a run id is required (in the request or the principal)",
                            domain=DOMAIN, field_violations=[("run_id", "a run id is required")])
        if p.run_id and request.run_id and p.run_id != request.run_id:
            raise MeshError(Reason.VALIDATION_FAILED, "run_id differs from the run the principal was minted for",
                            domain=DOMAIN, field_violations=[("run_id", f"the principal is for run {p.run_id}")])
        events = await self.app.execute(p, run_id, request.request, convert.plan_from_proto(request.plan),
                                        request.max_replans or 2, self._budget(context), request.context)
        async for event in _followed(events):
            yield convert.event_proto(event)

    async def ConfirmStep(self, request: executor_service_pb2.ConfirmStepRequest,
                          context: grpc.aio.ServicerContext
                          ) -> AsyncIterator[executor_service_pb2.ConfirmStepResponse]:
        events = await self.app.confirm(principal_mod.current(), request.run_id, request.step_id, request.approved,
                                        self._budget(context))
        async for event in _followed(events):
            yield executor_service_pb2.ConfirmStepResponse(event=convert.event_proto(event))

    async def GetRun(self, request: executor_service_pb2.GetRunRequest,
                     context: grpc.aio.ServicerContext) -> executor_service_pb2.GetRunResponse:
        run = await self.app.get(principal_mod.current(), request.run_id, self._budget(context))
        return executor_service_pb2.GetRunResponse(run=convert.run_proto(run))

    async def CancelRun(self, request: executor_service_pb2.CancelRunRequest,
                        context: grpc.aio.ServicerContext) -> executor_service_pb2.CancelRunResponse:
        run = await self.app.cancel(principal_mod.current(), request.run_id, self._budget(context))
        return executor_service_pb2.CancelRunResponse(run=convert.run_proto(run))

    async def ListDeadLetters(self, request: executor_service_pb2.ListDeadLettersRequest,
                              context: grpc.aio.ServicerContext) -> executor_service_pb2.ListDeadLettersResponse:
        p = principal_mod.current()
        tenant = request.tenant_id
        if p.tenant != "*":
            if tenant and tenant != p.tenant:
                raise MeshError(Reason.POLICY_DENIED, f"this operator principal is for tenant {p.tenant}",
                                domain=DOMAIN, metadata={"rule": "operator tenant"})
            tenant = p.tenant
        size = request.page_size or 50
        entries = await self.app.store.find_dead_letters(tenant=tenant, before=request.page_token, limit=size + 1)
        page = entries[:size]
        token = page[-1].dead_letter_id if len(entries) > size else ""
        return executor_service_pb2.ListDeadLettersResponse(
            dead_letters=[convert.dead_letter_proto(e, None) for e in page], next_page_token=token)

    async def GetDeadLetter(self, request: executor_service_pb2.GetDeadLetterRequest,
                            context: grpc.aio.ServicerContext) -> executor_service_pb2.GetDeadLetterResponse:
        entry, run = await self.app.dead_letter(request.dead_letter_id)
        p = principal_mod.current()
        if p.tenant not in ("*", entry.tenant):
            raise MeshError(Reason.NOT_FOUND, f"no dead letter {request.dead_letter_id!r}", domain=DOMAIN)
        return executor_service_pb2.GetDeadLetterResponse(dead_letter=convert.dead_letter_proto(entry, run))

    async def ReplayDeadLetter(self, request: executor_service_pb2.ReplayDeadLetterRequest,
                               context: grpc.aio.ServicerContext
                               ) -> AsyncIterator[executor_service_pb2.ReplayDeadLetterResponse]:
        events = await self.app.replay(principal_mod.current(), request.dead_letter_id, self._budget(context))
        async for event in _followed(events):
            yield executor_service_pb2.ReplayDeadLetterResponse(event=convert.event_proto(event))


async def _followed(events: AsyncIterator[Event]) -> AsyncIterator[Event]:
    """A run's events; a run another executor took over ends the stream with UNAVAILABLE (Execute again follows
    it: the same run id shows how it ended)."""
    try:
        async for event in events:
            yield event
    except LeaseLost as err:
        raise MeshError(Reason.UPSTREAM_UNAVAILABLE, f"{err}; call Execute with the same run id to follow it",
                        domain=DOMAIN, retry_after_s=1.0) from None


KINDS = {"Execute": USER_ONLY, "ConfirmStep": USER_ONLY, "GetRun": USER_ONLY, "CancelRun": USER_ONLY,
         "ListDeadLetters": OPERATOR_ONLY, "GetDeadLetter": OPERATOR_ONLY, "ReplayDeadLetter": OPERATOR_ONLY}
VALIDATORS = {"Execute": validate_execute, "ConfirmStep": validate_confirm, "GetRun": validate_run,
              "CancelRun": validate_run, "ListDeadLetters": validate_list_dead_letters,
              "GetDeadLetter": validate_dead_letter_id, "ReplayDeadLetter": validate_dead_letter_id}


def executor_spec(app: ExecutorApp, reserve_s: float) -> ServiceSpec:
    return ServiceSpec(SERVICE_NAME, ExecutorServicer(app, reserve_s),
                       executor_service_pb2_grpc.add_ExecutorServiceServicer_to_server, kinds=KINDS,
                       validators=VALIDATORS)
