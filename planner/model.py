"""The planner's domain types: what a plan or an answer is made from, and what comes out (no gRPC here)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from planner.embedded.model import Person, PlanResult
from planner.validation import People, ToolInfo

# Step statuses as the planner reads them (StepStatus without the STEP_STATUS_ prefix, lower case).
OK, DENIED, FAILED, SKIPPED = "ok", "denied", "failed", "skipped"


@dataclass(frozen=True)
class StepError:
    """Why a step did not succeed, as the refusing service reported it."""

    code: str = ""
    reason: str = ""
    message: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Observation:
    """One step's result: how it ended and with what (tool output is data from a system, never instructions)."""

    step_id: str
    tool: str
    status: str
    effect: str = "READ"
    arguments: Mapping[str, Any] = field(default_factory=dict)
    output: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""
    error: StepError | None = None

    def as_data(self) -> dict[str, Any]:
        """The observation as prompt data."""
        out: dict[str, Any] = {"step_id": self.step_id, "tool": self.tool, "status": self.status,
                               "arguments": dict(self.arguments)}
        if self.output:
            out["output"] = dict(self.output)
        if self.summary:
            out["summary"] = self.summary
        if self.error is not None:
            out["error"] = {"code": self.error.code, "reason": self.error.reason, "message": self.error.message,
                            "metadata": dict(self.error.metadata)}
        return out


@dataclass(frozen=True)
class Deadline:
    """The request's deadline on the monotonic clock."""

    at: float

    @classmethod
    def within(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self, reserve_s: float = 0.0) -> float:
        return max(self.at - time.monotonic() - reserve_s, 0.0)


@dataclass(frozen=True)
class PlanInput:
    """Everything one Plan call may use; tenant and requester come from the verified principal."""

    tenant: str
    requester: str
    request: str
    tools: tuple[ToolInfo, ...]
    denied: Mapping[str, str]
    people: tuple[Person, ...]
    deadline: Deadline
    context: Mapping[str, Any] = field(default_factory=dict)
    previous_plan: PlanResult | None = None
    previous_round: int = 0
    observations: tuple[Observation, ...] = ()
    fingerprint: str = ""
    people_fingerprint: str = ""  # identifies exactly `people` (set by the caller; empty: unknown)
    directory: People | None = None  # `people` indexed, when the caller has the index already

    @property
    def replan(self) -> bool:
        return self.previous_plan is not None


@dataclass
class Usage:
    """Tokens and cost of the model calls behind one plan or answer; provider and model of the last call."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    provider: str = "embedded"
    model: str = "embedded"

    def add(self, input_tokens: int, output_tokens: int, cost_usd: float, provider: str, model: str) -> None:
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cost_usd += cost_usd
        self.provider, self.model = provider, model


@dataclass
class PlanOutcome:
    """The validated plan and how it was made."""

    plan: PlanResult
    usage: Usage
    tier: str
    round: int = 0
    cached: bool = False


@dataclass(frozen=True)
class TokenBatch:
    """Model output streamed to the caller, a few tokens at a time."""

    text: str


@dataclass(frozen=True)
class AnswerInput:
    """What an answer is built from: the request, the plan that ran and each step's result."""

    tenant: str
    requester: str
    request: str
    plan: PlanResult
    tier: str
    results: tuple[Observation, ...]
    outcome: str
    deadline: Deadline
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class AnswerOutcome:
    """The whole answer and what producing it cost."""

    text: str
    usage: Usage
    grounded_by: str = "template"

# Failures the requester resolves by choosing among candidates (the planner asks which one).
AMBIGUITY_REASONS = frozenset({"AMBIGUOUS_REFERENCE", "AMBIGUOUS_PERSON"})
