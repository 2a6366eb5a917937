"""Protos in and out: the executor's domain types to and from agentmesh.common.v1 / agentmesh.executor.v1 messages."""

from __future__ import annotations

from google.protobuf import duration_pb2, timestamp_pb2

from agentmesh.common.v1 import common_pb2
from agentmesh.executor.v1 import executor_pb2, executor_service_pb2
from mesh.structs import struct, to_dict

from .model import (
    ApprovalNeeded,
    Effect,
    Event,
    Outcome,
    Plan,
    PlannedStep,
    PlanRevised,
    Refusal,
    Run,
    RunFinished,
    StepError,
    StepFinished,
    StepStarted,
    StepState,
    Usage,
)
from .store import DeadLetter

_OUTCOMES = {Outcome.NONE: common_pb2.OUTCOME_UNSPECIFIED, Outcome.ANSWERED: common_pb2.OUTCOME_ANSWERED,
             Outcome.DENIED: common_pb2.OUTCOME_DENIED, Outcome.NO_ACTION: common_pb2.OUTCOME_NO_ACTION,
             Outcome.FAILED: common_pb2.OUTCOME_FAILED}








def _timestamp(epoch: float | None) -> timestamp_pb2.Timestamp | None:
    if epoch is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromNanoseconds(int(epoch * 1e9))
    return out


def effect_proto(effect: Effect | None) -> common_pb2.Effect.ValueType:
    return common_pb2.Effect.Value(f"EFFECT_{effect.value}") if effect else common_pb2.EFFECT_UNSPECIFIED


def plan_from_proto(plan: common_pb2.Plan) -> Plan:
    steps = tuple(PlannedStep(s.id, s.tool, to_dict(s.arguments), tuple(s.depends_on),
                              Effect(common_pb2.Effect.Name(s.effect).removeprefix("EFFECT_")) if s.effect else None,
                              s.description) for s in plan.steps)
    usage = Usage(plan.usage.input_tokens, plan.usage.output_tokens, plan.usage.cost_usd, plan.usage.provider,
                  plan.usage.model, plan.usage.model_wait.ToNanoseconds() / 1e9)
    return Plan(steps, tuple(Refusal(r.tool, r.reason) for r in plan.refusals), plan.question, plan.explanation,
                plan.round, plan.tier, plan.cached, usage)


def plan_proto(plan: Plan) -> common_pb2.Plan:
    return common_pb2.Plan(
        steps=[common_pb2.PlanStep(id=s.id, tool=s.tool, arguments=struct(s.arguments), depends_on=list(s.depends_on),
                                   effect=effect_proto(s.effect), description=s.description) for s in plan.steps],
        refusals=[common_pb2.Refusal(tool=r.tool, reason=r.reason) for r in plan.refusals],
        question=plan.question, explanation=plan.explanation, usage=usage_proto(plan.usage), tier=plan.tier,
        round=plan.round, cached=plan.cached)


def _duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(max(seconds, 0.0) * 1e9))
    return out


def usage_proto(usage: Usage) -> common_pb2.Usage:
    return common_pb2.Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                            cost_usd=usage.cost_usd, provider=usage.provider, model=usage.model,
                            model_wait=_duration(usage.model_wait_s))


def error_proto(error: StepError | None) -> common_pb2.StepError | None:
    if error is None:
        return None
    return common_pb2.StepError(code=error.code, reason=error.reason, message=error.message,
                                metadata=dict(error.metadata))


def step_result(step: StepState) -> common_pb2.StepResult:
    out = common_pb2.StepResult(step_id=step.step_id, tool=step.tool, effect=effect_proto(step.effect),
                                status=common_pb2.StepStatus.Value(f"STEP_STATUS_{step.status.value}"),
                                summary=step.summary, attempts=step.attempts, idempotency_key=step.idempotency_key)
    if step.arguments is not None:
        out.arguments.CopyFrom(struct(step.arguments))
    if step.output is not None:
        out.output.CopyFrom(struct(step.output))
    if step.error is not None:
        out.error.CopyFrom(error_proto(step.error))
    if (start := _timestamp(step.started_at)) is not None:
        out.start_time.CopyFrom(start)
    if (end := _timestamp(step.ended_at)) is not None:
        out.end_time.CopyFrom(end)
    if step.latency_s is not None:
        out.latency.CopyFrom(_duration(step.latency_s))
    if step.vendor_wait_s is not None:
        out.vendor_wait.CopyFrom(_duration(step.vendor_wait_s))
    return out


def run_proto(run: Run) -> executor_pb2.Run:
    out = executor_pb2.Run(run_id=run.run_id, state=executor_pb2.RunState.Value(f"RUN_STATE_{run.status.value}"),
                           request=run.request, plan=plan_proto(run.plan), outcome=_OUTCOMES[run.outcome],
                           user=run.user, usage=usage_proto(run.usage),
                           steps=[step_result(s) for s in sorted(run.steps.values(), key=lambda s: s.position)])
    if run.error is not None:
        out.error.CopyFrom(error_proto(run.error))
    if (created := _timestamp(run.created_at or None)) is not None:
        out.create_time.CopyFrom(created)
    if (updated := _timestamp(run.updated_at or None)) is not None:
        out.update_time.CopyFrom(updated)
    return out


def event_proto(event: Event) -> executor_service_pb2.ExecuteResponse:
    if isinstance(event, StepStarted):
        return executor_service_pb2.ExecuteResponse(step_started=executor_service_pb2.StepStarted(
            step_id=event.step_id, tool=event.tool, arguments=struct(event.arguments), attempt=event.attempt))
    if isinstance(event, StepFinished):
        return executor_service_pb2.ExecuteResponse(step_finished=step_result(event.step))
    if isinstance(event, ApprovalNeeded):
        return executor_service_pb2.ExecuteResponse(approval_needed=executor_service_pb2.ApprovalNeeded(
            run_id=event.run_id, step_id=event.step_id, tool=event.tool, arguments=struct(event.arguments),
            prompt=event.prompt))
    if isinstance(event, PlanRevised):
        return executor_service_pb2.ExecuteResponse(plan_revised=plan_proto(event.plan))
    assert isinstance(event, RunFinished)
    return executor_service_pb2.ExecuteResponse(run_finished=executor_service_pb2.RunFinished(run=run_proto(event.run)))


def dead_letter_proto(entry: DeadLetter, run: Run | None) -> executor_pb2.DeadLetter:
    out = executor_pb2.DeadLetter(dead_letter_id=entry.dead_letter_id, reason=entry.reason,
                                  replay_count=entry.replay_count, tenant_id=entry.tenant)
    if run is not None:
        out.run.CopyFrom(run_proto(run))
    if (created := _timestamp(entry.created_at)) is not None:
        out.create_time.CopyFrom(created)
    return out

