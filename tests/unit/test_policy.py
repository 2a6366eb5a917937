"""Tenant policy evaluation against every rule of the demo tenants' fixtures/policy.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from connectors.registry.policy import Policy, Rule, load_policies


def _fixtures() -> Path:
    env = os.environ.get("AGENTMESH_FIXTURES")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "fixtures"


def _load(name: str) -> Any:
    return json.loads((_fixtures() / name).read_text())


POLICIES = load_policies(_load("policy.json"))
ACME = POLICIES["acme"]
GLOBEX = POLICIES["globex"]
GROUPS = {
    user["email"]: user["groups"]
    for tenant in ("acme", "globex")
    for user in _load(f"{tenant}.json")["users"]
}

ALICE = "alice.nguyen@acme.example"  # Everyone, Engineering
BOB = "bob.smith@acme.example"  # Sales
CAROL = "carol.diaz@acme.example"  # Managers
ERIN = "erin.walsh@acme.example"  # IT-Admins
FRANK = "frank.miller@acme.example"  # Contractors
HENRY = "henry.park@acme.example"  # IT-Admins, Managers
IVAN = "ivan.petrov@globex.example"  # globex IT-Admins
JUDY = "judy.chen@globex.example"  # globex Everyone


def decide(policy: Policy, user: str, tool: str, subject: str | None = None) -> tuple[bool, int | None]:
    decision = policy.decide(GROUPS[user], tool, subject, user)
    return decision.allowed, decision.rule_index


def test_policies_load_every_tenant_and_skip_documentation_keys() -> None:
    assert set(POLICIES) == {"acme", "globex"}
    assert len(ACME.rules) == 7
    assert ACME.connectors == ("servicenow", "jira", "salesforce", "okta")
    assert ACME.model_tiers["fast"] == "embedded"
    assert ACME.rate_limits["user_per_minute"] == 60


@pytest.mark.parametrize(
    ("user", "tool", "subject"),
    [
        (ALICE, "okta.get_user", BOB),
        (ALICE, "okta.list_groups", ALICE),
        (ALICE, "servicenow.get_incident", None),
        (ALICE, "servicenow.list_approvals", None),
        (ALICE, "jira.search_issues", None),
        (ALICE, "salesforce.find_account", None),
    ],
)
def test_reads_are_allowed_to_everyone_by_rule_0(user: str, tool: str, subject: str | None) -> None:
    assert decide(ACME, user, tool, subject) == (True, 0)


@pytest.mark.parametrize(
    "tool",
    ["servicenow.create_incident", "servicenow.add_comment", "servicenow.request_catalog_item", "jira.create_issue",
     "jira.add_comment", "jira.transition_issue", "jira.assign_issue"],
)
def test_self_rule_sets_nothing_for_tools_without_a_user_argument(tool: str) -> None:
    assert decide(ACME, ALICE, tool, None) == (True, 1)


@pytest.mark.parametrize("tool", ["okta.reset_password", "okta.unlock_user"])
def test_self_service_on_oneself_is_allowed_by_rule_1(tool: str) -> None:
    assert decide(ACME, FRANK, tool, FRANK) == (True, 1)
    assert decide(ACME, ALICE, tool, "Alice.Nguyen@ACME.example ") == (True, 1)


@pytest.mark.parametrize("tool", ["okta.reset_password", "okta.unlock_user"])
def test_self_rule_does_not_match_another_subject(tool: str) -> None:
    decision = ACME.decide(GROUPS[ALICE], tool, BOB, ALICE)
    assert not decision.allowed
    assert decision.rule_index is None
    assert "oneself" in decision.reason


def test_subject_any_lifts_the_self_constraint_for_it_admins() -> None:
    assert decide(ACME, ERIN, "okta.reset_password", BOB) == (True, 3)
    assert decide(ACME, ERIN, "okta.reset_factors", FRANK) == (True, 3)
    assert decide(ACME, ERIN, "okta.add_user_to_group", ALICE) == (True, 3)
    assert decide(ACME, HENRY, "servicenow.update_incident", None) == (True, 3)


def test_first_matching_allow_decides_when_several_allow() -> None:
    assert decide(ACME, ERIN, "okta.reset_password", ERIN) == (True, 1)


def test_tools_outside_every_rule_are_denied() -> None:
    decision = ACME.decide(GROUPS[ALICE], "servicenow.update_incident", None, ALICE)
    assert (decision.allowed, decision.rule_index) == (False, None)
    assert "no rule allows" in decision.reason
    assert decide(ACME, ALICE, "okta.reset_factors", ALICE) == (False, None)
    assert decide(ACME, ALICE, "okta.add_user_to_group", ALICE) == (False, None)
    assert decide(ACME, ALICE, "servicenow.approve", None) == (False, None)
    assert decide(ACME, ALICE, "salesforce.update_opportunity", None) == (False, None)


def test_managers_may_approve_and_reject_by_rule_2() -> None:
    assert decide(ACME, CAROL, "servicenow.approve", None) == (True, 2)
    assert decide(ACME, CAROL, "servicenow.reject", None) == (True, 2)


def test_sales_may_write_salesforce_by_rule_4() -> None:
    for tool in ("salesforce.update_opportunity", "salesforce.create_case", "salesforce.create_task"):
        assert decide(ACME, BOB, tool) == (True, 4)


def test_contractor_deny_beats_the_everyone_allow() -> None:
    decision = ACME.decide(GROUPS[FRANK], "salesforce.list_opportunities", None, FRANK)
    assert (decision.allowed, decision.rule_index) == (False, 5)
    assert "deny Contractors" in decision.rule
    assert decide(ACME, FRANK, "okta.list_apps", FRANK) == (False, 5)
    assert decide(ACME, FRANK, "okta.list_groups", FRANK) == (True, 0)
    assert decide(ACME, FRANK, "okta.unlock_user", FRANK) == (True, 1)


def test_salesforce_query_is_denied_to_everyone_by_rule_6() -> None:
    assert decide(ACME, BOB, "salesforce.query") == (False, 6)
    assert not ACME.may_use(GROUPS[BOB], "salesforce.query")


def test_globex_rules() -> None:
    assert decide(GLOBEX, JUDY, "jira.create_issue") == (True, 0)
    assert decide(GLOBEX, JUDY, "servicenow.create_incident") == (True, 0)
    assert decide(GLOBEX, JUDY, "jira.transition_issue") == (False, None)
    assert decide(GLOBEX, JUDY, "okta.reset_password", JUDY) == (False, None)
    assert decide(GLOBEX, IVAN, "servicenow.update_incident") == (True, 1)
    assert decide(GLOBEX, IVAN, "okta.reset_password", JUDY) == (True, 1)


def test_a_connector_the_tenant_did_not_register_is_denied() -> None:
    decision = GLOBEX.decide(GROUPS[IVAN], "salesforce.list_opportunities", None, IVAN)
    assert not decision.allowed
    assert "salesforce" in decision.reason
    assert not GLOBEX.may_use(GROUPS[IVAN], "salesforce.find_account")


def test_unknown_groups_match_no_rule() -> None:
    assert not ACME.decide([], "okta.get_user", ALICE, ALICE).allowed
    assert not ACME.may_use(["Visitors"], "okta.get_user")


@pytest.mark.parametrize(
    ("user", "tool", "expected"),
    [
        (ALICE, "okta.reset_password", True),  # only the subject rule can refuse it
        (ALICE, "okta.get_user", True),
        (ALICE, "servicenow.update_incident", False),
        (ALICE, "okta.reset_factors", False),
        (ALICE, "servicenow.approve", False),
        (CAROL, "servicenow.approve", True),
        (ERIN, "okta.remove_user_from_group", True),
        (BOB, "salesforce.create_case", True),
        (FRANK, "salesforce.list_opportunities", False),
        (FRANK, "okta.list_apps", False),
        (FRANK, "okta.unlock_user", True),
    ],
)
def test_may_use_ignores_the_subject(user: str, tool: str, expected: bool) -> None:
    assert ACME.may_use(GROUPS[user], tool) is expected


def test_a_deny_with_a_self_subject_only_matches_on_oneself() -> None:
    policy = Policy.from_dict(
        {
            "rules": [
                {"effect": "allow", "groups": ["Everyone"], "tools": ["okta.*"], "subject": "any"},
                {"effect": "deny", "groups": ["Everyone"], "tools": ["okta.reset_factors"], "subject": "self"},
            ]
        }
    )
    assert not policy.decide(["Everyone"], "okta.reset_factors", ALICE, ALICE).allowed
    assert policy.decide(["Everyone"], "okta.reset_factors", BOB, ALICE).allowed
    assert policy.may_use(["Everyone"], "okta.reset_factors")


def test_confirmation_and_service_credential_settings() -> None:
    assert ACME.needs_confirmation("okta.reset_factors")
    assert not ACME.needs_confirmation("okta.reset_password")
    assert ACME.uses_service_credential("okta.unlock_user", FRANK, FRANK)
    assert not ACME.uses_service_credential("okta.unlock_user", BOB, FRANK)
    assert not ACME.uses_service_credential("okta.get_user", FRANK, FRANK)
    assert not GLOBEX.uses_service_credential("okta.unlock_user", JUDY, JUDY)


def test_rules_reject_unknown_effects_and_subjects() -> None:
    with pytest.raises(ValueError, match="effect"):
        Rule.from_dict({"effect": "maybe", "groups": ["Everyone"], "tools": ["*"]})
    with pytest.raises(ValueError, match="subject"):
        Rule.from_dict({"effect": "allow", "groups": ["Everyone"], "tools": ["*"], "subject": "others"})
    rule = Rule.from_dict({"effect": "allow", "groups": ["A"], "tools": ["x.*"]})
    assert rule.describe(0) == "rule 0: allow A -> x.*"
