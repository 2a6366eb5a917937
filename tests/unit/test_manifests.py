"""The connector manifests honour catalog.md: every tool, effect and argument, valid schemas, fresh examples."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from connectors.common.manifest import load_all, tool_specs
from connectors.common.sandbox import fixtures_dir

SHARED = fixtures_dir().parent
PERSON_ARGUMENTS = {"user", "assignee", "assigned_to", "owner", "caller", "requested_for"}
ALLOWED_SCOPES = {
    "okta": {"okta.users.read", "okta.users.manage", "okta.groups.read", "okta.groups.manage", "okta.apps.read"},
    "servicenow": {"useraccount"},
    "jira": {"read:jira-work", "write:jira-work", "read:jira-user"},
    "salesforce": {"api"},
}
NEAR_DUPLICATE = 0.8


def _catalog_tools() -> dict[str, dict[str, Any]]:
    """Parses catalog.md's tables: {tool: {"effect", "arguments": {name: {"optional", "default"?}}}}, in order."""
    tools: dict[str, dict[str, Any]] = {}
    for line in (SHARED / "catalog.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not re.fullmatch(r"[a-z]+\.[a-z_]+", cells[0]):
            continue
        tool, arguments, effect = cells[0], cells[1], cells[2]
        if arguments.startswith("same as "):
            connector = tool.split(".")[0]
            same_as = f"{connector}.{arguments.removeprefix('same as ')}"
            tools[tool] = {"effect": effect, "arguments": tools[same_as]["arguments"]}
            continue
        arguments = arguments.split(" — ")[0]
        arguments = re.sub(r"\([^)]*\)", "", arguments)
        parsed: dict[str, dict[str, Any]] = {}
        for token in (t.strip() for t in arguments.split(",")):
            if not token:
                continue
            match = re.fullmatch(r"(\w+)(\?)?(?:=(.+))?", token)
            assert match, f"cannot parse argument {token!r} of {tool}"
            spec: dict[str, Any] = {"optional": bool(match.group(2))}
            if match.group(3) is not None:
                spec["default"] = json.loads(match.group(3))
            parsed[match.group(1)] = spec
        tools[tool] = {"effect": effect, "arguments": parsed}
    return tools


def _eval_requests() -> list[str]:
    lines = (SHARED / "eval" / "planner-public.jsonl").read_text().splitlines()
    return [json.loads(line)["request"] for line in lines if line.strip()]


CATALOG = _catalog_tools()
SPECS = {spec["name"]: spec for spec in tool_specs()}


def _subschemas(schema: Any) -> Iterator[dict[str, Any]]:
    """Every schema object nested in a schema (properties, items, anyOf, ...)."""
    if isinstance(schema, dict):
        yield schema
        for key, value in schema.items():
            if key in ("properties", "$defs"):
                for sub in value.values():
                    yield from _subschemas(sub)
            elif key in ("items", "not", "if", "then", "else"):
                yield from _subschemas(value)
            elif key in ("anyOf", "allOf", "oneOf"):
                for sub in value:
                    yield from _subschemas(sub)


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_catalog_is_parsed() -> None:
    assert len(CATALOG) == 31
    assert CATALOG["servicenow.list_incidents"]["arguments"]["limit"] == {"optional": False, "default": 10}
    assert CATALOG["servicenow.reject"]["arguments"] == CATALOG["servicenow.approve"]["arguments"]


@pytest.mark.parametrize("tool", list(CATALOG))
def test_catalog_tool_is_offered_with_its_effect_and_arguments(tool: str) -> None:
    assert tool in SPECS, f"{tool} is missing from the manifests"
    spec, entry = SPECS[tool], CATALOG[tool]
    assert spec["effect"] == entry["effect"]
    schema = spec["arguments_schema"]
    assert set(schema["properties"]) == set(entry["arguments"])
    required = {name for name, arg in entry["arguments"].items() if not arg["optional"] and "default" not in arg}
    assert set(schema.get("required", [])) == required
    for name, arg in entry["arguments"].items():
        if "default" in arg:
            assert schema["properties"][name].get("default") == arg["default"], f"{tool}.{name} default"
        else:
            assert "default" not in schema["properties"][name], f"{tool}.{name} has no default in the catalog"


def test_actions_follow_catalog_order() -> None:
    for connector, manifest in load_all().items():
        names = [f"{connector}.{action['name']}" for action in manifest["actions"]]
        in_catalog = [name for name in names if name in CATALOG]
        assert in_catalog == [tool for tool in CATALOG if tool.startswith(f"{connector}.")]
        assert manifest["connector"] == connector
        assert re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"])


def test_tool_specs_are_named_by_connector_and_action() -> None:
    specs = tool_specs()
    assert len(specs) == len(SPECS) == sum(len(m["actions"]) for m in load_all().values())
    for spec in specs:
        assert spec["name"].startswith(f"{spec['connector']}.")
        assert {"description", "effect", "scopes", "arguments_schema", "result_schema", "examples"} <= set(spec)


@pytest.mark.parametrize("tool", list(SPECS))
def test_schemas_are_valid_and_defaults_fit_them(tool: str) -> None:
    spec = SPECS[tool]
    for kind in ("arguments_schema", "result_schema"):
        schema = spec[kind]
        Draft202012Validator.check_schema(schema)
        assert schema["type"] == "object"
        for sub in _subschemas(schema):
            if "default" in sub:
                errors = list(_validator(sub).iter_errors(sub["default"]))
                assert not errors, f"{tool} {kind}: default {sub['default']!r} fails its schema: {errors[0].message}"
    arguments = spec["arguments_schema"]
    assert arguments["additionalProperties"] is False
    for name, prop in arguments["properties"].items():
        assert prop.get("description"), f"{tool}.{name} has no description"
        if prop.get("type") == "string" and "enum" not in prop and "format" not in prop:
            assert "maxLength" in prop or "pattern" in prop, f"{tool}.{name} is an unbounded string"


@pytest.mark.parametrize("tool", list(SPECS))
def test_person_arguments_are_marked(tool: str) -> None:
    for name, prop in SPECS[tool]["arguments_schema"]["properties"].items():
        is_person = name in PERSON_ARGUMENTS
        assert prop.get("x-agentmesh-person", False) is is_person, f"{tool}.{name}"
        if is_person:
            assert '"me"' in prop["description"]
            assert "email" in prop["description"]


@pytest.mark.parametrize("tool", list(SPECS))
def test_scopes_are_the_vendors(tool: str) -> None:
    spec = SPECS[tool]
    assert spec["scopes"]
    assert set(spec["scopes"]) <= ALLOWED_SCOPES[spec["connector"]]


@pytest.mark.parametrize("tool", list(SPECS))
def test_lists_in_results_carry_a_total(tool: str) -> None:
    result = SPECS[tool]["result_schema"]
    lists = [name for name, prop in result["properties"].items() if prop.get("type") == "array"
             and name not in ("changes", "comments", "approvers")]
    if lists:
        assert "total" in result["required"], f"{tool} lists {lists} without a total"
        assert all(name.endswith("s") for name in lists)


@pytest.mark.parametrize("tool", list(SPECS))
def test_examples_are_plenty_and_not_copied_from_the_eval(tool: str) -> None:
    examples = SPECS[tool]["examples"]
    assert len(examples) >= 3
    assert len(set(examples)) == len(examples)
    for example in examples:
        for request in _eval_requests():
            ratio = difflib.SequenceMatcher(None, example.lower(), request.lower()).ratio()
            assert ratio < NEAR_DUPLICATE, f"{tool} example {example!r} is close to eval request {request!r}"


def test_examples_are_unique_across_tools() -> None:
    seen: dict[str, str] = {}
    for name, spec in SPECS.items():
        for example in spec["examples"]:
            assert example.lower() not in seen, f"{example!r} is given for {seen.get(example.lower())} and {name}"
            seen[example.lower()] = name


@pytest.mark.parametrize(
    ("tool", "arguments", "valid"),
    [
        ("servicenow.approve", {}, False),
        ("servicenow.approve", {"comment": "fine by me"}, False),
        ("servicenow.approve", {"item": "headset"}, True),
        ("servicenow.reject", {"number": "RITM0012345", "comment": "budget is frozen"}, True),
        ("servicenow.reject", {"number": "REQ0012345"}, False),
        ("servicenow.create_incident", {"short_description": "Printer jams", "urgency": 1}, True),
        ("servicenow.create_incident", {"short_description": "Printer jams", "urgency": "high"}, False),
        ("servicenow.create_incident", {"short_description": "x" * 161}, False),
        ("servicenow.create_incident", {"short_description": "Printer jams", "priority": 1}, False),
        ("servicenow.get_incident", {"number": "INC123"}, False),
        ("servicenow.list_incidents", {"limit": 0}, False),
        ("servicenow.list_incidents", {"limit": 101}, False),
        ("servicenow.list_incidents", {"state": "closed"}, False),
        ("servicenow.update_incident", {"number": "INC0012345"}, False),
        ("servicenow.update_incident", {"number": "INC0012345", "state": "Resolved"}, True),
        ("jira.create_issue", {"project": "PLAT", "summary": "Fix it", "issue_type": "Epic"}, False),
        ("jira.create_issue", {"project": "plat", "summary": "Fix it"}, False),
        ("jira.get_issue", {"key": "PLAT-214"}, True),
        ("jira.get_issue", {"key": "PLAT 214"}, False),
        ("salesforce.update_opportunity", {"opportunity": "Hooli renewal"}, False),
        ("salesforce.update_opportunity", {"opportunity": "Hooli renewal", "close_date": "2027-02-28"}, True),
        ("salesforce.update_opportunity", {"opportunity": "Hooli renewal", "close_date": "28/02/2027"}, False),
        ("salesforce.list_opportunities", {"min_amount": 100000}, True),
        ("salesforce.list_opportunities", {"min_amount": "100k"}, False),
        ("salesforce.query", {"soql": "DELETE FROM Account"}, False),
    ],
)
def test_arguments_schemas_accept_and_refuse(tool: str, arguments: dict[str, Any], valid: bool) -> None:
    assert _validator(SPECS[tool]["arguments_schema"]).is_valid(arguments) is valid


_DANA = {"name": "Dana Kim", "email": "dana.kim@example.com"}
_SAM = {"name": "Sam Patel", "email": "sam.patel@example.com"}


@pytest.mark.parametrize(
    ("tool", "result", "valid"),
    [
        ("okta.get_user", {"id": "00u1", "email": "sam.patel@example.com", "name": "Sam Patel", "status": "ACTIVE",
                           "title": "Engineer", "department": "Engineering", "manager": _DANA}, True),
        ("okta.get_user", {"id": "00u2", "email": "dana.kim@example.com", "name": "Dana Kim", "status": "ACTIVE",
                           "title": None, "department": None, "manager": None}, True),
        ("okta.get_user", {"id": "00u1", "email": "sam.patel@example.com", "name": "Sam Patel", "status": "ACTIVE",
                           "title": "Engineer", "department": "Engineering", "manager": "00u2"}, False),
        ("servicenow.create_incident", {"number": "INC0012345", "sys_id": "0" * 32, "short_description": "VPN drops",
                                        "state": "New", "urgency": 2, "caller": _SAM}, True),
        ("servicenow.request_catalog_item", {"request_number": "REQ0010001", "number": "RITM0010003",
                                             "item": "Headset", "quantity": 1, "requested_for": _SAM,
                                             "approval": "not requested", "stage": "Fulfillment"}, True),
        ("jira.search_issues", {"issues": [{"key": "PLAT-1", "summary": "Flaky test", "status": "To Do",
                                            "priority": "Medium", "issue_type": "Bug", "assignee": None}],
                                "total": 1, "jql": "project = PLAT AND statusCategory != Done"}, True),
        ("jira.search_issues", {"issues": [{"key": "PLAT-1", "summary": "Flaky test", "status": "To Do",
                                            "priority": "Medium", "issue_type": "Bug",
                                            "assignee": "5f0acme00000000000000000"}],
                                "total": 1, "jql": "project = PLAT"}, False),
        ("salesforce.list_opportunities", {"opportunities": [{"id": "006000000000001AAA", "name": "Hooli Renewal",
                                                              "account": "Hooli", "amount": 48000.0,
                                                              "stage": "Qualification", "close_date": "2027-02-28",
                                                              "owner": _SAM}], "total": 1}, True),
    ],
)
def test_result_schemas_accept_readable_results_only(tool: str, result: dict[str, Any], valid: bool) -> None:
    assert _validator(SPECS[tool]["result_schema"]).is_valid(result) is valid


def test_manifest_files_have_a_docstring() -> None:
    root = Path(__file__).resolve().parents[2] / "connectors"
    for connector in (*load_all(), "common"):
        source = (root / connector / "manifest.py").read_text()
        assert re.match(r'"""[^\n]+"""\n', source), f"{connector}/manifest.py needs a one-line docstring"
