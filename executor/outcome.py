"""A run's outcome by DESIGN.md's rules, and whether it owes a WRITE (dead letter): pure functions over step states."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .model import DEPENDENCY_FAILED, Effect, Outcome, Plan, StepState, StepStatus

PERMISSION = frozenset({"POLICY_DENIED", "VENDOR_DENIED"})
AMBIGUITY = frozenset({"AMBIGUOUS_PERSON", "UNKNOWN_PERSON", "AMBIGUOUS_REFERENCE"})
# Steps skipped because the user did not go ahead: nothing was done and nothing failed.
NOT_GONE_AHEAD = frozenset({"CONFIRMATION_DECLINED", "CONFIRMATION_TIMEOUT", "CANCELLED"})
# Failures that retries or more time could have overcome: a WRITE left undone by one of these is owed.
TRANSIENT_CODES = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "ABORTED"})


def outcome_of(steps: Iterable[StepState], plan: Plan, refused: bool = False) -> Outcome:
    """The first rule that applies (DESIGN.md, "Plans, references and outcomes"):

    1. `failed`: a step failed for a reason other than permission or ambiguity (not found, unavailable, deadline,
       validation, ...) and no later re-plan round recovered it, even if a re-plan then only explains. A later round
       recovers earlier failures when it ran at least one step and every step it ran succeeded.
    2. `denied`: the plan or an earlier revision (`refused`) refused a tool, or a step was denied (by policy or by
       the vendor).
    3. `no_action`: the last plan carries a question or an explanation; a confirmation was declined or timed out,
       or the run was cancelled before a step; an ambiguity (person or reference) was left unresolved (the user must
       say which one); or nothing was planned at all.
    4. `answered`.
    """
    steps = list(steps)
    rounds: dict[int, list[StepState]] = {}
    for step in steps:
        rounds.setdefault(step.round, []).append(step)
    recovered_after = [r for r, members in rounds.items() if all(s.status is StepStatus.OK for s in members)]

    def recovered(step: StepState) -> bool:
        return any(r > step.round for r in recovered_after)

    failed = [s for s in steps if s.status is StepStatus.FAILED and not recovered(s)]
    if any(_reason(s) not in PERMISSION | AMBIGUITY for s in failed):
        return Outcome.FAILED
    if refused or plan.refusals or any(s.status is StepStatus.DENIED for s in steps):
        return Outcome.DENIED
    if plan.question or plan.explanation or not steps:
        return Outcome.NO_ACTION
    if any(s.status is StepStatus.SKIPPED and _reason(s) in NOT_GONE_AHEAD for s in steps):
        return Outcome.NO_ACTION
    if any(_reason(s) in AMBIGUITY for s in failed):
        return Outcome.NO_ACTION
    return Outcome.ANSWERED


def owed_write(steps: Mapping[str, StepState], *, replaying: bool = False) -> StepState | None:
    """The first WRITE step left undone by a transient failure (its own, or that of the dependency it was skipped
    for), or None. A run that ends owing a WRITE goes to the dead-letter queue so that it can be replayed. A replay
    owes every WRITE that failed, whatever the reason: its dead letter stays open until an operator gets it done."""
    for step in steps.values():
        if step.effect is not Effect.WRITE or step.status is StepStatus.OK:
            continue
        if not step.status.settled:
            return step
        cause = _root_cause(step, steps)
        if cause is not None and cause.status is StepStatus.FAILED and cause.error is not None \
                and (replaying or cause.error.code in TRANSIENT_CODES):
            return step
    return None


def _root_cause(step: StepState, steps: Mapping[str, StepState]) -> StepState | None:
    seen: set[str] = set()
    current: StepState | None = step
    while current is not None and current.status is StepStatus.SKIPPED and _reason(current) == DEPENDENCY_FAILED:
        if current.step_id in seen or current.error is None:
            return None
        seen.add(current.step_id)
        current = steps.get(current.error.metadata.get("dependency", ""))
    return current


def _reason(step: StepState) -> str:
    return step.error.reason if step.error else ""
