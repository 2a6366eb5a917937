"""Step references: resolution through dicts and lists, failures, dependencies, renaming; plans: validation, merging."""

from __future__ import annotations

import pytest

from executor import plans, references
from executor.model import Effect, Plan, PlannedStep, StepState, StepStatus
from executor.references import ReferenceFailure

OUTPUTS = {
    "s1": {"issues": [{"key": "ENG-101", "summary": "Flaky checkout test"},
                      {"key": "ENG-102", "summary": "Checkout times out"}],
           "total": 2},
    "s2": {"issues": [{"key": "ENG-7", "assignee": {"name": "Dana Kim", "email": "dana@acme.example"}}]},
    "s3": {"issues": []},
    "s4": {"user": {"manager": None, "email": "alice@acme.example"}},
}


def test_whole_reference_keeps_the_value_type() -> None:
    assert references.resolve({"n": "{{steps.s1.total}}"}, OUTPUTS) == {"n": 2}
    assert references.resolve({"all": "{{ steps.s3.issues }}"}, OUTPUTS) == {"all": []}


def test_index_picks_explicitly_even_among_several() -> None:
    assert references.resolve({"key": "{{steps.s1.issues[1].key}}"}, OUTPUTS) == {"key": "ENG-102"}


def test_key_through_a_single_item_list_reads_that_item() -> None:
    args = references.resolve({"key": "{{steps.s2.issues.key}}", "who": "{{steps.s2.issues.assignee.email}}"},
                              OUTPUTS)
    assert args == {"key": "ENG-7", "who": "dana@acme.example"}


def test_key_through_a_list_of_several_is_ambiguous_with_candidates() -> None:
    with pytest.raises(ReferenceFailure) as info:
        references.resolve({"key": "{{steps.s1.issues.key}}"}, OUTPUTS)
    assert info.value.reason == "AMBIGUOUS_REFERENCE"
    assert info.value.metadata["candidates"] == "ENG-101, ENG-102"
    assert info.value.metadata["count"] == "2"


def test_ambiguous_candidates_fall_back_to_a_label() -> None:
    with pytest.raises(ReferenceFailure) as info:
        references.resolve({"x": "{{steps.s1.issues.assignee}}"}, OUTPUTS)
    assert info.value.metadata["candidates"] == "ENG-101, ENG-102"


@pytest.mark.parametrize("ref", [
    "{{steps.s3.issues.key}}",      # empty list, read through
    "{{steps.s3.issues[0].key}}",   # empty list, indexed
    "{{steps.s1.issues[5].key}}",   # index past the end
    "{{steps.s4.user.manager.email}}",  # null on the way
    "{{steps.s4.user.phone}}",      # missing key
    "{{steps.s9.anything}}",        # step without a result
])
def test_not_found(ref: str) -> None:
    with pytest.raises(ReferenceFailure) as info:
        references.resolve({"a": ref}, OUTPUTS)
    assert info.value.reason == "NOT_FOUND"


def test_references_inside_text_and_nested_values() -> None:
    args = references.resolve({"summary": "Follow up on {{steps.s2.issues[0].key}} ({{steps.s1.total}} open)",
                               "labels": ["{{steps.s2.issues.key}}", "x"]}, OUTPUTS)
    assert args == {"summary": "Follow up on ENG-7 (2 open)", "labels": ["ENG-7", "x"]}


def test_referenced_steps_rename_and_malformed() -> None:
    args = {"a": "{{steps.s1.x}} and {{steps.s2.y[0]}}", "b": ["{{steps.s3.z}}"], "c": "{{steps.s1.x[first]}}"}
    assert references.referenced_steps(args) == {"s1", "s2", "s3"}
    renamed = references.rename(args, {"s1": "s1-r1"})
    assert renamed["a"] == "{{steps.s1-r1.x}} and {{steps.s2.y[0]}}"
    assert references.malformed(args) == ["{{steps.s1.x[first]}}"]


def _step(i: str, tool: str = "jira.get_issue", deps: tuple[str, ...] = (), **args: str) -> PlannedStep:
    return PlannedStep(i, tool, dict(args), deps)


def test_plan_violations_name_the_field() -> None:
    plan = Plan(steps=(
        _step("s1"), _step("s1"), _step("bad id!", tool="Jira"),
        _step("s4", deps=("nope",)), _step("s5", key="{{steps.zz.key}}"), _step("s6", key="{{steps.s1.x[y]}}"),
    ))
    fields = {f for f, _ in plans.violations(plan)}
    assert fields == {"plan.steps[1].id", "plan.steps[2].id", "plan.steps[2].tool", "plan.steps[3].depends_on",
                      "plan.steps[4].arguments.key", "plan.steps[5].arguments.key"}


def test_plan_cycle_through_references_is_refused() -> None:
    plan = Plan(steps=(_step("a", key="{{steps.b.k}}"), _step("b", deps=("a",))))
    assert plans.violations(plan) == [("plan.steps", "the steps' dependencies form a cycle")]


def test_dependencies_include_references() -> None:
    assert plans.dependencies(_step("b", deps=("a",), key="{{steps.c.k}}")) == ("a", "c")


def test_known_steps_of_earlier_rounds_may_be_referred_to() -> None:
    assert plans.violations(Plan(steps=(_step("s9", key="{{steps.s1.k}}"),)), known={"s1"}) == []


def _state(step_id: str, status: StepStatus, planned: dict[str, str], tool: str = "jira.get_issue") -> StepState:
    return StepState(step_id, tool, Effect.READ, status=status, planned=planned)


def test_merge_keeps_unchanged_successes_and_renames_the_rest() -> None:
    existing = {"s1": _state("s1", StepStatus.OK, {"key": "ENG-1"}),
                "s2": _state("s2", StepStatus.FAILED, {"key": "ENG-999"}),
                "s3": _state("s3", StepStatus.OK, {"key": "ENG-3"})}
    revised = Plan(round=1, steps=(
        _step("s1", key="ENG-1"),                         # unchanged success: kept
        _step("s2", key="ENG-2"),                         # failed before: new id
        _step("s3", key="ENG-4"),                         # changed: new id
        _step("s4", deps=("s2",), key="{{steps.s2.key}}"),  # follows the renamed step
    ))
    merged = plans.merge_revision(existing, revised)
    assert [s.id for s in merged.steps] == ["s1", "s2-r1", "s3-r1", "s4"]
    assert merged.steps[3].depends_on == ("s2-r1",)
    assert merged.steps[3].arguments == {"key": "{{steps.s2-r1.key}}"}
