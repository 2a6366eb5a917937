"""PlannerService: protos in and out around the planner and the responder; tenant and user from the principal."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import grpc
from google.protobuf import duration_pb2

from agentmesh.planner.v1 import planner_service_pb2, planner_service_pb2_grpc
from mesh import principal as principal_mod
from mesh.errors import MeshError, Reason
from mesh.principal import Principal
from mesh.server import ANY_KIND, ServiceSpec
from planner import convert
from planner.answering import Responder
from planner.model import AnswerInput, Deadline, TokenBatch
from planner.models.limits import Exhausted
from planner.models.tenants import TenantSettings
from planner.models.types import ModelWait
from planner.planning import Planner

DOMAIN = "agentmesh.planner"
MAX_REQUEST_CHARS = 8000
_TOOL_NAME = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")
_DEFAULT_DEADLINE_S = 5.0
_SETTINGS_SHARE = 0.2  # at most this share of the remaining budget goes to fetching tenant settings


def _request_violations(text: str, field: str) -> list[tuple[str, str]]:
    if not text.strip():
        return [(field, "the request is empty")]
    if len(text) > MAX_REQUEST_CHARS:
        return [(field, f"at most {MAX_REQUEST_CHARS} characters")]
    return []


def validate_plan_request(request: planner_service_pb2.PlanRequest) -> list[tuple[str, str]]:
    out = _request_violations(request.request, "request")
    seen: set[str] = set()
    for i, tool in enumerate(request.tools):
        if not _TOOL_NAME.match(tool.name):
            out.append((f"tools[{i}].name", "must be <connector>.<action> in snake_case"))
        elif tool.name in seen:
            out.append((f"tools[{i}].name", f"duplicate tool {tool.name}"))
        seen.add(tool.name)
        if tool.effect not in (1, 2):
            out.append((f"tools[{i}].effect", "must be EFFECT_READ or EFFECT_WRITE"))
        for problem in convert.tool_info(tool)[1]:
            out.append((f"tools[{i}].arguments_schema", f"not a valid JSON Schema: {problem}"))
    for i, denied in enumerate(request.denied_tools):
        if not _TOOL_NAME.match(denied.name):
            out.append((f"denied_tools[{i}].name", "must be <connector>.<action> in snake_case"))
        elif denied.name in seen:
            out.append((f"denied_tools[{i}].name", f"{denied.name} is also among the tools"))
    for i, person in enumerate(request.people):
        if "@" not in person.email:
            out.append((f"people[{i}].email", "an email is required"))
    if request.observations and not request.HasField("previous_plan"):
        out.append(("observations", "observations come with the previous_plan they belong to"))
    for i, step in enumerate(request.previous_plan.steps):
        if not step.id:
            out.append((f"previous_plan.steps[{i}].id", "a step id is required"))
    return out


def validate_respond_request(request: planner_service_pb2.RespondRequest) -> list[tuple[str, str]]:
    out = _request_violations(request.request, "request")
    for i, result in enumerate(request.results):
        if not result.step_id:
            out.append((f"results[{i}].step_id", "a step id is required"))
    return out


def requester(p: Principal) -> str:
    """Whom the plan is for: the user, or the user an operator principal acts for."""
    if p.kind == principal_mod.OPERATOR:
        if not p.on_behalf_of or p.tenant in ("", "*"):
            raise MeshError(Reason.PRINCIPAL_INVALID, "an operator principal must name a tenant and the user it "
                            "acts for (on_behalf_of)", domain=DOMAIN)
        return p.on_behalf_of.lower()
    return p.user


def _duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(max(seconds, 0.0) * 1e9))
    return out


def _exhausted(err: Exhausted, tenant: str) -> MeshError:
    return MeshError(Reason(err.reason), err.message, domain=DOMAIN, metadata={"tenant": tenant},
                     retry_after_s=err.retry_after_s)


class PlannerServicer(planner_service_pb2_grpc.PlannerServiceServicer):
    """The PlannerService handlers."""

    def __init__(self, planner: Planner, responder: Responder, tenants: TenantSettings) -> None:
        self.planner = planner
        self.responder = responder
        self.tenants = tenants

    async def Plan(self, request: planner_service_pb2.PlanRequest,
                   context: grpc.aio.ServicerContext) -> AsyncIterator[planner_service_pb2.PlanResponse]:
        p = principal_mod.current()
        user = requester(p)
        deadline = Deadline.within(context.time_remaining() or _DEFAULT_DEADLINE_S)
        models = await self.tenants.get(p, deadline.remaining() * _SETTINGS_SHARE)
        inp = convert.plan_input(request, p.tenant, user, deadline)
        waited = ModelWait()
        try:
            async for item in self.planner.plan(inp, models, waited):
                if isinstance(item, TokenBatch):
                    yield planner_service_pb2.PlanResponse(token_delta=item.text)
                else:
                    plan = convert.plan_proto(item)
                    plan.usage.model_wait.CopyFrom(_duration(waited.seconds))
                    yield planner_service_pb2.PlanResponse(plan=plan)
        except Exhausted as err:
            raise _exhausted(err, p.tenant) from None

    async def Respond(self, request: planner_service_pb2.RespondRequest,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[planner_service_pb2.RespondResponse]:
        p = principal_mod.current()
        user = requester(p)
        deadline = Deadline.within(context.time_remaining() or _DEFAULT_DEADLINE_S)
        models = await self.tenants.get(p, deadline.remaining() * _SETTINGS_SHARE)
        plan = convert.plan_from_proto(request.plan)
        results = [convert.observation(r) for r in request.results]
        inp = AnswerInput(tenant=p.tenant, requester=user, request=request.request.strip(), plan=plan,
                          tier=request.plan.tier, results=tuple(results),
                          outcome=convert.outcome_name(request.outcome, results, plan), deadline=deadline,
                          context=convert.context_dict(request.context))
        waited = ModelWait()
        async for item in self.responder.respond(inp, models, waited):
            if isinstance(item, TokenBatch):
                yield planner_service_pb2.RespondResponse(text_delta=item.text)
            else:
                usage = convert.usage_proto(item.usage)
                usage.model_wait.CopyFrom(_duration(waited.seconds))
                yield planner_service_pb2.RespondResponse(answer=planner_service_pb2.Answer(text=item.text,
                                                                                            usage=usage))


def service_spec(servicer: PlannerServicer) -> ServiceSpec:
    return ServiceSpec(
        name="agentmesh.planner.v1.PlannerService",
        servicer=servicer,
        add_to_server=planner_service_pb2_grpc.add_PlannerServiceServicer_to_server,
        # Operator principals plan and answer dead-letter replays on behalf of the user they name.
        kinds={"Plan": ANY_KIND, "Respond": ANY_KIND},
        validators={"Plan": validate_plan_request, "Respond": validate_respond_request},
    )
