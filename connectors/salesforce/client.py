"""Salesforce REST client: per-user bearer calls, SOQL with escaped literals, query paging, errors as vendor classes."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import quote

from connectors.common.http import (
    AmbiguousRecord,
    UnknownPerson,
    VendorConflict,
    VendorDenied,
    VendorNotFound,
    VendorRateLimited,
    VendorSession,
    VendorUnauthenticated,
    VendorUnavailable,
    VendorValidationError,
    retry_after_from,
)

log = logging.getLogger("agentmesh.connector.salesforce")

DEFAULT_API_VERSION = "v60.0"
# The external-ID field (Text(255), unique, External ID) a customer adds once to Case and Task: see README.md.
IDEMPOTENCY_FIELD = "Agentmesh_Idempotency_Key__c"
QUERY_BATCH_SIZE = 200  # Sforce-Query-Options batchSize: Salesforce's minimum, so a page stays small and quick
MAX_QUERY_RECORDS = 500  # rows an action reads at most; totalSize still reports how many match
# TotalRequests is a rolling 24-hour limit and Salesforce sends no Retry-After: retrying within minutes is futile.
DAILY_LIMIT_RETRY_AFTER_S = 3600.0
DEADLINE_RESERVE_S = 0.25  # kept back from the call's deadline so a vendor timeout still answers in time
LIMIT_WARNING_RATIO = 0.9
AMBIGUOUS_LIST_MAX = 10

_ID = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
_KEY_PREFIX = {"Account": "001", "Opportunity": "006", "Case": "500", "Task": "00T", "User": "005"}
_SOQL_ESCAPES = {"\\": "\\\\", "'": "\\'", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
                 "\f": "\\f"}
_LIKE_ESCAPES = {"%": "\\%", "_": "\\_"}


def soql_string(value: str) -> str:
    """A quoted SOQL string literal; quotes, backslashes and control characters are escaped, so a value can never
    end the literal and change the query."""
    return "'" + "".join(_SOQL_ESCAPES.get(ch, ch) for ch in value) + "'"


def soql_contains(word: str) -> str:
    """A LIKE pattern literal matching any text that contains `word` (its own % and _ match only themselves)."""
    return "'%" + "".join(_SOQL_ESCAPES.get(ch) or _LIKE_ESCAPES.get(ch) or ch for ch in word) + "%'"


def soql_number(value: float) -> str:
    """A SOQL number literal (never in exponent form)."""
    return str(int(value)) if float(value).is_integer() else f"{value:.6f}".rstrip("0")


def iso_date(value: str, argument: str) -> str:
    """An ISO date argument checked: YYYY-MM-DD is both the API's date value and SOQL's (unquoted) date literal."""
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise VendorValidationError(f"{value!r} is not an ISO date (YYYY-MM-DD)",
                                    field_errors={argument: "must be an ISO 8601 date, e.g. 2027-02-28"}) from None


def soql_select(select: str, sobject: str, where: list[str] | None = None, order_by: str = "",
                limit: int | None = None) -> str:
    """A SELECT statement. Field and object names are the connector's own constants; every value inside `where`
    must come from soql_string, soql_contains, soql_number or iso_date."""
    text = f"SELECT {select} FROM {sobject}"  # noqa: S608 - names are constants; values are escaped literals
    if where:
        text += " WHERE " + " AND ".join(where)
    if order_by:
        text += f" ORDER BY {order_by}"
    if limit is not None:
        text += f" LIMIT {limit}"
    return text


def words_of(text: str) -> list[str]:
    return list(dict.fromkeys(text.split()))


def is_record_id(value: str, sobject: str) -> bool:
    """Whether a reference is an Id of that object (15 or 18 characters with the object's key prefix)."""
    return bool(_ID.match(value)) and value.startswith(_KEY_PREFIX[sobject])


def without_attributes(value: Any) -> Any:
    """A query row as plain data: the `attributes` of it and of its nested parents removed."""
    if isinstance(value, dict):
        return {k: without_attributes(v) for k, v in value.items() if k != "attributes"}
    if isinstance(value, list):
        return [without_attributes(v) for v in value]
    return value


def raise_for_status(status: int, headers: Mapping[str, str], body: Any,
                     argument_of: Mapping[str, str] | None = None) -> None:
    """Maps a Salesforce error answer (a JSON array of {message, errorCode, fields}) to the vendor exception
    classes; `argument_of` turns the API field names in `fields` into argument paths for field violations."""
    if status < 300:
        return
    errors = body if isinstance(body, list) else [body] if isinstance(body, dict) else []
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    code = str(first.get("errorCode", ""))
    message = str(first.get("message") or f"Salesforce answered HTTP {status}").strip()
    if code:
        message = f"{code}: {message}"
    if status == 300:
        raise AmbiguousRecord(f"the external ID matches {len(errors)} records", status=status,
                              metadata={"candidates": json.dumps([str(e) for e in errors])})
    if status == 401:
        raise VendorUnauthenticated(message, status=status, vendor_code=code)
    if status == 403 and code == "REQUEST_LIMIT_EXCEEDED":
        retry_after = DAILY_LIMIT_RETRY_AFTER_S if "TotalRequests" in message else retry_after_from(headers)
        raise VendorRateLimited(message, status=status, vendor_code=code, retry_after_s=retry_after)
    if status == 403:
        raise VendorDenied(message, status=status, vendor_code=code)
    if status == 404:
        raise VendorNotFound(message, status=status, vendor_code=code)
    if status in (409, 412):
        raise VendorConflict(message, status=status, vendor_code=code)
    if status == 429:
        raise VendorRateLimited(message, status=status, vendor_code=code, retry_after_s=retry_after_from(headers))
    if status >= 500:
        raise VendorUnavailable(message, status=status, vendor_code=code)
    mapping = argument_of or {}
    names = [n for e in errors if isinstance(e, dict) for n in e.get("fields") or ()]
    raise VendorValidationError(message, status=status, vendor_code=code,
                                field_errors={mapping.get(n, n): message for n in names})


@dataclass(frozen=True)
class Connection:
    """One action's view of an org: instance, API version, the user's authorization header and a deadline."""

    instance_url: str
    api_version: str
    authorization: str = field(repr=False)
    deadline: float  # time.monotonic() by which every call must have answered

    @classmethod
    def open(cls, instance_url: str, api_version: str, token: str, timeout_s: float) -> Connection:
        reserve = min(DEADLINE_RESERVE_S, timeout_s / 4)
        version = api_version if api_version.startswith("v") else f"v{api_version}"
        return cls(instance_url.rstrip("/"), version, f"Bearer {token}", time.monotonic() + timeout_s - reserve)

    @property
    def data(self) -> str:
        return f"/services/data/{self.api_version}"

    def remaining_s(self) -> float:
        return max(self.deadline - time.monotonic(), 0.001)


@dataclass(frozen=True)
class SalesforceUser:
    """A Salesforce user: Id beside name and email."""

    id: str
    name: str
    email: str


@dataclass
class QueryResult:
    """A query's rows (up to the client's maximum) and how many match in all (totalSize)."""

    total: int
    records: list[dict[str, Any]]


class SalesforceClient:
    """The REST API calls the connector makes, each with the caller's token and within the call's deadline."""

    def __init__(self, session: VendorSession, *, batch_size: int = QUERY_BATCH_SIZE,
                 max_records: int = MAX_QUERY_RECORDS) -> None:
        self.session = session
        self.batch_size = batch_size
        self.max_records = max_records

    async def _call(self, conn: Connection, method: str, path: str, *, params: Mapping[str, str] | None = None,
                    body: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
                    argument_of: Mapping[str, str] | None = None) -> tuple[int, Any]:
        all_headers = {"Authorization": conn.authorization, "Accept": "application/json", **(headers or {})}
        status, answer_headers, answer = await self.session.request(
            method, conn.instance_url + path, params=params, json=body, headers=all_headers,
            timeout_s=conn.remaining_s())
        log.debug("salesforce %s %s -> %s", method, path.split("?")[0], status)
        usage = re.search(r"api-usage=(\d+)/(\d+)", answer_headers.get("Sforce-Limit-Info", ""))
        if usage and int(usage.group(2)) and int(usage.group(1)) >= LIMIT_WARNING_RATIO * int(usage.group(2)):
            log.warning("salesforce org %s has used %s of %s daily API requests", conn.instance_url,
                        usage.group(1), usage.group(2))
        raise_for_status(status, answer_headers, answer, argument_of)
        return status, answer

    # --- queries ------------------------------------------------------------------------------------------------
    async def query(self, conn: Connection, soql: str) -> QueryResult:
        """Runs a SOQL query and follows nextRecordsUrl until done or the client's maximum of rows."""
        options = {"Sforce-Query-Options": f"batchSize={self.batch_size}"}
        _, page = await self._call(conn, "GET", f"{conn.data}/query", params={"q": soql}, headers=options)
        result = QueryResult(int(_shape(page, "totalSize")), list(_shape(page, "records")))
        while not page.get("done", True) and page.get("nextRecordsUrl") and len(result.records) < self.max_records:
            _, page = await self._call(conn, "GET", str(page["nextRecordsUrl"]), headers=options)
            result.records.extend(_shape(page, "records"))
        result.records = result.records[:self.max_records]
        return result

    async def find_by_words(self, conn: Connection, sobject: str, text: str, select: str) -> QueryResult:
        """Records whose Name contains every word of `text`, in any order and case (LIKE is case-insensitive)."""
        words = words_of(text)
        if not words:
            raise VendorValidationError("a name needs at least one word", field_errors={"arguments": "empty name"})
        where = [f"Name LIKE {soql_contains(w)}" for w in words]
        return await self.query(conn, soql_select(select, sobject, where, "Name"))

    async def resolve(self, conn: Connection, sobject: str, reference: str, select: str) -> dict[str, Any]:
        """One record by Id, or by a name whose words all occur in it; none → NotFound, several → Ambiguous."""
        if is_record_id(reference, sobject):
            found = await self.query(conn, soql_select(select, sobject, [f"Id = {soql_string(reference)}"]))
            if not found.records:
                raise VendorNotFound(f"no {sobject} with Id {reference} that you can see")
            return found.records[0]
        matches = await self.find_by_words(conn, sobject, reference, select)
        return pick_one(reference, sobject, [(sobject, r) for r in matches.records])[1]

    # --- people -------------------------------------------------------------------------------------------------
    async def current_user(self, conn: Connection) -> SalesforceUser:
        """The user the token belongs to (OpenID Connect userinfo)."""
        _, info = await self._call(conn, "GET", "/services/oauth2/userinfo")
        return SalesforceUser(str(_shape(info, "user_id")), str(info.get("name", "")), str(info.get("email", "")))

    async def person(self, conn: Connection, who: str) -> SalesforceUser:
        """The Salesforce user for "me" or an email; an email no active user has → UnknownPerson."""
        if who.strip().lower() == "me":
            return await self.current_user(conn)
        found = await self.query(conn, soql_select("Id, Name, Email, Username", "User",
                                                   [f"Email = {soql_string(who.strip())}", "IsActive = true"]))
        users = found.records
        if len(users) > 1:
            users = [u for u in users if str(u.get("Username", "")).lower() == who.strip().lower()] or users
        if not users:
            raise UnknownPerson(f"{who} is not an active Salesforce user in this org", metadata={"email": who})
        if len(users) > 1:
            raise AmbiguousRecord(f"{len(users)} Salesforce users have the email {who}",
                                  metadata={"candidates": json.dumps([u.get("Username") for u in users])})
        user = users[0]
        return SalesforceUser(str(user["Id"]), str(user.get("Name") or ""), str(user.get("Email") or who))

    # --- records ------------------------------------------------------------------------------------------------
    async def get_record(self, conn: Connection, sobject: str, record_id: str, fields: list[str]) -> dict[str, Any]:
        _, record = await self._call(conn, "GET", f"{conn.data}/sobjects/{sobject}/{quote(record_id, safe='')}",
                                     params={"fields": ",".join(fields)})
        _shape(record, "Id")
        return dict(record)

    async def update(self, conn: Connection, sobject: str, record_id: str, values: Mapping[str, Any],
                     argument_of: Mapping[str, str] | None = None) -> None:
        """PATCH of the changed fields (204, no body)."""
        await self._call(conn, "PATCH", f"{conn.data}/sobjects/{sobject}/{quote(record_id, safe='')}", body=values,
                         argument_of=argument_of)

    async def upsert(self, conn: Connection, sobject: str, external_field: str, key: str, values: Mapping[str, Any],
                     argument_of: Mapping[str, str] | None = None) -> tuple[str, bool]:
        """Insert-or-update by external ID; returns (Id, created). A repeat with the same key cannot duplicate."""
        path = f"{conn.data}/sobjects/{sobject}/{external_field}/{quote(key, safe='')}"
        status, answer = await self._call(conn, "PATCH", path, body=values, argument_of=argument_of)
        if status == 204:  # API versions before 46.0 answer an update without a body
            return "", False
        return str(_shape(answer, "id")), bool(answer.get("created", status == 201))


def pick_one(reference: str, label: str, candidates: list[tuple[str, dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    """The one (object, row) a name picks; none → NotFound, several → Ambiguous listing them (catalog.md)."""
    if not candidates:
        raise VendorNotFound(f"no {label} you can see has every word of {reference!r} in its name")
    if len(candidates) > 1:
        names = [f"{r.get('Name')} ({kind} {r.get('Id')})" for kind, r in candidates[:AMBIGUOUS_LIST_MAX]]
        more = len(candidates) - len(names)
        raise AmbiguousRecord(f"{reference!r} matches {len(candidates)} records: {'; '.join(names)}"
                              + (f" and {more} more" if more else ""),
                              metadata={"candidates": json.dumps(names), "total": str(len(candidates))})
    return candidates[0]


def _shape(body: Any, key: str) -> Any:
    """A required member of a Salesforce answer; an answer without it is a vendor fault (UNAVAILABLE)."""
    if not isinstance(body, dict) or key not in body:
        raise VendorUnavailable(f"unexpected Salesforce answer: no {key!r}")
    return body[key]
