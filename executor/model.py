"""The executor's domain types: plans, step states, runs and the events a run emits (no gRPC, no protobuf)."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field, replace
from typing import Any


class Effect(enum.StrEnum):
    READ = "READ"
    WRITE = "WRITE"


class StepStatus(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    OK = "OK"
    DENIED = "DENIED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"

    @property
    def settled(self) -> bool:
        return self in (StepStatus.OK, StepStatus.DENIED, StepStatus.FAILED, StepStatus.SKIPPED)


class RunStatus(enum.StrEnum):
    """RUNNING and AWAITING_APPROVAL are live; SUCCEEDED (every step done), COMPLETED (ended with another outcome),
    FAILED (the executor could not carry the run out: deadline, expired principal, registry unreachable),
    CANCELLED and DEAD_LETTERED (a WRITE is owed; replayable) are final."""

    RUNNING = "RUNNING"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    SUCCEEDED = "SUCCEEDED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    DEAD_LETTERED = "DEAD_LETTERED"

    @property
    def terminal(self) -> bool:
        return self not in (RunStatus.RUNNING, RunStatus.AWAITING_APPROVAL)


class Outcome(enum.StrEnum):
    NONE = ""
    ANSWERED = "answered"
    DENIED = "denied"
    NO_ACTION = "no_action"
    FAILED = "failed"


# Reasons the executor itself gives (the others come from the services that refused a call; DESIGN.md's table).
DEPENDENCY_FAILED = "DEPENDENCY_FAILED"  # a skipped step's dependency did not succeed; metadata names it


@dataclass(frozen=True)
class StepError:
    """Why a step did not succeed: gRPC code name, ErrorInfo reason, message and metadata."""

    code: str
    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)
    retry_after_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "reason": self.reason, "message": self.message, "metadata": dict(self.metadata)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> StepError | None:
        if not data:
            return None
        return cls(data["code"], data["reason"], data["message"], dict(data.get("metadata") or {}))


@dataclass(frozen=True)
class PlannedStep:
    """One tool call of a plan; `arguments` may hold `{{steps.<id>.<path>}}` references."""

    id: str
    tool: str
    arguments: dict[str, Any]
    depends_on: tuple[str, ...] = ()
    effect: Effect | None = None
    description: str = ""

    @property
    def connector(self) -> str:
        return self.tool.split(".", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "tool": self.tool, "arguments": self.arguments, "depends_on": list(self.depends_on),
                "effect": self.effect.value if self.effect else None, "description": self.description}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlannedStep:
        effect = data.get("effect")
        return cls(data["id"], data["tool"], dict(data.get("arguments") or {}), tuple(data.get("depends_on") or ()),
                   Effect(effect) if effect else None, data.get("description", ""))


@dataclass(frozen=True)
class Refusal:
    tool: str
    reason: str


@dataclass(frozen=True)
class Usage:
    """Model usage of plans and re-plans; `model_wait_s` is the time the planner spent awaiting model providers."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    provider: str = ""
    model: str = ""
    model_wait_s: float = 0.0

    def plus(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens,
                     self.cost_usd + other.cost_usd, other.provider or self.provider, other.model or self.model,
                     self.model_wait_s + other.model_wait_s)


@dataclass(frozen=True)
class Plan:
    """A DAG of steps, and alongside or instead of them refusals, a question or an explanation."""

    steps: tuple[PlannedStep, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    question: str = ""
    explanation: str = ""
    round: int = 0
    tier: str = ""
    cached: bool = False
    usage: Usage = Usage()

    def step(self, step_id: str) -> PlannedStep | None:
        return next((s for s in self.steps if s.id == step_id), None)

    def with_steps(self, steps: tuple[PlannedStep, ...]) -> Plan:
        return replace(self, steps=steps)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [s.to_dict() for s in self.steps],
                "refusals": [{"tool": r.tool, "reason": r.reason} for r in self.refusals],
                "question": self.question, "explanation": self.explanation, "round": self.round,
                "tier": self.tier, "cached": self.cached, "usage": self.usage.__dict__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls(tuple(PlannedStep.from_dict(s) for s in data.get("steps", [])),
                   tuple(Refusal(r["tool"], r["reason"]) for r in data.get("refusals", [])),
                   data.get("question", ""), data.get("explanation", ""), int(data.get("round", 0)),
                   data.get("tier", ""), bool(data.get("cached", False)), Usage(**(data.get("usage") or {})))


@dataclass
class StepState:
    """Where one step of a run is. `arguments` are what was (or will be) sent: once a WRITE was attempted with
    its idempotency key they never change, so a resumed or replayed call meets the key with the same arguments."""

    step_id: str
    tool: str
    effect: Effect
    round: int = 0
    position: int = 0
    planned: dict[str, Any] = field(default_factory=dict)  # arguments as planned, references unresolved
    depends_on: tuple[str, ...] = ()  # declared dependencies and the steps the arguments refer to
    needs_approval: bool = False  # the tenant lists the tool in confirm_before
    status: StepStatus = StepStatus.PENDING
    arguments: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    summary: str = ""
    error: StepError | None = None
    attempts: int = 0
    started_at: float | None = None  # epoch seconds
    ended_at: float | None = None
    idempotency_key: str = ""
    approved: bool = False
    # Time this run of the step (started_at to ended_at) spent awaiting the vendor, over its attempts; None when it
    # made no call.
    vendor_wait_s: float | None = None

    @property
    def latency_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max(self.ended_at - self.started_at, 0.0)

    def copy(self) -> StepState:
        return replace(self, arguments=None if self.arguments is None else dict(self.arguments),
                       output=None if self.output is None else dict(self.output))


@dataclass
class Run:
    """One execution of a plan: its plan revisions, its steps (every round's), and how it ended."""

    tenant: str
    run_id: str
    user: str
    request: str
    plan: Plan
    status: RunStatus = RunStatus.RUNNING
    steps: dict[str, StepState] = field(default_factory=dict)
    outcome: Outcome = Outcome.NONE
    error: StepError | None = None
    usage: Usage = Usage()
    refused: bool = False  # some plan revision refused a tool
    max_replans: int = 2
    created_at: float = 0.0
    updated_at: float = 0.0
    approval_deadline: float | None = None  # epoch seconds by which a pending confirmation must arrive
    dead_letter_id: str = ""

    def snapshot(self) -> Run:
        """A copy safe to hand to readers while the run goes on."""
        return replace(self, steps={k: v.copy() for k, v in self.steps.items()})


def idempotency_key(tenant: str, run_id: str, step_id: str) -> str:
    """The key a WRITE step carries: stable across retries, resumes and replays of the same (tenant, run, step)."""
    digest = hashlib.sha256(f"{tenant}\x1f{run_id}\x1f{step_id}".encode()).hexdigest()
    return f"am1-{digest[:40]}"


# --- events a run emits, in the order they happen ------------------------------------------------------------
@dataclass(frozen=True)
class StepStarted:
    step_id: str
    tool: str
    arguments: dict[str, Any]
    attempt: int


@dataclass(frozen=True)
class StepFinished:
    step: StepState


@dataclass(frozen=True)
class ApprovalNeeded:
    run_id: str
    step_id: str
    tool: str
    arguments: dict[str, Any]
    prompt: str


@dataclass(frozen=True)
class PlanRevised:
    plan: Plan


@dataclass(frozen=True)
class RunFinished:
    """The last event of a stream: the run ended, or paused awaiting approval."""

    run: Run


Event = StepStarted | StepFinished | ApprovalNeeded | PlanRevised | RunFinished
