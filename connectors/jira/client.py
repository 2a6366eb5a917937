"""Jira Cloud REST API v3 client: one user's OAuth bearer token through the gateway URL, errors mapped in one table."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from connectors.common.http import (
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

log = logging.getLogger("agentmesh.connector.jira")

GATEWAY_BASE = "https://api.atlassian.com/ex/jira/{cloud_id}"
API = "/rest/api/3"
SEARCH_PAGE = 50  # Jira's default page; it may answer fewer, the client follows nextPageToken
COMMENT_PAGE = 100
COMMENT_BATCH = 1000  # POST /comment/list takes at most 1000 ids
USER_SEARCH_PAGE = 50
# Jira field names in an ErrorCollection → the action argument they came from.
ARGUMENT_OF_FIELD: dict[str, str] = {
    "project": "project", "summary": "summary", "issuetype": "issue_type", "description": "description",
    "priority": "priority", "assignee": "assignee", "accountId": "assignee", "comment": "comment",
    "body": "comment", "jql": "jql",
}


def _error_texts(body: Any) -> tuple[list[str], dict[str, str]]:
    """(messages, field errors) of an ErrorCollection, a gateway error or a plain-text body."""
    if isinstance(body, dict):
        messages = [str(m) for m in body.get("errorMessages") or []]
        errors = {str(k): str(v) for k, v in (body.get("errors") or {}).items()}
        if "message" in body and not messages:
            messages.append(str(body["message"]))
        return messages, errors
    if isinstance(body, str) and body.strip():
        return [body.strip()[:300]], {}
    return [], {}


def raise_for_status(status: int, headers: Mapping[str, str], body: Any, what: str) -> None:
    """The one table from a Jira answer to the common exception classes; returns for 2xx."""
    if status < 400:
        return
    messages, errors = _error_texts(body)
    text = "; ".join([*messages, *(f"{k}: {v}" for k, v in errors.items())]) or f"HTTP {status}"
    message = f"Jira refused {what}: {text}"
    field_errors = {f"arguments.{ARGUMENT_OF_FIELD.get(k, k)}": v for k, v in errors.items()}
    if status == 400 and any(m.startswith("You do not have permission") for m in [*messages, *errors.values()]):
        # Jira answers some permission refusals (create in a project, transition) as 400s.
        raise VendorDenied(message, status)
    if status in (400, 413, 422):
        raise VendorValidationError(message, status, field_errors=field_errors)
    if status == 401:
        raise VendorUnauthenticated(message, status)
    if status == 403:
        raise VendorDenied(message, status)
    if status in (404, 410):
        raise VendorNotFound(message, status)
    if status == 409:
        raise VendorConflict(message, status)
    if status == 429:
        raise VendorRateLimited(message, status, retry_after_s=retry_after_from(headers))
    if status >= 500:
        raise VendorUnavailable(message, status)
    raise VendorError(message, status)


class JiraClient:
    """The REST calls the connector makes, as one user, each bounded by what is left of the call's deadline."""

    def __init__(self, session: VendorSession, base_url: str, token: str, deadline: float) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self.deadline = deadline  # time.monotonic() value after which no call is started

    def _timeout_s(self, what: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise VendorUnavailable(f"no time left to call Jira for {what}")
        return left

    async def call(self, method: str, path: str, what: str, *, params: Mapping[str, str | int] | None = None,
                   json: Any = None) -> tuple[Any, Mapping[str, str]]:
        """One request; returns (body, headers) of a 2xx answer, raises the mapped exception otherwise."""
        kwargs: dict[str, Any] = {"headers": self._headers}
        if params is not None:
            kwargs["params"] = {k: str(v) for k, v in params.items()}
        if json is not None:
            kwargs["json"] = json
        started = time.monotonic()
        status, headers, body = await self.session.request(method, f"{self.base_url}{API}{path}",
                                                           timeout_s=self._timeout_s(what), **kwargs)
        log.debug("jira %s %s -> %s in %.0f ms", method, path, status, (time.monotonic() - started) * 1000)
        raise_for_status(status, headers, body, what)
        return body, headers

    # --- site and people ----------------------------------------------------------------------------
    async def server_info(self) -> dict[str, Any]:
        body, _ = await self.call("GET", "/serverInfo", "the server info")
        return dict(body)

    async def find_user(self, email: str) -> dict[str, Any]:
        """The Jira user with this email (GET /user/search); UnknownPerson when Jira knows none."""
        body, _ = await self.call("GET", "/user/search", f"the user search for {email}",
                                  params={"query": email, "maxResults": USER_SEARCH_PAGE})
        users = [u for u in body or [] if isinstance(u, dict) and u.get("accountType", "atlassian") == "atlassian"]
        exact = [u for u in users if str(u.get("emailAddress", "")).lower() == email.lower()]
        if not exact and len(users) == 1 and not users[0].get("emailAddress"):
            exact = users  # the site hides emails; the full address matched exactly one account
        if not exact:
            raise UnknownPerson(f"Jira has no user with the email {email}", metadata={"email": email})
        return dict(exact[0])

    # --- issues -------------------------------------------------------------------------------------
    async def search(self, jql: str, fields: tuple[str, ...], limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Up to `limit` issues of a query, following nextPageToken; also whether more match."""
        issues: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            params: dict[str, str | int] = {"jql": jql, "maxResults": min(limit - len(issues), SEARCH_PAGE),
                                            "fields": ",".join(fields)}
            if token:
                params["nextPageToken"] = token
            body, _ = await self.call("GET", "/search/jql", "the search", params=params)
            page = body.get("issues") or []
            issues.extend(page)
            token = body.get("nextPageToken")
            last = bool(body.get("isLast", not token)) or not token or not page
            if last or len(issues) >= limit:
                return issues[:limit], not last or len(issues) > limit

    async def approximate_count(self, jql: str) -> int:
        body, _ = await self.call("POST", "/search/approximate-count", "the count", json={"jql": jql})
        return int(body.get("count", 0))

    async def get_issue(self, key: str, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
        params = {"fields": ",".join(fields)} if fields else None
        body, _ = await self.call("GET", f"/issue/{key}", f"reading {key}", params=params)
        return dict(body)

    async def create_issue(self, fields: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
        """POST /issue with entity properties set in the same request; returns {id, key, self}."""
        payload = {"fields": fields, "properties": [{"key": k, "value": v} for k, v in properties.items()]}
        body, _ = await self.call("POST", "/issue", "creating the issue", json=payload)
        return dict(body)

    async def transitions(self, key: str) -> list[dict[str, Any]]:
        body, _ = await self.call("GET", f"/issue/{key}/transitions", f"the transitions of {key}")
        return list(body.get("transitions") or [])

    async def transition(self, key: str, transition_id: str) -> None:
        await self.call("POST", f"/issue/{key}/transitions", f"transitioning {key}",
                        json={"transition": {"id": transition_id}})

    async def assign(self, key: str, account_id: str | None) -> None:
        await self.call("PUT", f"/issue/{key}/assignee", f"assigning {key}", json={"accountId": account_id})

    # --- comments -----------------------------------------------------------------------------------
    async def comments(self, key: str) -> tuple[list[dict[str, Any]], str]:
        """Every comment of an issue, newest first, and the caller's accountId (the X-AAccountId header)."""
        out: list[dict[str, Any]] = []
        caller = ""
        while True:
            body, headers = await self.call("GET", f"/issue/{key}/comment", f"the comments of {key}",
                                            params={"startAt": len(out), "maxResults": COMMENT_PAGE,
                                                    "orderBy": "-created"})
            caller = headers.get("X-AAccountId", caller)
            page = body.get("comments") or []
            out.extend(page)
            if not page or len(out) >= int(body.get("total", 0)):
                return out, caller

    async def comments_with_properties(self, ids: list[str]) -> list[dict[str, Any]]:
        """Comments by id with their entity properties (POST /comment/list?expand=properties)."""
        values: list[dict[str, Any]] = []
        for start in range(0, len(ids), COMMENT_BATCH):
            body, _ = await self.call("POST", "/comment/list", "the comments' properties",
                                      params={"expand": "properties"},
                                      json={"ids": [int(i) for i in ids[start:start + COMMENT_BATCH]]})
            values.extend(body.get("values") or [])
        return values

    async def add_comment(self, key: str, body_adf: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
        """POST /issue/{key}/comment with entity properties set in the same request."""
        payload = {"body": body_adf, "properties": [{"key": k, "value": v} for k, v in properties.items()]}
        body, _ = await self.call("POST", f"/issue/{key}/comment", f"commenting on {key}", json=payload)
        return dict(body)
