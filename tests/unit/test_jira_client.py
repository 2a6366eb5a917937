"""The Jira client's one table from Jira's answers (ErrorCollection, gateway errors, rate limits) to exceptions."""

from __future__ import annotations

import pytest

from connectors.common.http import (
    UnknownPerson,
    VendorConflict,
    VendorDenied,
    VendorError,
    VendorNotFound,
    VendorRateLimited,
    VendorUnauthenticated,
    VendorUnavailable,
    VendorValidationError,
)
from connectors.jira.client import raise_for_status


@pytest.mark.parametrize(("status", "headers", "body", "expected"), [
    (400, {}, {"errorMessages": [], "errors": {"issuetype": "The issue type selected is invalid."}},
     VendorValidationError),
    (400, {}, {"errorMessages": ["You do not have permission to transition this issue."], "errors": {}},
     VendorDenied),
    (401, {}, {"code": 401, "message": "Unauthorized; scope does not match"}, VendorUnauthenticated),
    (403, {}, {"errorMessages": ["You do not have permission to assign issues."], "errors": {}}, VendorDenied),
    (404, {}, {"errorMessages": ["Issue does not exist or you do not have permission to see it."]}, VendorNotFound),
    (409, {}, {"errorMessages": ["conflict"]}, VendorConflict),
    (413, {}, {"errorMessages": ["too many comments"]}, VendorValidationError),
    (429, {"Retry-After": "12"}, {"errorMessages": ["Rate limit exceeded."]}, VendorRateLimited),
    (503, {}, "<html>Service Unavailable</html>", VendorUnavailable),
    (302, {}, None, None),
    (418, {}, None, VendorError),
])
def test_one_table_maps_jira_answers(status: int, headers: dict[str, str], body: object,
                                     expected: type[VendorError] | None) -> None:
    if expected is None:
        raise_for_status(status, headers, body, "the call")
        return
    with pytest.raises(VendorError) as info:
        raise_for_status(status, headers, body, "the call")
    assert type(info.value) is expected
    assert not isinstance(info.value, UnknownPerson)
    if status == 400 and expected is VendorValidationError:
        assert info.value.field_errors == {"arguments.issue_type": "The issue type selected is invalid."}
    if status == 429:
        assert isinstance(info.value, VendorRateLimited) and info.value.retry_after_s == 12.0
