"""The outcome rules of DESIGN.md, one by one, and when a run owes a WRITE (dead letter)."""

from __future__ import annotations

from executor.model import DEPENDENCY_FAILED, Effect, Outcome, Plan, Refusal, StepError, StepState, StepStatus
from executor.outcome import outcome_of, owed_write


def _s(step_id: str, status: StepStatus, code: str = "", reason: str = "", *, round: int = 0,
       effect: Effect = Effect.READ, dependency: str = "") -> StepState:
    error = StepError(code, reason, "x", {"dependency": dependency} if dependency else {}) if code else None
    return StepState(step_id, "t.x", effect, round=round, status=status, error=error)


OK = StepStatus.OK
PLAN = Plan()


def test_all_ok_is_answered() -> None:
    assert outcome_of([_s("s1", OK), _s("s2", OK)], PLAN) is Outcome.ANSWERED


def test_a_failure_is_failed_even_when_others_were_denied() -> None:
    steps = [_s("s1", StepStatus.FAILED, "NOT_FOUND", "NOT_FOUND"),
             _s("s2", StepStatus.DENIED, "PERMISSION_DENIED", "POLICY_DENIED")]
    assert outcome_of(steps, PLAN) is Outcome.FAILED


def test_failed_even_if_a_replan_only_explains() -> None:
    steps = [_s("s1", StepStatus.FAILED, "NOT_FOUND", "NOT_FOUND")]
    assert outcome_of(steps, Plan(explanation="INC0010001 does not exist", round=1)) is Outcome.FAILED


def test_a_later_round_that_fully_succeeds_recovers_earlier_failures() -> None:
    steps = [_s("s1", StepStatus.FAILED, "INVALID_ARGUMENT", "VALIDATION_FAILED"), _s("s1-r1", OK, round=1)]
    assert outcome_of(steps, Plan(round=1)) is Outcome.ANSWERED


def test_a_later_round_with_a_failure_does_not_recover() -> None:
    steps = [_s("s1", StepStatus.FAILED, "NOT_FOUND", "NOT_FOUND"),
             _s("s2", OK, round=1), _s("s3", StepStatus.FAILED, "UNAVAILABLE", "UPSTREAM_UNAVAILABLE", round=1)]
    assert outcome_of(steps, Plan(round=1)) is Outcome.FAILED


def test_denied_step_is_denied() -> None:
    steps = [_s("s1", OK), _s("s2", StepStatus.DENIED, "PERMISSION_DENIED", "VENDOR_DENIED")]
    assert outcome_of(steps, PLAN) is Outcome.DENIED


def test_a_refusal_is_denied_even_without_steps() -> None:
    assert outcome_of([], Plan(refusals=(Refusal("salesforce.query", "not allowed"),))) is Outcome.DENIED
    assert outcome_of([_s("s1", OK)], PLAN, refused=True) is Outcome.DENIED


def test_question_or_explanation_is_no_action() -> None:
    assert outcome_of([], Plan(question="Which project?")) is Outcome.NO_ACTION
    assert outcome_of([], Plan(explanation="No tool deletes issues.")) is Outcome.NO_ACTION
    assert outcome_of([], PLAN) is Outcome.NO_ACTION


def test_declined_or_timed_out_confirmation_is_no_action() -> None:
    for reason in ("CONFIRMATION_DECLINED", "CONFIRMATION_TIMEOUT"):
        steps = [_s("s1", OK), _s("s2", StepStatus.SKIPPED, "FAILED_PRECONDITION", reason, effect=Effect.WRITE)]
        assert outcome_of(steps, PLAN) is Outcome.NO_ACTION


def test_unresolved_ambiguity_is_no_action_not_failed() -> None:
    steps = [_s("s1", OK), _s("s2", StepStatus.FAILED, "FAILED_PRECONDITION", "AMBIGUOUS_REFERENCE")]
    assert outcome_of(steps, PLAN) is Outcome.NO_ACTION
    steps = [_s("s1", StepStatus.FAILED, "FAILED_PRECONDITION", "AMBIGUOUS_PERSON")]
    assert outcome_of(steps, Plan(question="Which Bob?", round=1)) is Outcome.NO_ACTION


def test_a_skip_for_a_failed_dependency_follows_the_failure() -> None:
    steps = [_s("s1", StepStatus.FAILED, "NOT_FOUND", "NOT_FOUND"),
             _s("s2", StepStatus.SKIPPED, "FAILED_PRECONDITION", DEPENDENCY_FAILED, dependency="s1")]
    assert outcome_of(steps, PLAN) is Outcome.FAILED


def test_owed_write_after_transient_failure_of_itself_or_its_dependency() -> None:
    failed_write = _s("w", StepStatus.FAILED, "UNAVAILABLE", "UPSTREAM_UNAVAILABLE", effect=Effect.WRITE)
    assert owed_write({"w": failed_write}) is failed_write
    read = _s("r", StepStatus.FAILED, "DEADLINE_EXCEEDED", "DEADLINE")
    skipped = _s("w", StepStatus.SKIPPED, "FAILED_PRECONDITION", DEPENDENCY_FAILED, effect=Effect.WRITE,
                 dependency="r")
    assert owed_write({"r": read, "w": skipped}) is skipped
    unfinished = _s("w", StepStatus.RUNNING, effect=Effect.WRITE)
    assert owed_write({"w": unfinished}) is unfinished


def test_nothing_owed_for_final_refusals_or_successes() -> None:
    assert owed_write({"w": _s("w", OK, effect=Effect.WRITE)}) is None
    assert owed_write({"w": _s("w", StepStatus.DENIED, "PERMISSION_DENIED", "POLICY_DENIED",
                               effect=Effect.WRITE)}) is None
    nf = _s("r", StepStatus.FAILED, "NOT_FOUND", "NOT_FOUND")
    skipped = _s("w", StepStatus.SKIPPED, "FAILED_PRECONDITION", DEPENDENCY_FAILED, effect=Effect.WRITE,
                 dependency="r")
    assert owed_write({"r": nf, "w": skipped}) is None
    assert owed_write({"r": _s("r", StepStatus.FAILED, "UNAVAILABLE", "UPSTREAM_UNAVAILABLE")}) is None
