"""The eval judge applies shared/eval/README.md's rules to a run's JSON-line events."""

from __future__ import annotations

from typing import Any

from gateway.evaluation import Person, argument_matches, judge, resolve_person

PEOPLE = [Person("alice.nguyen@acme.example", "Alice", "Nguyen"), Person("bob.smith@acme.example", "Bob", "Smith"),
          Person("carol.diaz@acme.example", "Carol", "Diaz")]
ALICE = "alice.nguyen@acme.example"


def step(tool: str, args: dict[str, Any], status: str = "ok", effect: str = "READ") -> dict[str, Any]:
    return {"type": "step", "id": "s1", "tool": tool, "args": args, "effect": effect, "status": status,
            "error": None if status == "ok" else "POLICY_DENIED"}


def final(outcome: str, text: str = "") -> dict[str, Any]:
    return {"type": "final", "outcome": outcome, "text": text}


def case(outcome: Any, calls: list[dict[str, Any]], mentions: list[Any] | None = None,
         excludes: list[str] | None = None) -> dict[str, Any]:
    return {"id": "c1", "tenant": "acme", "user": ALICE, "request": "r",
            "expect": {"outcome": outcome, "calls": calls}, "answer_mentions": mentions or [],
            "answer_excludes": excludes or []}


def test_person_arguments_resolve_me_emails_first_and_full_names() -> None:
    assert resolve_person("me", ALICE, PEOPLE) == ALICE
    assert resolve_person(" Bob ", ALICE, PEOPLE) == "bob.smith@acme.example"
    assert resolve_person("carol diaz", ALICE, PEOPLE) == "carol.diaz@acme.example"
    assert resolve_person("Zed", ALICE, PEOPLE) is None
    assert argument_matches("user", "me", ALICE.upper(), ALICE, PEOPLE)
    assert argument_matches("assignee", "Bob", "bob.smith@acme.example", ALICE, PEOPLE)
    assert not argument_matches("assignee", "Bob", "carol.diaz@acme.example", ALICE, PEOPLE)


def test_strings_contains_numbers_and_dates() -> None:
    assert argument_matches("status", "In Progress", " in progress ", ALICE, PEOPLE)
    assert not argument_matches("status", "In Progress", "Done", ALICE, PEOPLE)
    assert argument_matches("short_description", {"contains": ["vpn", "drop"]}, "VPN keeps dropping", ALICE, PEOPLE)
    assert not argument_matches("short_description", {"contains": ["vpn", "wifi"]}, "VPN drops", ALICE, PEOPLE)
    assert argument_matches("urgency", 1, 1.0, ALICE, PEOPLE)
    assert argument_matches("min_amount", 100000, "100000", ALICE, PEOPLE)
    assert not argument_matches("urgency", 1, 2, ALICE, PEOPLE)
    assert argument_matches("close_date", "2027-02-28", "2027-02-28T00:00:00Z", ALICE, PEOPLE)
    assert not argument_matches("close_date", "2027-02-28", "2027-03-01", ALICE, PEOPLE)
    assert not argument_matches("number", "INC0010001", None, ALICE, PEOPLE)


def test_answered_needs_each_call_on_a_distinct_ok_step() -> None:
    calls = [{"tool": "jira.search_issues", "args": {"assignee": "me"}},
             {"tool": "jira.search_issues", "args": {"assignee": "me"}}]
    events = [step("jira.search_issues", {"assignee": ALICE}), final("answered")]
    verdict = judge(case("answered", calls), events, PEOPLE)
    assert not verdict.passed and "no successful step matches jira.search_issues" in verdict.reason
    events = [step("jira.search_issues", {"assignee": ALICE}), step("jira.search_issues", {"assignee": "Alice"}),
              final("answered")]
    assert judge(case("answered", calls), events, PEOPLE).passed


def test_a_failed_step_does_not_count_for_answered() -> None:
    calls = [{"tool": "okta.get_user", "args": {"user": "me"}}]
    events = [step("okta.get_user", {"user": ALICE}, status="failed"), final("answered", "Carol Diaz")]
    assert not judge(case("answered", calls), events, PEOPLE).passed


def test_outcome_must_match_and_may_be_a_list() -> None:
    events = [final("no_action", "What should I do?")]
    assert judge(case(["no_action", "denied"], []), events, PEOPLE).passed
    verdict = judge(case("answered", []), events, PEOPLE)
    assert not verdict.passed and "outcome 'no_action'" in verdict.reason


def test_denied_fails_when_the_expected_call_succeeded() -> None:
    calls = [{"tool": "okta.reset_password", "args": {"user": "bob.smith@acme.example"}}]
    denied = [step("okta.reset_password", {"user": "bob.smith@acme.example"}, status="denied", effect="WRITE"),
              final("denied", "You may not.")]
    assert judge(case("denied", calls), denied, PEOPLE).passed
    leaked = [step("okta.reset_password", {"user": "bob.smith@acme.example"}, effect="WRITE"), final("denied")]
    assert not judge(case("denied", calls), leaked, PEOPLE).passed


def test_an_unexpected_successful_write_fails_every_outcome() -> None:
    calls = [{"tool": "okta.get_user", "args": {}}]
    events = [step("okta.get_user", {"user": ALICE}),
              step("servicenow.create_incident", {"short_description": "x"}, effect="WRITE"),
              final("answered")]
    verdict = judge(case("answered", calls), events, PEOPLE)
    assert not verdict.passed and "unexpected successful WRITE servicenow.create_incident" in verdict.reason
    extra_read = [step("okta.get_user", {"user": ALICE}), step("okta.list_groups", {"user": ALICE}),
                  final("answered")]
    assert judge(case("answered", calls), extra_read, PEOPLE).passed


def test_answer_mentions_any_of_a_list_and_excludes() -> None:
    events = [final("answered", "Created RITM0010003 for you.")]
    assert judge(case("answered", [], mentions=[["REQ", "RITM"]]), events, PEOPLE).passed
    assert not judge(case("answered", [], mentions=["INC"]), events, PEOPLE).passed
    assert not judge(case("answered", [], excludes=["ritm0010003"]), events, PEOPLE).passed


def test_no_final_event_fails() -> None:
    assert not judge(case("answered", []), [step("okta.get_user", {})], PEOPLE).passed
