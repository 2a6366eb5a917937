"""The embedded planner's plain data types: people of the directory and the plan it produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Effect = Literal["READ", "WRITE"]


@dataclass(frozen=True)
class Person:
    """One entry of the tenant directory; `email` is how every plan names a person."""

    email: str
    name: str
    first_name: str
    last_name: str
    groups: tuple[str, ...] = ()


@dataclass
class PlanStep:
    """One tool call; an argument may be a reference `{{steps.<id>.<path>}}` to an earlier step's result."""

    id: str
    tool: str
    args: dict[str, Any]
    depends_on: list[str] = field(default_factory=list)
    effect: Effect = "READ"

    def to_dict(self) -> dict[str, Any]:
        """The step as `agentmesh plan --json` prints it."""
        return {"id": self.id, "tool": self.tool, "args": dict(self.args), "depends_on": list(self.depends_on),
                "effect": self.effect}


@dataclass(frozen=True)
class Refusal:
    """A part of the request that needs a tool the requester may not use at all."""

    tool: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The refusal as `agentmesh plan --json` prints it."""
        return {"tool": self.tool, "reason": self.reason}


@dataclass
class PlanResult:
    """A plan: steps to run, and beside them refusals, a question (detail missing) or an explanation (no tool)."""

    steps: list[PlanStep] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    question: str | None = None
    explanation: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The plan as `agentmesh plan --json` prints it."""
        return {
            "steps": [step.to_dict() for step in self.steps],
            "refusals": [refusal.to_dict() for refusal in self.refusals],
            "question": self.question,
            "explanation": self.explanation,
        }
