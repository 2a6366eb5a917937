"""The registry's domain logic without a network: people, tools, authorization, idempotency, audit, links, eval."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.fernet import Fernet

from agentmesh.common.v1 import common_pb2
from agentmesh.connector.v1 import connector_pb2
from connectors.common.manifest import load_all
from connectors.common.sandbox import fixtures_dir, load_fixtures
from connectors.registry import evalcheck
from connectors.registry.audit import AuditRow, decode_page_token, encode_page_token, redact_arguments
from connectors.registry.authorization import authorize, denied, precheck
from connectors.registry.catalog import (
    CatalogEntry,
    Tool,
    list_tools,
    load_catalog,
    manifest_violations,
    tools_of,
)
from connectors.registry.directory import Person, people_violations, person_from_fixture, resolve
from connectors.registry.idempotency import call_fingerprint, key_violations
from connectors.registry.oauth import StateSealer, authorize_url
from connectors.registry.policy import Policy, load_policies
from connectors.registry.registrations import OAuthSettings
from connectors.registry.tenants import Tenant, policy_violations, tenant_violations
from connectors.registry.upstream import manifest_dict
from mesh.errors import MeshError, Reason
from mesh.structs import whole_numbers

FIXTURES = load_fixtures()
POLICIES = load_policies(json.loads((fixtures_dir() / "policy.json").read_text()))
ACME, GLOBEX = POLICIES["acme"], POLICIES["globex"]
PEOPLE = [person_from_fixture(u) for u in FIXTURES["acme"]["users"]]
GROUPS = {p.email: p.groups for p in PEOPLE}
TOOLS = {t.name: t for m in load_all().values() for t in tools_of(m)}
CATALOG = load_catalog()
ALICE, BOB, ERIN, FRANK = ("alice.nguyen@acme.example", "bob.smith@acme.example", "erin.walsh@acme.example",
                           "frank.miller@acme.example")


# --- directory -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("query", "email"), [
    ("me", ALICE), ("ME ", ALICE), ("bob.smith@ACME.example", BOB), ("Carol", "carol.diaz@acme.example"),
    ("carol diaz", "carol.diaz@acme.example"), ("Diaz, Carol", "carol.diaz@acme.example"),
    ("Okafor", "dave.okafor@acme.example"),
])
def test_resolve_finds_exactly_one_person(query: str, email: str) -> None:
    assert resolve(PEOPLE, query, ALICE).email == email


def test_resolve_names_candidates_or_says_unknown() -> None:
    twins = [*PEOPLE, Person("alice.ng@acme.example", "Alice Ng", "Alice", "Ng")]
    with pytest.raises(MeshError) as info:
        resolve(twins, "Alice", BOB, argument="user")
    err = info.value
    assert err.reason == Reason.AMBIGUOUS_PERSON and err.code.name == "FAILED_PRECONDITION"
    assert err.metadata["candidate_emails"] == "alice.ng@acme.example,alice.nguyen@acme.example"
    assert "Alice Nguyen <alice.nguyen@acme.example>" in err.message
    assert resolve(twins, "Alice Nguyen", BOB).email == ALICE  # a full name settles it
    for query in ("Zed", "zed@acme.example", "Alice Smith", "!!"):
        with pytest.raises(MeshError) as info:
            resolve(PEOPLE, query, BOB)
        assert info.value.reason == Reason.UNKNOWN_PERSON


def test_me_is_the_requester_even_before_the_directory_knows_them() -> None:
    assert resolve([], "me", "new.hire@acme.example").email == "new.hire@acme.example"


def test_directory_entries_are_checked() -> None:
    bad = [Person("x", "X"), Person(ALICE, ""), Person(ALICE.upper(), "Dup", manager="boss")]
    assert {f for f, _ in people_violations(bad)} == {"people[0].email", "people[1].name", "people[2].email",
                                                     "people[2].manager"}
    assert people_violations(PEOPLE) == []
    assert PEOPLE[0].system_ids["okta"] and PEOPLE[0].name == "Alice Nguyen"


# --- tools -----------------------------------------------------------------------------------------------------------
def test_defaults_fill_and_schema_violations_name_fields() -> None:
    tool = TOOLS["servicenow.create_incident"]
    filled = tool.with_defaults({"short_description": "x", "urgency": 2.0})
    assert filled["caller"] == "me" and filled["urgency"] == 2 and isinstance(filled["urgency"], int)
    assert tool.violations(filled) == []
    fields = {f for f, _ in tool.violations(tool.with_defaults({"urgency": 7, "bogus": True}))}
    assert fields == {"arguments.short_description", "arguments.urgency", "arguments.bogus"}
    assert TOOLS["servicenow.approve"].person_arguments == ("requested_for",)
    assert TOOLS["okta.reset_password"].has_subject and not TOOLS["servicenow.create_incident"].has_subject


def test_person_arguments_without_the_flag_fall_back_to_the_catalog_names() -> None:
    (tool,) = tools_of({"connector": "x", "version": "1", "actions": [{
        "name": "a", "effect": "READ", "arguments_schema": {"type": "object", "properties": {
            "owner": {"type": "string"}, "note": {"type": "string"}, "user": {"type": "integer"}}}}]})
    assert tool.person_arguments == ("owner",)


def test_manifests_are_checked_before_they_are_stored() -> None:
    manifest = {"connector": "okta", "version": "1", "actions": [
        {"name": "a", "effect": "READ", "arguments_schema": {"type": "object"}},
        {"name": "a", "effect": "DELETE", "arguments_schema": {"type": 7}}]}
    problems = manifest_violations(manifest, "jira")
    assert len(problems) == 4
    assert manifest_violations(load_all()["okta"], "okta") == []


def test_manifest_proto_round_trip_keeps_schemas_and_whole_numbers() -> None:
    from connectors.common.service import manifest_proto

    shipped = {**load_all()["servicenow"], "display_name": "ServiceNow"}
    back = manifest_dict(manifest_proto(shipped))
    assert back["version"] == shipped["version"] and [a["name"] for a in back["actions"]] == [
        a["name"] for a in shipped["actions"]]
    assert back["actions"][0]["arguments_schema"] == whole_numbers(shipped["actions"][0]["arguments_schema"])
    assert {a["effect"] for a in back["actions"]} == {"READ", "WRITE"}


def _listing(policy: Policy, email: str, connectors: tuple[str, ...]) -> Any:
    tools = [t for t in TOOLS.values() if t.connector in connectors]
    return list_tools("acme", policy, GROUPS.get(email, ("Everyone",)), tools, CATALOG)


def test_listing_offers_allowed_tools_and_describes_the_rest() -> None:
    alice = _listing(ACME, ALICE, ("okta", "servicenow", "jira", "salesforce"))
    offered = {o.tool.name for o in alice.tools}
    denied = {d.name: d for d in alice.denied}
    assert offered | set(denied) == set(TOOLS)
    assert "okta.reset_password" in offered and "okta.reset_factors" in denied
    assert "salesforce.query" in denied and "rule 6" in denied["salesforce.query"].reason
    erin = _listing(ACME, ERIN, ("okta", "servicenow", "jira", "salesforce"))
    assert {o.tool.name for o in erin.tools if o.confirm_before} == {"okta.add_user_to_group",
                                                                    "okta.remove_user_from_group",
                                                                    "okta.reset_factors"}
    partial = _listing(ACME, ALICE, ("okta",))
    reasons = {d.name: d.reason for d in partial.denied}
    assert "not registered" in reasons["jira.get_issue"]
    globex = list_tools("globex", GLOBEX, ("Everyone",), [t for t in TOOLS.values() if t.connector == "okta"],
                        CATALOG)
    assert "not enabled" in {d.name: d.reason for d in globex.denied}["salesforce.find_account"]


def test_fingerprint_changes_with_groups_versions_and_tenant() -> None:
    all_four = ("okta", "servicenow", "jira", "salesforce")
    base = _listing(ACME, ALICE, all_four).fingerprint
    assert base == _listing(ACME, ALICE, all_four).fingerprint
    assert base != _listing(ACME, ERIN, all_four).fingerprint
    assert base != list_tools("globex", ACME, GROUPS[ALICE], [t for t in TOOLS.values()], CATALOG).fingerprint
    bumped = [Tool(**{**t.__dict__, "version": "9"}) if t.name == "okta.get_user" else t for t in TOOLS.values()]
    assert base != list_tools("acme", ACME, GROUPS[ALICE], bumped, CATALOG).fingerprint


def test_catalog_can_come_from_a_file(tmp_path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps([{"name": "hr.get_payslip", "description": "Payslips.", "examples": ["a"],
                                 "effect": "READ"}]))
    assert load_catalog(path) == [CatalogEntry("hr.get_payslip", "Payslips.", ("a",), "READ")]


# --- authorization -------------------------------------------------------------------------------------------------
def _decide(email: str, tool: str, arguments: dict[str, Any], policy: Policy = ACME) -> Any:
    spec = TOOLS[tool]
    resolved = spec.with_defaults(arguments)
    for name in spec.person_arguments:
        resolved[name] = resolve(PEOPLE, resolved[name], email).email
    return authorize(policy, GROUPS[email], spec, resolved, email)


def test_subject_self_needs_the_requester_and_picks_the_service_credential() -> None:
    own = _decide(FRANK, "okta.unlock_user", {})
    assert own.decision.allowed and own.service_credential and own.subject == FRANK
    other = _decide(ALICE, "okta.reset_password", {"user": "Bob"})
    assert not other.decision.allowed and "only on oneself" in other.decision.reason
    admin = _decide(ERIN, "okta.reset_password", {"user": "Bob"})
    assert admin.decision.allowed and not admin.service_credential and admin.rule.startswith("rule 3")
    # The subject constrains `user` only: a self rule does not care whom an incident is raised for.
    incident = _decide(ALICE, "servicenow.create_incident", {"short_description": "x", "caller": "Bob"})
    assert incident.decision.allowed and incident.subject is None and not incident.service_credential


def test_deny_beats_allow_and_the_error_names_the_rule() -> None:
    decision = precheck(ACME, GROUPS[FRANK], "okta.list_apps", FRANK)
    assert decision is not None and not decision.allowed
    err = denied("okta.list_apps", decision)
    assert err.reason == Reason.POLICY_DENIED and err.code.name == "PERMISSION_DENIED"
    assert err.metadata["rule"].startswith("rule 5: deny Contractors") and err.metadata["rule_index"] == "5"
    assert precheck(ACME, GROUPS[ALICE], "okta.list_apps", ALICE) is None
    unmatched = denied("servicenow.approve", ACME.decide(GROUPS[ALICE], "servicenow.approve", None, ALICE))
    assert unmatched.metadata["rule"] == "no rule allows it (default deny)"


def test_every_public_eval_case_gets_the_expected_decision() -> None:
    results = evalcheck.check()
    assert len(results) == 36
    assert [r.case_id for r in results if not r.matches] == []
    by_id = {r.case_id: r for r in results}
    assert [d.allowed for d in by_id["pub-07"].decisions] == [False]
    assert [d.allowed for d in by_id["pub-08"].decisions] == [True]
    assert [d.arguments["user"] for d in by_id["pub-31"].decisions] == [FRANK]


# --- idempotency, tenants, audit, links ----------------------------------------------------------------------------
def test_call_fingerprint_covers_user_tool_and_arguments() -> None:
    base = call_fingerprint(ALICE, "jira.add_comment", {"key": "ENG-1", "comment": "x"})
    assert base == call_fingerprint(ALICE.upper(), "jira.add_comment", {"comment": "x", "key": "ENG-1"})
    assert base != call_fingerprint(BOB, "jira.add_comment", {"key": "ENG-1", "comment": "x"})
    assert base != call_fingerprint(ALICE, "jira.add_comment", {"key": "ENG-1", "comment": "y"})
    assert key_violations("") and key_violations("x" * 201) and key_violations("a\nb") and not key_violations("r:s1")


def test_policy_documents_are_validated_with_paths() -> None:
    for tenant in ("acme", "globex"):
        document = json.loads((fixtures_dir() / "policy.json").read_text())[tenant]
        assert policy_violations(document) == []
    bad = {"rules": [{"effect": "allow", "groups": "Everyone", "tools": ["*"]}], "confirm_before": [3],
           "rate_limits": {"tenant_rps": -1}, "surprise": True}
    assert {f for f, _ in policy_violations(bad)} == {
        "tenant.policy.rules[0].groups", "tenant.policy.confirm_before[0]", "tenant.policy.rate_limits.tenant_rps",
        "tenant.policy"}
    assert {f for f, _ in tenant_violations(Tenant("Bad Id", {"rules": []}))} == {"tenant.tenant_id"}


def test_audit_arguments_are_redacted_and_bounded() -> None:
    row = redact_arguments({"comment": "x" * 5000, "password": "hunter2", "nested": [{"api_token": "t"}],
                            "user": ALICE})
    assert row["password"] == "[redacted]" and row["nested"][0]["api_token"] == "[redacted]"
    assert len(row["comment"]) < 2100 and row["user"] == ALICE


def test_page_tokens_round_trip_and_reject_garbage() -> None:
    from datetime import UTC, datetime

    row = AuditRow("acme", ALICE, "tool_call", id="3f0b1c9e-58e4-4a8a-b1ce-4f0c1f4a0d11",
                   create_time=datetime(2026, 5, 1, 12, tzinfo=UTC))
    assert decode_page_token(encode_page_token(row)) == (row.create_time, row.id)
    for garbage in ("x", "YWJj", ""):
        with pytest.raises(ValueError):
            decode_page_token(garbage)


def test_link_states_are_sealed_and_expire() -> None:
    sealer = StateSealer(Fernet.generate_key(), ttl_s=60)
    state = sealer.seal("acme", ALICE, "jira")
    opened = sealer.open(state)
    assert (opened.tenant, opened.user, opened.connector) == ("acme", ALICE, "jira")
    assert ALICE not in state  # opaque
    old = sealer.fernet.encrypt_at_time(json.dumps({"t": "acme", "u": ALICE, "c": "jira", "n": "x"}).encode(),
                                        int(time.time()) - 3600).decode()
    for bad in (old, state[:-3] + "abc", StateSealer(Fernet.generate_key(), 60).seal("acme", ALICE, "jira")):
        with pytest.raises(MeshError) as info:
            sealer.open(bad)
        assert info.value.field_violations and next(iter(info.value.field_violations))[0] == "state"


def test_authorize_url_carries_client_redirect_state_scopes_and_hint() -> None:
    oauth = OAuthSettings("https://vendor.example/authorize?audience=api", "https://vendor.example/token",
                          "agentmesh", ("read", "write"))
    url = authorize_url(oauth, "https://registry.example/oauth/callback", "STATE", ALICE)
    query = parse_qs(urlsplit(url).query)
    assert url.startswith("https://vendor.example/authorize?audience=api&")
    assert query == {"audience": ["api"], "response_type": ["code"], "client_id": ["agentmesh"],
                     "redirect_uri": ["https://registry.example/oauth/callback"], "state": ["STATE"],
                     "login_hint": [ALICE], "scope": ["read write"]}


def test_protos_used_for_tool_specs_exist() -> None:
    spec = common_pb2.ToolSpec(name="x.y", confirm_before=True)
    assert spec.confirm_before
    assert connector_pb2.CREDENTIAL_KIND_SERVICE


def test_audit_since_takes_spans_and_iso_times() -> None:
    import argparse
    from datetime import UTC, datetime, timedelta

    from connectors.registry.cli import parse_since

    now = datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert parse_since("1h", now) == now - timedelta(hours=1)
    assert parse_since("90s", now) == now - timedelta(seconds=90)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-04-30T08:00:00", now) == datetime(2026, 4, 30, 8, tzinfo=UTC)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_since("yesterday", now)
