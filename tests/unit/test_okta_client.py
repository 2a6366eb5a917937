"""Okta client pieces without a network: error mapping, Link parsing, SCIM literals, idempotency records."""

from __future__ import annotations

import time

import pytest
from multidict import CIMultiDict

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
from connectors.common.service import ActionResult
from connectors.okta.client import next_link, scim_string, vendor_error
from connectors.okta.filters import FilterError, compile_filter
from connectors.okta.idempotency import KeyInFlight, KeyRecords, KeyReused


def _okta(code: str, summary: str, *causes: str) -> dict[str, object]:
    return {"errorCode": code, "errorSummary": summary, "errorLink": code, "errorId": "oae1",
            "errorCauses": [{"errorSummary": c} for c in causes]}


@pytest.mark.parametrize(("status", "body", "kind"), [
    (400, _okta("E0000001", "Api validation failed: login", "login: already exists"), VendorValidationError),
    (401, _okta("E0000011", "Invalid token provided"), VendorUnauthenticated),
    (403, _okta("E0000006", "You do not have permission"), VendorDenied),
    (404, _okta("E0000007", "Not found: Resource not found: x (User)"), VendorNotFound),
    (409, _okta("E0000195", "Api validation failed due to conflict"), VendorConflict),
    (429, _okta("E0000047", "API call exceeded rate limit"), VendorRateLimited),
    (500, _okta("E0000009", "Internal Server Error"), VendorUnavailable),
    (503, None, VendorUnavailable),
    (405, None, VendorError),
])
def test_each_status_maps_to_one_failure_class(status, body, kind) -> None:
    err = vendor_error(status, {"X-Okta-Request-Id": "req-1"}, body)
    assert type(err) is kind
    assert err.status == status
    if body:
        assert err.vendor_code == body["errorCode"]
        assert err.metadata["okta_error_id"] == "oae1"


def test_causes_are_part_of_the_message() -> None:
    body = _okta("E0000032", "Unlock is not allowed for this user.", "The user is not locked out.")
    err = vendor_error(403, {}, body)
    assert str(err) == "Unlock is not allowed for this user. (The user is not locked out.)"


def test_rate_limit_waits_until_the_reset_header() -> None:
    headers = {"X-Rate-Limit-Limit": "600", "X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": str(time.time() + 9)}
    err = vendor_error(429, headers, _okta("E0000047", "API call exceeded rate limit"))
    assert isinstance(err, VendorRateLimited)
    assert 8 <= err.retry_after_s <= 9


def test_an_empty_403_names_the_missing_scope() -> None:
    challenge = ('Bearer authorization_uri="https://o/oauth2/v1/authorize", realm="https://o", '
                 'scope="okta.groups.manage", error="insufficient_scope", error_description="no", resource="/x"')
    err = vendor_error(403, {"WWW-Authenticate": challenge}, None)
    assert isinstance(err, VendorDenied)
    assert err.metadata["required_scope"] == "okta.groups.manage"


def test_next_link_from_separate_header_lines_or_one_list() -> None:
    lines = CIMultiDict([("Link", '<https://o/api/v1/users?limit=2>; rel="self"'),
                         ("Link", '<https://o/api/v1/users?after=00u2&limit=2>; rel="next"')])
    assert next_link(lines) == "https://o/api/v1/users?after=00u2&limit=2"
    combined = {"Link": '<https://o/g?limit=2>; rel="self", <https://o/g?after=00g9&limit=2>; rel="next"'}
    assert next_link(combined) == "https://o/g?after=00g9&limit=2"
    assert next_link({"Link": '<https://o/g?limit=2>; rel="self"'}) is None
    assert next_link({}) is None


@pytest.mark.parametrize("email", ['a"or"b@x.example', 'back\\slash@x.example', 'q\\"@x.example'])
def test_a_scim_literal_matches_only_its_own_value(email) -> None:
    matches = compile_filter(f"profile.email eq {scim_string(email)}", (), ("profile",))
    assert matches({"profile": {"email": email}})
    assert not matches({"profile": {"email": "a@x.example"}})
    assert not matches({"profile": {"email": "b@x.example"}, "status": "ACTIVE"})


@pytest.mark.parametrize("expression", [
    'profile.email co "x"', "status eq", 'nickname eq "x"', '(status eq "ACTIVE"', 'status eq "A" xor id eq "b"',
])
def test_expressions_outside_the_subset_are_refused(expression) -> None:
    with pytest.raises(FilterError):
        compile_filter(expression, ("status", "id"), ("profile",))


def test_and_binds_tighter_than_or() -> None:
    matches = compile_filter('status eq "A" or status eq "B" and id eq "2"', ("status", "id"))
    assert matches({"status": "A", "id": "1"})
    assert not matches({"status": "B", "id": "1"})
    assert matches({"status": "b", "id": "2"})


def test_a_finished_key_replays_and_other_arguments_are_refused() -> None:
    keys = KeyRecords()
    first = keys.begin(("acme", "https://o", "k"), "f1")
    with pytest.raises(KeyInFlight):
        keys.begin(("acme", "https://o", "k"), "f1")
    keys.complete(first, ActionResult({"ok": True}, "done"))
    again = keys.begin(("acme", "https://o", "k"), "f1")
    assert again.result == ActionResult({"ok": True}, "done")
    with pytest.raises(KeyReused):
        keys.begin(("acme", "https://o", "k"), "f2")


def test_a_definite_failure_forgets_the_key_and_a_lost_answer_keeps_what_was_seen() -> None:
    keys = KeyRecords()
    refused = keys.begin(("acme", "o", "k1"), "f")
    refused.sending({"status": "ACTIVE"})
    keys.release(refused, VendorDenied("no", 403))
    assert keys.begin(("acme", "o", "k1"), "other").observed is None
    lost = keys.begin(("acme", "o", "k2"), "f")
    lost.sending({"status": "LOCKED_OUT"})
    keys.release(lost, VendorUnavailable("reset"))
    retry = keys.begin(("acme", "o", "k2"), "f")
    assert (retry.uncertain, retry.observed) == (True, {"status": "LOCKED_OUT"})
    retry.sending({"status": "ACTIVE"})
    assert retry.observed == {"status": "LOCKED_OUT"}


def test_keys_expire() -> None:
    keys = KeyRecords(ttl_s=-1)
    done = keys.begin(("t", "o", "k"), "f")
    keys.complete(done, ActionResult({}, "x"))
    assert keys.begin(("t", "o", "k"), "g").result is None
