"""ServiceNow REST client: Table API and Service Catalog API as one user, with paging and one error mapping."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connectors.common.http import (
    AmbiguousRecord,
    UnknownPerson,
    VendorConflict,
    VendorDenied,
    VendorError,
    VendorNotFound,
    VendorRateLimited,
    VendorSession,
    VendorUnauthenticated,
    VendorUnavailable,
    VendorValidationError,
    retry_after_from,
)

log = logging.getLogger("agentmesh.connector.servicenow")

PAGE_SIZE = 100
# `javascript:gs.getUserID()` inside an encoded query is the calling user's sys_id.
ME = "javascript:gs.getUserID()"
USER_FIELDS = "sys_id,name,email,user_name"
_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?([a-z]+)"?')


@dataclass
class Page:
    """Records of one listing and how many match in all (X-Total-Count)."""

    records: list[dict[str, Any]]
    total: int


def ref(value: Any) -> str:
    """The sys_id of a reference field, whether rendered as {link, value} or a bare string."""
    if isinstance(value, dict):
        return str(value.get("value") or "")
    return str(value or "")


def literal(value: str, field: str) -> str:
    """A value safe inside an encoded query: `^` separates conditions and `,` separates IN lists, so neither may
    appear in a value (ServiceNow has no escaping for them)."""
    if "^" in value or "\n" in value:
        raise VendorValidationError(f"{field} may not contain '^' or line breaks",
                                    field_errors={f"arguments.{field}": "may not contain '^' or line breaks"})
    return value


def in_list(ids: Iterable[str]) -> str:
    """An IN list of sys_ids or user names."""
    return ",".join(sorted({i for i in ids if i and "," not in i and "^" not in i}))


def raise_for_status(status: int, headers: Mapping[str, str], body: Any, what: str) -> None:
    """Maps a ServiceNow error answer (`{"error": {"message", "detail"}, "status": "failure"}`) to one exception."""
    if status < 400:
        return
    error = body.get("error") if isinstance(body, dict) else None
    message = detail = ""
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        detail = str(error.get("detail") or "")
    text = f"ServiceNow {what}: {message or f'HTTP {status}'}" + (f" ({detail})" if detail else "")
    if status == 400 or status == 422:
        raise VendorValidationError(text, status=status)
    if status == 401:
        raise VendorUnauthenticated(text, status=status)
    if status == 403:
        raise VendorDenied(text, status=status)
    if status == 404:
        raise VendorNotFound(text, status=status)
    if status == 409:
        raise VendorConflict(text, status=status)
    if status == 429:
        raise VendorRateLimited(text, status=status, retry_after_s=retry_after_from(headers))
    if status >= 500:
        raise VendorUnavailable(text, status=status)
    raise VendorError(text, status=status)


class ServiceNowClient:
    """Calls one instance with one user's bearer token; every call states its timeout."""

    def __init__(self, session: VendorSession, base_url: str, token: str, *, scheme: str = "Bearer",
                 timeout_s: float, page_size: int = PAGE_SIZE) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.page_size = page_size
        self._session = session
        self._headers = {"Authorization": f"{scheme or 'Bearer'} {token}", "Accept": "application/json"}

    async def _call(self, method: str, url: str, *, params: Mapping[str, str] | None = None,
                    json: Any = None) -> tuple[Mapping[str, str], Any]:
        target = url if url.startswith(("http://", "https://")) else self.base_url + url
        what = f"{method} {target.removeprefix(self.base_url).split('?')[0]}"
        status, headers, body = await self._session.request(method, target, params=params, json=json,
                                                            headers=self._headers, timeout_s=self.timeout_s)
        log.debug("servicenow %s -> %s", what, status)
        raise_for_status(status, headers, body, what)
        return headers, body

    # --- Table API -----------------------------------------------------------------------------------------
    async def query(self, table: str, query: str, *, fields: str = "", limit: int | None = None) -> Page:
        """GET /api/now/table/{table}, following Link rel="next" until `limit` records (or all)."""
        size = min(limit or self.page_size, self.page_size)
        params = {"sysparm_query": query, "sysparm_limit": str(size), "sysparm_offset": "0"}
        if fields:
            params["sysparm_fields"] = fields
        headers, body = await self._call("GET", f"/api/now/table/{table}", params=params)
        records = list(body["result"])
        total = int(headers.get("X-Total-Count", len(records)))
        while limit is None or len(records) < limit:
            following = _next_link(headers.get("Link", ""))
            if following is None:
                break
            headers, body = await self._call("GET", following)
            if not body["result"]:
                break
            records.extend(body["result"])
        return Page(records[:limit] if limit is not None else records, total)

    async def first(self, table: str, query: str, *, fields: str = "") -> dict[str, Any] | None:
        page = await self.query(table, query, fields=fields, limit=1)
        return page.records[0] if page.records else None

    async def get(self, table: str, sys_id: str) -> dict[str, Any]:
        _, body = await self._call("GET", f"/api/now/table/{table}/{sys_id}")
        return dict(body["result"])

    async def create(self, table: str, values: Mapping[str, Any]) -> dict[str, Any]:
        _, body = await self._call("POST", f"/api/now/table/{table}", json=dict(values))
        return dict(body["result"])

    async def update(self, table: str, sys_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
        _, body = await self._call("PATCH", f"/api/now/table/{table}/{sys_id}", json=dict(values))
        return dict(body["result"])

    # --- Service Catalog API -----------------------------------------------------------------------------------
    async def order_now(self, item_sys_id: str, quantity: int, variables: Mapping[str, str]) -> dict[str, Any]:
        """POST /api/sn_sc/servicecatalog/items/{sys_id}/order_now → {sys_id, number, request_number, request_id}."""
        _, body = await self._call("POST", f"/api/sn_sc/servicecatalog/items/{item_sys_id}/order_now",
                                   json={"sysparm_quantity": str(quantity), "variables": dict(variables)})
        return dict(body["result"])

    # --- people ------------------------------------------------------------------------------------------------
    async def me(self) -> dict[str, Any]:
        """The calling user's sys_user record."""
        user = await self.first("sys_user", f"sys_id={ME}", fields=USER_FIELDS)
        if user is None:
            raise VendorUnauthenticated("ServiceNow does not know the token's user")
        return user

    async def user_by_email(self, email: str) -> dict[str, Any]:
        """The sys_user with this email; UnknownPerson when there is none, AmbiguousRecord when several share it."""
        page = await self.query("sys_user", f"email={literal(email, 'email')}", fields=USER_FIELDS, limit=5)
        if not page.records:
            raise UnknownPerson(f"ServiceNow has no user with email {email}", metadata={"email": email})
        if len(page.records) > 1:
            names = "; ".join(str(u["user_name"]) for u in page.records)
            raise AmbiguousRecord(f"several ServiceNow users have email {email}: {names}",
                                  metadata={"candidates": names})
        return page.records[0]

    async def users(self, sys_ids: Iterable[str] = (), user_names: Iterable[str] = ()) -> list[dict[str, Any]]:
        """The users with these sys_ids or user names, in one query."""
        ids, names = in_list(sys_ids), in_list(user_names)
        terms = ([f"sys_idIN{ids}"] if ids else []) + ([f"user_nameIN{names}"] if names else [])
        if not terms:
            return []
        page = await self.query("sys_user", "^OR".join(terms), fields=USER_FIELDS)
        return page.records


def _next_link(header: str) -> str | None:
    for target, rel in _LINK.findall(header):
        if rel == "next":
            return target
    return None
