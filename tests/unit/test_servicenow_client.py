"""The ServiceNow client's pure parts: the error table, Link paging, reference values, query literals, key markers."""

from __future__ import annotations

import time

import pytest

from connectors.common.http import (
    VendorConflict,
    VendorDenied,
    VendorError,
    VendorNotFound,
    VendorRateLimited,
    VendorUnauthenticated,
    VendorUnavailable,
    VendorValidationError,
)
from connectors.common.matching import words_match
from connectors.servicenow.client import _next_link, in_list, literal, raise_for_status, ref
from connectors.servicenow.vendor import iso, key_ref, with_marker, without_marker


def _body(message: str, detail: str = "") -> dict[str, object]:
    return {"error": {"message": message, "detail": detail}, "status": "failure"}


@pytest.mark.parametrize(("status", "error"), [
    (400, VendorValidationError), (401, VendorUnauthenticated), (403, VendorDenied), (404, VendorNotFound),
    (409, VendorConflict), (429, VendorRateLimited), (500, VendorUnavailable), (503, VendorUnavailable),
    (405, VendorError),
])
def test_each_status_maps_to_one_error(status: int, error: type[VendorError]) -> None:
    with pytest.raises(error) as info:
        raise_for_status(status, {}, _body("User Not Authorized", "Failed API level ACL Validation"), "GET /x")
    assert type(info.value) is error
    assert info.value.status == status
    assert "User Not Authorized (Failed API level ACL Validation)" in info.value.message


def test_success_raises_nothing() -> None:
    raise_for_status(201, {}, {"result": {}}, "POST /api/now/table/incident")


def test_rate_limit_reads_retry_after_then_reset() -> None:
    with pytest.raises(VendorRateLimited) as info:
        raise_for_status(429, {"Retry-After": "12"}, _body("Too Many Requests"), "GET /x")
    assert info.value.retry_after_s == 12
    with pytest.raises(VendorRateLimited) as info:
        raise_for_status(429, {"X-RateLimit-Reset": str(int(time.time()) + 30)}, None, "GET /x")
    assert 28 <= info.value.retry_after_s <= 30


def test_error_without_a_json_body_still_maps() -> None:
    with pytest.raises(VendorUnavailable, match="HTTP 502"):
        raise_for_status(502, {}, "<html>Bad gateway</html>", "GET /x")


def test_next_link_from_a_servicenow_link_header() -> None:
    header = ('<https://i.service-now.com/api/now/table/incident?sysparm_limit=2&sysparm_offset=0>;rel="first",'
              '<https://i.service-now.com/api/now/table/incident?sysparm_limit=2&sysparm_offset=2>;rel="next",'
              '<https://i.service-now.com/api/now/table/incident?sysparm_limit=2&sysparm_offset=4>;rel="last"')
    assert _next_link(header) == "https://i.service-now.com/api/now/table/incident?sysparm_limit=2&sysparm_offset=2"
    assert _next_link(header.replace('rel="next"', 'rel="prev"')) is None
    assert _next_link("") is None


def test_reference_values_with_and_without_links() -> None:
    assert ref({"link": "https://i/api/now/table/sys_user/abc", "value": "abc"}) == "abc"
    assert ref("abc") == "abc"
    assert ref("") == "" and ref(None) == ""


def test_query_literals_cannot_add_conditions() -> None:
    assert literal("a.b@acme.example", "email") == "a.b@acme.example"
    for bad in ("x^ORactive=true", "x\nactive=true"):
        with pytest.raises(VendorValidationError) as info:
            literal(bad, "item")
        assert "arguments.item" in info.value.field_errors
    assert in_list(["b", "a", "a", "", "c,d", "e^f"]) == "a,b"


def test_key_marker_round_trip() -> None:
    hex_ref = key_ref("tenant/run/step")
    assert len(hex_ref) == 32 and hex_ref == key_ref("tenant/run/step") != key_ref("tenant/run/other")
    assert without_marker(with_marker("Still broken", hex_ref)) == "Still broken"
    assert without_marker(with_marker("", hex_ref)) == ""


def test_words_and_dates() -> None:
    assert words_match("laptop standard", "Standard Laptop") and not words_match("laptop pro", "Standard Laptop")
    assert iso("2026-11-20 09:14:00") == "2026-11-20T09:14:00Z" and iso("") == ""
