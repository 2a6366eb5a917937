"""AgentService events as the JSON lines of shared/eval/README.md (accepted, plan, step, final)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2

from agentmesh.agent.v1 import agent_service_pb2 as pb
from agentmesh.common.v1 import common_pb2
from gateway.client import Failure, outcome_name

EFFECTS = {common_pb2.EFFECT_READ: "READ", common_pb2.EFFECT_WRITE: "WRITE"}
STATUSES = {common_pb2.STEP_STATUS_OK: "ok", common_pb2.STEP_STATUS_DENIED: "denied",
            common_pb2.STEP_STATUS_FAILED: "failed", common_pb2.STEP_STATUS_SKIPPED: "skipped"}


def plain(value: Any) -> Any:
    """Struct values as JSON wants them: whole numbers as integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _args(value: struct_pb2.Struct) -> dict[str, Any]:
    converted: dict[str, Any] = plain(json_format.MessageToDict(value))
    return converted


def _ms(duration: Any) -> float:
    return round(duration.ToNanoseconds() / 1e6, 3)


class JsonLines:
    """Turns one turn's events (confirmations included) into the README's objects, in order."""

    def __init__(self) -> None:
        self.accepted = False
        self.final = False
        self.planned: dict[str, dict[str, Any]] = {}
        self.effects: dict[str, str] = {}

    def event(self, event: pb.ConverseResponse) -> list[dict[str, Any]]:
        kind = event.WhichOneof("event")
        if kind == "accepted" and not self.accepted:
            self.accepted = True
            a = event.accepted
            return [{"type": "accepted", "request_id": a.request_id, "run_id": a.run_id, "session_id": a.session_id,
                     "trace_id": a.trace_id}]
        if kind == "plan":
            plan = event.plan
            steps = []
            for s in plan.steps:
                args = _args(s.arguments)
                self.planned[s.id] = args
                self.effects[s.id] = EFFECTS.get(s.effect, "READ")
                steps.append({"id": s.id, "tool": s.tool, "args": args, "depends_on": list(s.depends_on),
                              "effect": EFFECTS.get(s.effect, "READ"), "description": s.description})
            return [{"type": "plan", "steps": steps, "refusals": [{"tool": r.tool, "reason": r.reason}
                                                                   for r in plan.refusals],
                     "question": plan.question or None, "explanation": plan.explanation or None, "round": plan.round}]
        if kind == "step_finished":
            r = event.step_finished
            args = _args(r.arguments) if r.HasField("arguments") and r.arguments.fields else \
                self.planned.get(r.step_id, {})
            return [{"type": "step", "id": r.step_id, "tool": r.tool, "args": args,
                     "effect": EFFECTS.get(r.effect) or self.effects.get(r.step_id, "READ"),
                     "status": STATUSES.get(r.status, "failed"),
                     "error": r.error.reason if r.HasField("error") and r.error.reason else None,
                     "summary": r.summary, "latency_ms": _ms(r.latency)}]
        if kind == "final":
            self.final = True
            f = event.final
            return [{"type": "final", "outcome": outcome_name(f.outcome), "text": f.text, "run_id": f.run_id,
                     "duration_ms": _ms(f.duration), "overhead_ms": _ms(f.overhead),
                     "cost_usd": f.usage.cost_usd,
                     "steps": [{"id": t.step_id, "tool": t.tool, "status": STATUSES.get(t.status, "failed"),
                                "latency_ms": _ms(t.latency)} for t in f.steps]}]
        return []

    def failure(self, failure: Failure) -> list[dict[str, Any]]:
        """The closing final of a stream that ended in an error status without one."""
        if self.final:
            return []
        self.final = True
        return [{"type": "final", "outcome": "failed", "text": f"{failure.reason}: {failure.message}",
                 "error": {"code": failure.code, "reason": failure.reason, "metadata": failure.metadata}}]
