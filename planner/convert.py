"""Protos in and out: agentmesh.common.v1 / agentmesh.planner.v1 messages to and from the planner's domain types."""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from typing import Any, Literal

from agentmesh.common.v1 import common_pb2
from agentmesh.planner.v1 import planner_service_pb2
from mesh.structs import struct, to_dict
from planner.embedded.model import Person, PlanResult, PlanStep, Refusal
from planner.model import (
    DENIED,
    FAILED,
    OK,
    SKIPPED,
    Deadline,
    Observation,
    PlanInput,
    PlanOutcome,
    StepError,
    Usage,
)
from planner.templates import action
from planner.validation import People, ToolInfo, schema_violations

_STATUS = {common_pb2.STEP_STATUS_OK: OK, common_pb2.STEP_STATUS_DENIED: DENIED,
           common_pb2.STEP_STATUS_FAILED: FAILED, common_pb2.STEP_STATUS_SKIPPED: SKIPPED}
_OUTCOMES = {common_pb2.OUTCOME_ANSWERED: "answered", common_pb2.OUTCOME_DENIED: "denied",
             common_pb2.OUTCOME_NO_ACTION: "no_action", common_pb2.OUTCOME_FAILED: "failed"}
# Step failures that do not make a run `failed` (DESIGN.md: permission, ambiguity, a declined confirmation).
_NOT_FAILURES = frozenset({"POLICY_DENIED", "VENDOR_DENIED", "AMBIGUOUS_PERSON", "UNKNOWN_PERSON",
                           "AMBIGUOUS_REFERENCE", "CONFIRMATION_DECLINED", "CONFIRMATION_TIMEOUT"})








def _effect_name(effect: int) -> Literal["READ", "WRITE"]:
    return "WRITE" if effect == common_pb2.EFFECT_WRITE else "READ"


@functools.lru_cache(maxsize=4096)
def _tool(serialized: bytes) -> tuple[ToolInfo, tuple[str, ...]]:
    spec = common_pb2.ToolSpec.FromString(serialized)
    schema = to_dict(spec.arguments_schema)
    info = ToolInfo(spec.name, _effect_name(spec.effect), schema, spec.description, spec.version,
                    tuple(spec.examples))
    return info, tuple(schema_violations(schema))


def tool_info(spec: common_pb2.ToolSpec) -> tuple[ToolInfo, tuple[str, ...]]:
    """The tool and what is wrong with its schema; converted once per distinct spec per process."""
    return _tool(spec.SerializeToString(deterministic=True))


def person(p: common_pb2.Person) -> Person:
    first, last = p.first_name, p.last_name
    name = p.name or f"{first} {last}".strip()
    if not (first or last) and name:
        first, _, last = name.partition(" ")
    return Person(p.email.strip().lower(), name, first, last, tuple(p.groups))


# Directories by (tenant, people_fingerprint): a tenant's thousand people are the same list on every request until
# its directory changes, and converting and indexing them would be most of the planner's own work per LLM request.
_PEOPLE_CACHE_SIZE = 64
_people_cache: OrderedDict[tuple[str, str], People] = OrderedDict()
_people_lock = threading.Lock()


def people_of(request: planner_service_pb2.PlanRequest, tenant: str) -> People:
    """The request's people, indexed; converted once per (tenant, people_fingerprint) when the caller sent one."""
    if not request.people_fingerprint:
        return People([person(p) for p in request.people])
    key = (tenant, request.people_fingerprint)
    with _people_lock:
        found = _people_cache.get(key)
        if found is not None and len(found.people) == len(request.people):
            _people_cache.move_to_end(key)
            return found
    converted = People([person(p) for p in request.people])
    with _people_lock:
        _people_cache[key] = converted
        while len(_people_cache) > _PEOPLE_CACHE_SIZE:
            _people_cache.popitem(last=False)
    return converted


def context_dict(context: common_pb2.Context) -> dict[str, Any]:
    """The context as prompt data (empty parts left out)."""
    out: dict[str, Any] = {}
    if context.turns:
        out["turns"] = [{"role": t.role, "text": t.text} for t in context.turns]
    if context.summary:
        out["summary"] = context.summary
    if context.facts:
        out["facts"] = [{"text": f.text, "kind": f.kind} for f in context.facts]
    if context.HasField("working_state") and context.working_state.fields:
        out["working_state"] = to_dict(context.working_state)
    return out


def plan_from_proto(plan: common_pb2.Plan) -> PlanResult:
    steps = [PlanStep(s.id, s.tool, to_dict(s.arguments), list(s.depends_on), _effect_name(s.effect))
             for s in plan.steps]
    return PlanResult(steps, [Refusal(r.tool, r.reason) for r in plan.refusals], plan.question or None,
                      plan.explanation or None)


def observation(result: common_pb2.StepResult) -> Observation:
    error = None
    if result.HasField("error"):
        error = StepError(result.error.code, result.error.reason, result.error.message, dict(result.error.metadata))
    return Observation(result.step_id, result.tool, _STATUS.get(result.status, "pending"),
                       _effect_name(result.effect), to_dict(result.arguments), to_dict(result.output),
                       result.summary, error)


def plan_input(request: planner_service_pb2.PlanRequest, tenant: str, requester: str,
               deadline: Deadline) -> PlanInput:
    tools = tuple(tool_info(t)[0] for t in request.tools)
    denied = {d.name: d.reason or f"you may not use {d.name}" for d in request.denied_tools}
    previous = plan_from_proto(request.previous_plan) if request.HasField("previous_plan") and (
        request.previous_plan.steps or request.observations) else None
    directory = people_of(request, tenant)
    return PlanInput(tenant=tenant, requester=requester, request=request.request.strip(), tools=tools,
                     denied=denied, people=directory.people, directory=directory, deadline=deadline,
                     context=context_dict(request.context), previous_plan=previous,
                     previous_round=request.previous_plan.round if previous else 0,
                     observations=tuple(observation(o) for o in request.observations),
                     fingerprint=request.tools_fingerprint, people_fingerprint=request.people_fingerprint)


def describe(step: PlanStep) -> str:
    """A short label for progress displays."""
    text = action(step.tool, step.args)
    return text[:1].upper() + text[1:]


def plan_proto(outcome: PlanOutcome) -> common_pb2.Plan:
    plan = outcome.plan
    return common_pb2.Plan(
        steps=[common_pb2.PlanStep(id=s.id, tool=s.tool, arguments=struct(s.args), depends_on=s.depends_on,
                                   effect=common_pb2.EFFECT_WRITE if s.effect == "WRITE" else common_pb2.EFFECT_READ,
                                   description=describe(s)) for s in plan.steps],
        refusals=[common_pb2.Refusal(tool=r.tool, reason=r.reason) for r in plan.refusals],
        question=plan.question or "", explanation=plan.explanation or "", usage=usage_proto(outcome.usage),
        tier=outcome.tier, round=outcome.round, cached=outcome.cached)


def usage_proto(usage: Usage) -> common_pb2.Usage:
    return common_pb2.Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                            cost_usd=round(usage.cost_usd, 8), provider=usage.provider, model=usage.model)


def plan_json(plan: common_pb2.Plan) -> dict[str, Any]:
    """A plan as `agentmesh plan --json` prints it (shared/eval/README.md, "At plan level")."""
    return {
        "steps": [{"id": s.id, "tool": s.tool, "args": to_dict(s.arguments), "depends_on": list(s.depends_on),
                   "effect": _effect_name(s.effect)} for s in plan.steps],
        "refusals": [{"tool": r.tool, "reason": r.reason} for r in plan.refusals],
        "question": plan.question or None,
        "explanation": plan.explanation or None,
    }


def outcome_name(outcome: int, results: list[Observation], plan: PlanResult) -> str:
    """The run's outcome as given, or by DESIGN.md's first rule that applies when the caller left it unset."""
    named = _OUTCOMES.get(outcome)
    if named is not None:
        return named
    if any(r.status == FAILED and (r.error is None or r.error.reason not in _NOT_FAILURES) for r in results):
        return "failed"
    if plan.refusals or any(r.status == DENIED for r in results):
        return "denied"
    if plan.question or plan.explanation or any(r.status == SKIPPED for r in results):
        return "no_action"
    return "answered"
