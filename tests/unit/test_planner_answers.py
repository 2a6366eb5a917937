"""Templated answers (what was done and what was not, names beside ids) and the grounding check of LLM answers."""

from __future__ import annotations

from typing import Any

from planner.embedded.model import PlanResult, PlanStep, Refusal
from planner.grounding import Grounding
from planner.model import AnswerInput, Deadline, Observation, StepError
from planner.templates import render

ALICE = "alice.nguyen@acme.example"
ISSUES = {"issues": [
    {"key": "ENG-101", "summary": "Login page times out", "status": "In Progress", "priority": "High",
     "issue_type": "Bug", "assignee": {"name": "Alice Nguyen", "email": ALICE}},
    {"key": "ENG-102", "summary": "Flaky checkout test", "status": "To Do", "priority": None, "issue_type": "Task",
     "assignee": None}], "total": 2, "jql": "assignee = x"}
OPPORTUNITIES = {"opportunities": [
    {"id": "006A", "name": "Umbrella Expansion", "account": "Umbrella Corp", "amount": 250000, "stage": "Negotiation",
     "close_date": "2027-01-31", "owner": {"name": "Bob Smith", "email": "bob.smith@acme.example"}}], "total": 1}


def answer(*results: Observation, plan: PlanResult | None = None, request: str = "help") -> AnswerInput:
    steps = [PlanStep(r.step_id, r.tool, dict(r.arguments)) for r in results]
    return AnswerInput("acme", ALICE, request, plan or PlanResult(steps), "fast", tuple(results), "answered",
                       Deadline.within(5))


def ok(step_id: str, tool: str, output: dict[str, Any], **args: Any) -> Observation:
    return Observation(step_id, tool, "ok", "READ", args, output)


def test_search_results_put_names_beside_keys() -> None:
    text = render(answer(ok("s1", "jira.search_issues", ISSUES, assignee=ALICE)))
    assert 'ENG-101 "Login page times out" (In Progress, Alice Nguyen)' in text
    assert 'ENG-102 "Flaky checkout test" (To Do)' in text and "I found 2 issues" in text


def test_created_records_are_named_with_their_numbers() -> None:
    created = {"number": "INC0010042", "sys_id": "x", "short_description": "VPN drops", "state": "New", "urgency": 1,
               "category": None, "caller": {"name": "Alice Nguyen", "email": ALICE}, "url": "u"}
    text = render(answer(ok("s1", "servicenow.create_incident", created, short_description="VPN drops")))
    assert text == 'I opened incident INC0010042 "VPN drops" for Alice Nguyen (urgency high, state New).'


def test_what_was_not_done_is_said_plainly() -> None:
    results = (
        ok("s1", "salesforce.list_opportunities", OPPORTUNITIES, owner="bob.smith@acme.example"),
        Observation("s2", "okta.reset_password", "denied", "WRITE", {"user": "erin.walsh@acme.example"},
                    error=StepError("PERMISSION_DENIED", "POLICY_DENIED", "allowed only on oneself")),
        Observation("s3", "servicenow.get_incident", "failed", "READ", {"number": "INC0000404"},
                    error=StepError("NOT_FOUND", "NOT_FOUND", "INC0000404 was not found.")),
        Observation("s4", "jira.assign_issue", "skipped", "WRITE", {"key": "{{steps.s3.key}}", "assignee": ALICE}),
        Observation("s5", "okta.add_user_to_group", "skipped", "WRITE", {"group": "VPN-Users", "user": ALICE},
                    error=StepError("FAILED_PRECONDITION", "CONFIRMATION_DECLINED", "declined")),
    )
    plan = PlanResult([PlanStep(r.step_id, r.tool, dict(r.arguments)) for r in results],
                      [Refusal("okta.reset_factors", "no rule allows okta.reset_factors for groups Everyone")],
                      question="Which laptop model do you want?")
    lines = render(answer(*results, plan=plan)).splitlines()
    assert lines[0] == ("1 opportunities: Umbrella Expansion (Umbrella Corp, amount 250,000, Negotiation, closes "
                        "2027-01-31).")
    assert lines[1] == "I couldn't reset the password of erin.walsh@acme.example: allowed only on oneself."
    assert lines[2] == "I couldn't look up INC0000404: INC0000404 was not found."
    assert lines[3] == "I didn't assign it to alice.nguyen@acme.example, because a step it needed did not succeed."
    assert lines[4] == "I didn't add alice.nguyen@acme.example to the group VPN-Users, because it was not confirmed."
    assert lines[5] == "I can't use okta.reset_factors for you: no rule allows okta.reset_factors for groups Everyone."
    assert lines[6] == "Which laptop model do you want?"


def test_a_plan_that_only_asks_or_explains_says_so() -> None:
    assert render(answer(plan=PlanResult(explanation="No tool I have can delete issues."))) == \
        "No tool I have can delete issues."
    assert render(answer(plan=PlanResult())) == "I didn't do anything for that request."


def test_a_tool_without_a_template_uses_the_connector_summary() -> None:
    result = Observation("s1", "acme.custom_action", "ok", "READ", {}, {"x": 1}, "Custom thing done: 3 rows.")
    assert render(answer(result)) == "Custom thing done: 3 rows."


def test_malformed_output_never_breaks_the_answer() -> None:
    result = Observation("s1", "jira.search_issues", "ok", "READ", {}, {"issues": "not a list", "total": "?"},
                         "2 issues")
    assert render(answer(result)) == "2 issues"


def grounding() -> Grounding:
    return Grounding.of(answer(ok("s1", "jira.search_issues", ISSUES),
                               ok("s2", "salesforce.list_opportunities", OPPORTUNITIES),
                               request="Show my open Jira issues and opportunities over $100k"))


def test_grounded_answers_pass() -> None:
    text = ("You have 2 issues: ENG-101 Login page times out (In Progress, assigned to Alice Nguyen) and ENG-102 "
            "Flaky checkout test. Umbrella Expansion at Umbrella Corp is worth $250k and closes on January 31, 2027. "
            "I looked for opportunities over $100,000 in Salesforce.")
    assert grounding().ungrounded(text) == []


def test_invented_identifiers_numbers_and_names_are_caught() -> None:
    check = grounding().ungrounded
    assert check("I also opened INC0099999 for you.") == ["INC0099999"]
    assert check("ENG-999 is blocked.") == ["ENG-999"]
    assert check("The deal is worth $400k.") == ["400k"]
    assert check("It was assigned to Maria Lopez yesterday.") == ["Maria", "Lopez"]
    assert check("Ping dave.okafor@acme.example about it.") == ["dave.okafor@acme.example"]
