"""The Jira sandbox's JQL subset: parsing, Jira's refusals, evaluation against the acme fixture, connector quoting."""

from __future__ import annotations

import pytest

from connectors.common.sandbox import load_fixtures
from connectors.jira import jql
from connectors.jira.sandbox_data import JiraTenant, User

ACME = JiraTenant("acme", load_fixtures(("acme",))["acme"])
ALICE = ACME.by_email["alice.nguyen@acme.example"]
ERIN = ACME.by_email["erin.walsh@acme.example"]


def keys(user: User, query: str) -> list[str]:
    return [issue.key for issue in ACME.search(user, query)]


def test_parse_builds_the_tree_and_order() -> None:
    query = jql.parse('project = ENG AND (status IN ("To Do", Done) OR assignee = currentUser()) '
                      "ORDER BY priority DESC, key")
    assert isinstance(query.where, jql.BoolOp) and query.where.op == "and"
    first, second = query.where.items
    assert first == jql.Clause("project", "=", ("ENG",), 9)
    assert isinstance(second, jql.BoolOp) and second.op == "or"
    assert second.items[1] == jql.Clause("assignee", "=", (jql.Func("currentuser"),), second.items[1].position)
    assert query.order_by == (jql.SortKey("priority", True), jql.SortKey("key", False))


@pytest.mark.parametrize(("text", "operator", "values"), [
    ("assignee is EMPTY", "is", (jql.EMPTY,)),
    ("assignee IS NOT null", "is not", (jql.EMPTY,)),
    ("assignee = EMPTY", "is", (jql.EMPTY,)),
    ("key NOT IN (ENG-1, 'ENG-2')", "not in", ("ENG-1", "ENG-2")),
    (r'summary ~ "say \"hi\""', "~", ('say "hi"',)),
])
def test_operators_of_the_subset(text: str, operator: str, values: tuple[object, ...]) -> None:
    clause = jql.parse(text).where
    assert isinstance(clause, jql.Clause)
    assert (clause.operator, clause.values) == (operator, values)


@pytest.mark.parametrize(("text", "message"), [
    ("project = ", "Expecting either a value, list or function but got 'end of query'"),
    ("project ENG", "Expecting operator but got 'ENG'"),
    ('summary ~ "open', "The quoted string 'open' has not been completed"),
    ("project = ENG ENG", "Expecting either 'OR' or 'AND' but got 'ENG'"),
    ("NOT project = ENG", "The operator 'NOT' before a clause is not supported"),
    ("updated >= -1d", "The operator '>=' is not supported"),
    ("status WAS Done", "The operator 'WAS' is not supported"),
    ("assignee = membersOf(x)", "Expecting ')' but got 'x'"),
    ("assignee = me()", "Unable to find JQL function 'me()'"),
    ("project in ENG", "Expecting '(' but got 'ENG'"),
    ("project = and", "'and' is a reserved JQL word"),
    ("project = ENG;", "The character ';' is a reserved JQL character"),
    ("assignee = alice@acme.example", "The character '@' is a reserved JQL character"),
])
def test_anything_else_gets_a_jql_error(text: str, message: str) -> None:
    with pytest.raises(jql.JqlError) as info:
        jql.parse(text)
    assert message in str(info.value)


@pytest.mark.parametrize(("user", "query", "expected"), [
    (ALICE, "project = ENG ORDER BY key", ["ENG-101", "ENG-102", "ENG-103"]),
    (ALICE, "project = OPS", None),  # Alice may not browse OPS: the value "does not exist"
    (ERIN, "project = OPS", ["OPS-21"]),
    (ERIN, "project = 'IT Operations'", ["OPS-21"]),
    (ALICE, "assignee = currentUser() ORDER BY key DESC", ["ENG-102", "ENG-101"]),
    (ALICE, 'assignee = "alice.nguyen@acme.example" AND priority = High', ["ENG-101"]),
    (ALICE, "assignee != currentUser() ORDER BY key", ["WEB-7"]),  # != leaves out unassigned issues, as Jira does
    (ALICE, "statusCategory = indeterminate", ["ENG-101"]),
    (ALICE, "statusCategory != Done ORDER BY key", ["ENG-101", "ENG-102", "ENG-103"]),
    (ALICE, 'status IN ("To Do", Done) ORDER BY key', ["ENG-102", "ENG-103", "WEB-7"]),
    (ALICE, "text ~ 'Pricing LINKS' OR text ~ 'grpc*' ORDER BY key", ["ENG-102", "WEB-7"]),
    (ALICE, "issuetype = Bug AND reporter in (currentUser(), 'Carol Diaz') ORDER BY key", ["ENG-101"]),
    (ALICE, "key = ENG-103 OR key = WEB-7 ORDER BY priority DESC", ["ENG-103", "WEB-7"]),
    (ALICE, "issue.property[agentmesh.idempotency].key = 'k1'", []),
])
def test_search_evaluates_the_subset(user: User, query: str, expected: list[str] | None) -> None:
    if expected is None:
        with pytest.raises(jql.JqlError, match="does not exist for the field 'project'"):
            keys(user, query)
    else:
        assert keys(user, query) == expected


def test_unbounded_queries_are_refused() -> None:
    for query in ("", "ORDER BY created DESC", "order by key"):
        with pytest.raises(jql.JqlError, match="Unbounded JQL queries are not allowed here"):
            ACME.search(ALICE, query)


def test_quote_keeps_values_inside_the_literal() -> None:
    value = 'he said "x" \\ AND project = OPS'
    clause = jql.parse(f"summary ~ {jql.quote(value)}").where
    assert isinstance(clause, jql.Clause) and clause.values == (value,)


@pytest.mark.parametrize(("text", "where", "order"), [
    ("project = ENG ORDER BY key", "project = ENG", "ORDER BY key"),
    ("summary ~ 'order by x' order   by created", "summary ~ 'order by x'", "order   by created"),
    ("order by key", "", "order by key"),
    ("project = ENG", "project = ENG", ""),
    ("reorder = x", "reorder = x", ""),
])
def test_split_order_by_ignores_quoted_text(text: str, where: str, order: str) -> None:
    assert jql.split_order_by(text) == (where, order)
