"""The embedded tier: the built-in planner on the shipped catalog, loaded once, and its re-plans."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from planner.embedded.model import Person, PlanResult
from planner.model import AMBIGUITY_REASONS, OK, Observation


class EmbeddedTier:
    """EmbeddedPlanner over the catalog's example utterances, embedded once with the process-wide encoder."""

    def __init__(self, specs: Sequence[Mapping[str, Any]] | None = None, encoder: Any = None,
                 torch_threads: int | None = 1) -> None:
        self._specs = specs
        self._encoder = encoder
        self._torch_threads = torch_threads
        self._planner: Any = None
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Loads the encoder and embeds the catalog (about a second; done at start, not per request)."""
        self._get()

    def _get(self) -> Any:
        with self._lock:
            if self._planner is None:
                from connectors.common.manifest import tool_specs
                from mesh.embeddings import get_encoder
                from planner.embedded import EmbeddedPlanner

                if self._torch_threads:
                    # One intra-op thread: a sentence or two per request gains nothing from more, and on the two
                    # cores the whole mesh shares, more threads spin against each other (measured: 20 ms → 360 ms
                    # per encode under load with two). Requests run in parallel on worker threads instead.
                    import torch

                    torch.set_num_threads(self._torch_threads)

                specs = self._specs if self._specs is not None else tool_specs()
                self._planner = EmbeddedPlanner(specs, self._encoder if self._encoder is not None else get_encoder())
            return self._planner

    @property
    def known_tools(self) -> set[str]:
        return set(self._get().tools)

    def plan(self, request: str, *, requester: str, allowed: set[str], denied: Mapping[str, str],
             people: Sequence[Person], today: dt.date, context: Mapping[str, Any] | None) -> PlanResult:
        """The embedded planner's plan (CPU-bound: callers run it in a worker thread)."""
        result: PlanResult = self._get().plan(request, requester=requester, allowed_tools=allowed,
                                               denied_tools=denied, directory=list(people), today=today,
                                               context=dict(context or {}))
        return result


_shared: EmbeddedTier | None = None
_shared_lock = threading.Lock()


def shared_tier() -> EmbeddedTier:
    """The process-wide embedded tier on the shipped catalog (its examples are embedded once per process)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = EmbeddedTier()
        return _shared


def revise(previous: PlanResult, observations: Sequence[Observation]) -> dict[str, Any]:
    """The embedded re-plan (`submit_plan` shape): the steps that succeeded kept as they were, and a question or
    an explanation for what failed, since the embedded planner cannot reason about a failure beyond its kind."""
    by_id = {o.step_id: o for o in observations}
    kept = [s for s in previous.steps if by_id.get(s.id) is not None and by_id[s.id].status == OK]
    questions: list[str] = []
    explanations: list[str] = []
    for observation in observations:
        error = observation.error
        if observation.status == OK or error is None:
            continue
        candidates = error.metadata.get("candidates", "")
        if error.reason in AMBIGUITY_REASONS and candidates:
            questions.append(f"{_action(observation.tool)} could match several: {candidates}. Which one do you "
                             "mean?")
        elif error.reason == "UNKNOWN_PERSON":
            questions.append(f"I couldn't find that person in your directory for {_action(observation.tool)}. "
                             "Who do you mean (name or email)?")
        elif error.reason == "CIRCUIT_OPEN":
            explanations.append(f"{observation.tool.split('.', 1)[0]} is unavailable right now, so "
                                f"{_action(observation.tool)} could not run; try again in a little while.")
        elif error.message:
            explanations.append(f"{_action(observation.tool)} failed: {error.message}")
    return {
        "steps": [{"id": s.id, "tool": s.tool, "args": dict(s.args), "depends_on": list(s.depends_on)} for s in kept],
        "refusals": [{"tool": r.tool, "reason": r.reason} for r in previous.refusals],
        "question": " ".join(dict.fromkeys(questions)) or None,
        "explanation": " ".join(dict.fromkeys(explanations)) or None,
    }


def _action(tool: str) -> str:
    return f"`{tool}`"
