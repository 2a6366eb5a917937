"""The embedded planner: plans requests with no network and no model provider (sentence embeddings plus rules)."""

from typing import TYPE_CHECKING, Any

from planner.embedded.model import Person, PlanResult, PlanStep, Refusal

if TYPE_CHECKING:
    from planner.embedded.planner import EmbeddedPlanner

__all__ = ["EmbeddedPlanner", "Person", "PlanResult", "PlanStep", "Refusal"]


def __getattr__(name: str) -> Any:
    """Imports the planner (and numpy) only when it is asked for, so the plan types import without them."""
    if name == "EmbeddedPlanner":
        from planner.embedded.planner import EmbeddedPlanner

        return EmbeddedPlanner
    raise AttributeError(name)
