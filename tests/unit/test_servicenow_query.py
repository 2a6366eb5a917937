"""The sandbox's encoded-query subset: precedence, operators, ordering, the current user, and what it refuses."""

from __future__ import annotations

import pytest

from connectors.servicenow.query import QueryError, parse

FIELDS = ("number", "state", "caller_id", "short_description", "assigned_to", "urgency")
ROWS = [
    {"number": "INC1", "state": "1", "caller_id": "u1", "short_description": "VPN drops", "assigned_to": "",
     "urgency": "10"},
    {"number": "INC2", "state": "2", "caller_id": "u2", "short_description": "Laptop battery", "assigned_to": "a",
     "urgency": "9"},
    {"number": "INC3", "state": "6", "caller_id": "u1", "short_description": "vpn slow", "assigned_to": "a",
     "urgency": "2"},
]


def _select(query: str, user: str = "u1") -> list[str]:
    parsed = parse(query, FIELDS, user, "incident")
    return [r["number"] for r in parsed.sort([r for r in ROWS if parsed.matches(r)])]


@pytest.mark.parametrize(("query", "expected"), [
    ("", ["INC1", "INC2", "INC3"]),
    ("caller_id=javascript:gs.getUserID()", ["INC1", "INC3"]),
    ("short_descriptionLIKEVPN", ["INC1", "INC3"]),
    ("short_descriptionSTARTSWITHlap", ["INC2"]),
    ("stateIN1,6^ORDERBYDESCnumber", ["INC3", "INC1"]),
    ("state!=6^state!=7", ["INC1", "INC2"]),
    ("assigned_toISEMPTY", ["INC1"]),
    ("state=2^ORcaller_id=u1^short_descriptionLIKEvpn", ["INC1", "INC3"]),  # ^OR binds tighter than ^
    ("state=6^ORstate=2", ["INC2", "INC3"]),
    ("ORDERBYurgency", ["INC3", "INC2", "INC1"]),  # numeric values sort as numbers
    ("ORDERBYcaller_id^ORDERBYDESCnumber", ["INC3", "INC1", "INC2"]),
])
def test_subset_selects_and_orders(query: str, expected: list[str]) -> None:
    assert _select(query) == expected


@pytest.mark.parametrize("query", [
    "number>INC1", "state=1^NQstate=2", "^state=1", "state=1^", "ORstate=1", "caller_id=javascript:gs.getUser()",
    "caller_id.name=x", "nosuch=1", "ORDERBYnosuch", "assigned_toISEMPTYx", "stateNOT IN1,2", "stateISNOTEMPTY",
])
def test_anything_else_is_refused(query: str) -> None:
    with pytest.raises(QueryError):
        parse(query, FIELDS, "u1", "incident")


def test_unknown_field_names_field_and_table() -> None:
    with pytest.raises(QueryError, match="Unknown field nosuch in table incident"):
        parse("nosuch=1", FIELDS, "u1", "incident")
