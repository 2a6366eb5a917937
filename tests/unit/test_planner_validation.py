"""Plan validation: unknown and unpermitted tools, arguments, references, the DAG, persons; re-plans."""

from __future__ import annotations

from typing import Any

import pytest

from agentmesh.planner.v1 import planner_service_pb2
from planner import convert
from planner.embedded.model import PlanResult, PlanStep
from planner.embedded_tier import revise
from planner.local import local_listing
from planner.model import Deadline, Observation, StepError
from planner.validation import People, ToolCatalog, Validation, validate

ALICE = "alice.nguyen@acme.example"


@pytest.fixture(scope="module")
def world() -> tuple[ToolCatalog, People]:
    listing = local_listing("acme", ALICE)
    request = planner_service_pb2.PlanRequest(request="x", tools=listing.tools, denied_tools=listing.denied,
                                              people=listing.people)
    inp = convert.plan_input(request, "acme", ALICE, Deadline.within(5))
    return ToolCatalog(inp.tools, inp.denied), People(inp.people)


def check(world: tuple[ToolCatalog, People], *steps: dict[str, Any], known: tuple[str, ...] = (),
          **plan: Any) -> Validation:
    catalog, people = world
    return validate({"steps": list(steps), **plan}, catalog, people, ALICE, known)


def step(id_: str, tool: str, **args: Any) -> dict[str, Any]:
    return {"id": id_, "tool": tool, "args": args}


def test_a_valid_plan_gets_defaults_and_emails(world) -> None:
    result = check(world, step("s1", "servicenow.list_incidents"), step("s2", "jira.search_issues", assignee="Carol"))
    assert result.ok, result.problems
    assert result.plan.steps[0].args == {"caller": ALICE, "state": "open", "limit": 10}
    assert result.plan.steps[1].args == {"assignee": "carol.diaz@acme.example", "limit": 10}
    assert [s.effect for s in result.plan.steps] == ["READ", "READ"]


def test_unknown_tools_are_rejected(world) -> None:
    result = check(world, step("s1", "okta.delete_user", user="me"))
    assert not result.ok and "okta.delete_user is not one of the requester's tools" in result.problems[0]


def test_a_denied_tool_is_refused_not_planned(world) -> None:
    result = check(world, step("s1", "okta.reset_factors", user="me"), step("s2", "okta.get_user"))
    assert result.ok
    assert [s.tool for s in result.plan.steps] == ["okta.get_user"]
    assert [r.tool for r in result.plan.refusals] == ["okta.reset_factors"]
    assert "no rule allows okta.reset_factors" in result.plan.refusals[0].reason


def test_refusing_a_permitted_tool_is_a_problem(world) -> None:
    result = check(world, refusals=[{"tool": "okta.get_user", "reason": "no"}], explanation="nope")
    assert not result.ok and "may use okta.get_user" in result.problems[0]


@pytest.mark.parametrize("args, fragment", [
    ({"number": "12345"}, "args.number: '12345' does not match"),
    ({}, "'number' is a required property"),
    ({"number": "INC0010001", "colour": "red"}, "Additional properties are not allowed"),
])
def test_arguments_are_checked_against_the_schema(world, args: dict[str, Any], fragment: str) -> None:
    result = check(world, step("s1", "servicenow.get_incident", **args))
    assert not result.ok and any(fragment in p for p in result.problems), result.problems


def test_wrong_types_and_enums_are_reported_with_their_path(world) -> None:
    result = check(world, step("s1", "servicenow.create_incident", short_description="VPN", urgency=7))
    assert result.problems == ["steps[0] (s1 servicenow.create_incident).args.urgency: 7 is not one of [1, 2, 3]"]


def test_alternatives_say_which_arguments_would_do(world) -> None:
    catalog, people = world
    listing = local_listing("acme", "carol.diaz@acme.example")
    request = planner_service_pb2.PlanRequest(request="x", tools=listing.tools, denied_tools=listing.denied)
    inp = convert.plan_input(request, "acme", "carol.diaz@acme.example", Deadline.within(5))
    result = validate({"steps": [step("s1", "servicenow.approve", comment="ok")]}, ToolCatalog(inp.tools, inp.denied),
                      people, "carol.diaz@acme.example")
    assert any("give at least one of: number, requested_for, item" in p for p in result.problems)


def test_references_are_allowed_and_complete_the_dependencies(world) -> None:
    result = check(world, step("s1", "jira.search_issues", text="flaky checkout"),
                   step("s2", "jira.assign_issue", key="{{steps.s1.issues[0].key}}", assignee="me"),
                   step("s3", "jira.add_comment", key="{{ steps.s1.issues[0].key }}",
                        comment="Taking this (was {{steps.s1.issues[0].status}})"))
    assert result.ok, result.problems
    assert result.plan.steps[1].depends_on == ["s1"] and result.plan.steps[2].depends_on == ["s1"]
    assert result.plan.steps[1].args["key"] == "{{steps.s1.issues[0].key}}"  # left as written for the executor


@pytest.mark.parametrize("value, fragment", [
    ("{{steps.s9.key}}", "refers to unknown step 's9'"),
    ("{{steps.s1.issues[first].key}}", "malformed reference"),
    ("{{steps.s2.key}}", "cannot refer to its own result"),
])
def test_bad_references_are_problems(world, value: str, fragment: str) -> None:
    result = check(world, step("s1", "jira.search_issues", text="x"), step("s2", "jira.get_issue", key=value))
    assert any(fragment in p for p in result.problems), result.problems


def test_a_replan_may_refer_to_steps_that_already_ran(world) -> None:
    result = check(world, step("s3", "jira.get_issue", key="{{steps.s1.issues[0].key}}"), known=("s1",))
    assert result.ok and result.plan.steps[0].depends_on == ["s1"]


def test_cycles_and_unknown_dependencies_are_rejected(world) -> None:
    cyclic = check(world, {**step("a", "okta.get_user"), "depends_on": ["b"]},
                   {**step("b", "okta.list_groups"), "depends_on": ["a"]})
    assert any("cycle" in p for p in cyclic.problems)
    dangling = check(world, {**step("a", "okta.get_user"), "depends_on": ["zz"]})
    assert any("unknown step 'zz'" in p for p in dangling.problems)
    duplicate = check(world, step("a", "okta.get_user"), step("a", "okta.list_groups"))
    assert any("duplicate step id" in p for p in duplicate.problems)


def test_person_arguments_resolve_or_are_problems(world) -> None:
    assert check(world, step("s1", "okta.get_user", user="Bob Smith")).plan.steps[0].args == {
        "user": "bob.smith@acme.example"}
    assert check(world, step("s1", "okta.get_user", user="me")).plan.steps[0].args == {"user": ALICE}
    unknown = check(world, step("s1", "okta.get_user", user="Zed Nobody"))
    assert any("nobody in the directory" in p for p in unknown.problems)
    outsider = check(world, step("s1", "okta.get_user", user="mallory@evil.example"))
    assert not outsider.ok


def test_an_ambiguous_name_lists_the_candidates() -> None:
    from planner.embedded.model import Person

    people = People([Person("sam.a@x.example", "Sam Adams", "Sam", "Adams"),
                     Person("sam.b@x.example", "Sam Brown", "Sam", "Brown")])
    catalog = ToolCatalog([], {})
    assert validate({"steps": [], "question": "q"}, catalog, people, "me@x.example").ok
    resolved = people.resolve("Sam", "me@x.example")
    assert not isinstance(resolved, str) and resolved is not None
    assert {p.email for p in resolved.candidates} == {"sam.a@x.example", "sam.b@x.example"}


def test_a_question_cannot_come_with_writes_and_a_plan_cannot_be_empty(world) -> None:
    asked = check(world, step("s1", "servicenow.create_incident", short_description="x"), question="Which laptop?")
    assert any("must not hold WRITE steps" in p for p in asked.problems)
    assert any("give steps, refusals" in p for p in check(world).problems)
    assert check(world, explanation="No tool can delete issues.").ok


def test_nulls_mean_not_given_and_the_shape_is_checked(world) -> None:
    result = check(world, step("s1", "servicenow.create_incident", short_description="VPN", urgency=None))
    assert result.ok and "urgency" not in result.plan.steps[0].args
    catalog, people = world
    assert not validate({"steps": "s1"}, catalog, people, ALICE).ok
    assert not validate(["not", "an", "object"], catalog, people, ALICE).ok


def test_embedded_replan_keeps_successes_and_asks_or_explains() -> None:
    previous = PlanResult([PlanStep("s1", "jira.search_issues", {"text": "x"}),
                           PlanStep("s2", "jira.assign_issue", {"key": "{{steps.s1.issues.key}}"}, ["s1"], "WRITE"),
                           PlanStep("s3", "servicenow.get_incident", {"number": "INC0000009"})])
    observations = [
        Observation("s1", "jira.search_issues", "ok"),
        Observation("s2", "jira.assign_issue", "failed", error=StepError(
            "FAILED_PRECONDITION", "AMBIGUOUS_REFERENCE", "2 match", {"candidates": "ENG-1 Login, ENG-2 Logout"})),
        Observation("s3", "servicenow.get_incident", "failed",
                    error=StepError("NOT_FOUND", "NOT_FOUND", "INC0000009 was not found"))]
    revised = revise(previous, observations)
    assert [s["id"] for s in revised["steps"]] == ["s1"]
    assert "ENG-1 Login, ENG-2 Logout" in revised["question"]
    assert "INC0000009 was not found" in revised["explanation"]
