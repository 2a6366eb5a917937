"""SOQL literals built by the client round-trip through the sandbox's parser; Salesforce errors map to one table."""

from __future__ import annotations

import random

import pytest

from connectors.common.http import (
    AmbiguousRecord,
    VendorConflict,
    VendorDenied,
    VendorNotFound,
    VendorRateLimited,
    VendorUnauthenticated,
    VendorUnavailable,
    VendorValidationError,
)
from connectors.salesforce import soql
from connectors.salesforce.client import (
    DAILY_LIMIT_RETRY_AFTER_S,
    raise_for_status,
    soql_contains,
    soql_number,
    soql_select,
    soql_string,
)
from connectors.salesforce.org import OBJECTS

TRICKY = ["O'Brien", "back\\slash", "\\'", "' OR Name != '", "50%_off", "tab\there", "line\nbreak", 'say "hi"', "\\",
          "'", "%", "_", "ünïcödé ✓"]


def _records() -> dict[str, dict[str, object]]:
    return {
        "001A00000000001AAA": {"Id": "001A00000000001AAA", "Name": "Acme", "Industry": "Retail",
                               "OwnerId": "005A00000000001AAA"},
        "001A00000000002AAA": {"Id": "001A00000000002AAA", "Name": "Globex", "Industry": None,
                               "OwnerId": "005A00000000001AAA"},
        "005A00000000001AAA": {"Id": "005A00000000001AAA", "Name": "Dana Kim", "Email": "dana@x.example"},
    }


def _lookup(record_id: str) -> tuple[str, dict[str, object]] | None:
    record = _records().get(record_id)
    if record is None:
        return None
    return ("User" if record_id.startswith("005") else "Account"), record


def _run(text: str) -> list[str]:
    query = soql.parse(text, OBJECTS)
    accounts = [r for r in _records().values() if str(r["Id"]).startswith("001")]
    return [str(r["Name"]) for r in soql.run(query, accounts, _lookup)]


@pytest.mark.parametrize("value", TRICKY)
def test_string_literals_round_trip(value: str) -> None:
    query = soql.parse(soql_select("Id", "Account", [f"Name = {soql_string(value)}"]), OBJECTS)
    assert isinstance(query.where, soql.Compare)
    assert query.where.value.value == value


def test_random_strings_round_trip() -> None:
    rng = random.Random(7)
    alphabet = "ab'\\\"%_ \n\t\r"
    for _ in range(300):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        query = soql.parse(soql_select("Id", "Account", [f"Name = {soql_string(value)}"]), OBJECTS)
        assert isinstance(query.where, soql.Compare) and query.where.value.value == value


@pytest.mark.parametrize("value", TRICKY)
def test_contains_patterns_match_only_the_text_itself(value: str) -> None:
    query = soql.parse(soql_select("Id", "Account", [f"Name LIKE {soql_contains(value)}"]), OBJECTS)
    assert isinstance(query.where, soql.Like)
    assert query.where.pattern.fullmatch(f"before {value} after")
    assert not query.where.pattern.fullmatch("before after")


def test_like_wildcards_and_case() -> None:
    assert _run("SELECT Name FROM Account WHERE Name LIKE 'a_m%'") == ["Acme"]
    assert _run("SELECT Name FROM Account WHERE Name LIKE '%OBE%'") == ["Globex"]
    assert _run("SELECT Name FROM Account WHERE Name LIKE 'acm\\_'") == []


def test_where_order_limit_and_relationships() -> None:
    assert _run("SELECT Name FROM Account ORDER BY Name DESC") == ["Globex", "Acme"]
    assert _run("SELECT Name FROM Account ORDER BY Industry ASC NULLS LAST") == ["Acme", "Globex"]
    assert _run("SELECT Name FROM Account ORDER BY Industry") == ["Globex", "Acme"]
    assert _run("SELECT Name FROM Account WHERE Industry = null") == ["Globex"]
    assert _run("SELECT Name FROM Account WHERE Owner.Email = 'DANA@x.example' LIMIT 1") == ["Acme"]
    assert _run("SELECT Name FROM Account WHERE Id IN ('001A00000000002', '001A00000000009AAA')") == ["Globex"]
    query = soql.parse("SELECT Name, Owner.Name, Owner.Email FROM Account WHERE Name = 'Acme'", OBJECTS)
    row = soql.shape(query, _records()["001A00000000001AAA"], _lookup, lambda kind, rid: f"/{kind}/{rid}")
    assert row == {"attributes": {"type": "Account", "url": "/Account/001A00000000001AAA"}, "Name": "Acme",
                   "Owner": {"attributes": {"type": "User", "url": "/User/005A00000000001AAA"}, "Name": "Dana Kim",
                             "Email": "dana@x.example"}}


@pytest.mark.parametrize(("text", "code"), [
    ("SELECT Name FROM Account WHERE Name = 'a' OR Name = 'b' AND Name = 'c'", "MALFORMED_QUERY"),
    ("SELECT Name FROM Account WHERE NOT Name = 'a'", "MALFORMED_QUERY"),
    ("SELECT COUNT() FROM Account", "MALFORMED_QUERY"),
    ("SELECT Name FROM Account WHERE Name = 'bad \\q escape'", "MALFORMED_QUERY"),
    ("SELECT Name FROM Account;", "MALFORMED_QUERY"),
    ("SELECT Name FROM Account WHERE Name = 5", "INVALID_FIELD"),
    ("SELECT Name FROM Account WHERE Owner.Nope = 'x'", "INVALID_FIELD"),
    ("SELECT Name FROM Account WHERE Id = 'short'", "INVALID_QUERY_FILTER_OPERATOR"),
    ("SELECT Name FROM Opportunity WHERE Amount LIKE '1%'", "INVALID_QUERY_FILTER_OPERATOR"),
    ("SELECT Name FROM Contact", "INVALID_TYPE"),
])
def test_rejections_use_salesforce_codes(text: str, code: str) -> None:
    with pytest.raises(soql.SoqlError) as info:
        soql.parse(text, OBJECTS)
    assert info.value.code == code
    assert "ERROR at Row:1:Column:" in info.value.message


def test_number_literals_never_use_exponents() -> None:
    assert soql_number(100000) == "100000"
    assert soql_number(1e21) == "1000000000000000000000"
    assert soql_number(12.5) == "12.5"


@pytest.mark.parametrize(("status", "body", "expected"), [
    (400, [{"errorCode": "MALFORMED_QUERY", "message": "unexpected token"}], VendorValidationError),
    (401, [{"errorCode": "INVALID_SESSION_ID", "message": "Session expired or invalid"}], VendorUnauthenticated),
    (403, [{"errorCode": "INSUFFICIENT_ACCESS", "message": "no"}], VendorDenied),
    (403, [{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}], VendorRateLimited),
    (404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}], VendorNotFound),
    (409, [{"errorCode": "CONFLICT", "message": "x"}], VendorConflict),
    (300, ["/services/data/v60.0/sobjects/Case/500A", "/services/data/v60.0/sobjects/Case/500B"], AmbiguousRecord),
    (429, None, VendorRateLimited),
    (500, [{"errorCode": "UNKNOWN_EXCEPTION", "message": "x"}], VendorUnavailable),
    (503, "<html>down</html>", VendorUnavailable),
])
def test_one_table_maps_salesforce_errors(status: int, body: object, expected: type[Exception]) -> None:
    with pytest.raises(expected):
        raise_for_status(status, {}, body)


def test_limits_and_field_errors_carry_their_details() -> None:
    with pytest.raises(VendorRateLimited) as limited:
        raise_for_status(403, {}, [{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}])
    assert limited.value.retry_after_s == DAILY_LIMIT_RETRY_AFTER_S
    with pytest.raises(VendorRateLimited) as concurrent:
        raise_for_status(403, {"Retry-After": "3"}, [{"errorCode": "REQUEST_LIMIT_EXCEEDED",
                                                      "message": "ConcurrentPerOrgLongTxn Limit exceeded."}])
    assert concurrent.value.retry_after_s == 3
    with pytest.raises(VendorValidationError) as invalid:
        raise_for_status(400, {}, [{"errorCode": "REQUIRED_FIELD_MISSING", "message": "missing",
                                    "fields": ["Subject", "Origin"]}], {"Subject": "arguments.subject"})
    assert set(invalid.value.field_errors) == {"arguments.subject", "Origin"}
