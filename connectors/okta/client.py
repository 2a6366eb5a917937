"""Async REST client for the Okta Management API v1, as one caller: its credential, base URL and deadline."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

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

log = logging.getLogger("agentmesh.connector.okta")

API = "/api/v1"
DEFAULT_PAGE_SIZE = 200  # Okta's largest page for /api/v1/users; groups accept more
MAX_PAGES = 500  # a guard against a cursor that never ends
MIN_CALL_TIMEOUT_S = 0.05
USER_AGENT = "agentmesh-okta-connector/1.0"

_LINK = re.compile(r'<([^>]*)>\s*;\s*rel="?([^";,\s]+)"?')
_GROUP_ID = re.compile(r"^00g[A-Za-z0-9]{17}$")


def scim_string(value: str) -> str:
    """A SCIM filter string literal: a quote or backslash in `value` cannot end the literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def next_link(headers: Mapping[str, str]) -> str | None:
    """The rel="next" URL of a page, whether Okta sent its Link headers as separate lines or one list."""
    getall = getattr(headers, "getall", None)
    values = getall("Link", []) if getall is not None else [headers.get("Link", "")]
    for value in values:
        for url, rel in _LINK.findall(value or ""):
            if rel == "next":
                return str(url)
    return None


def vendor_error(status: int, headers: Mapping[str, str], body: Any) -> VendorError:
    """Okta's answer to a failed call (its Error body, status and headers) as the connector's failure class."""
    code = summary = error_id = ""
    causes: list[str] = []
    if isinstance(body, dict):
        code = str(body.get("errorCode") or "")
        summary = str(body.get("errorSummary") or "")
        error_id = str(body.get("errorId") or "")
        causes = [str(c.get("errorSummary")) for c in body.get("errorCauses") or []
                  if isinstance(c, dict) and c.get("errorSummary")]
    message = summary or f"Okta answered HTTP {status}"
    if causes and not all(c in message for c in causes):
        message = f"{message} ({'; '.join(causes)})"
    metadata = {k: v for k, v in (("okta_error_id", error_id),
                                  ("okta_request_id", headers.get("X-Okta-Request-Id", ""))) if v}
    if status == 401:
        return VendorUnauthenticated(message, status, code, metadata=metadata)
    if status == 403:
        challenge = headers.get("WWW-Authenticate", "")
        if not body and "insufficient_scope" in challenge:
            scope = re.search(r'scope="([^"]*)"', challenge)
            message = f"the Okta token lacks the scope {scope.group(1) if scope else '(unnamed)'}"
            metadata = {**metadata, "required_scope": scope.group(1) if scope else ""}
        return VendorDenied(message, status, code, metadata=metadata)
    if status == 404:
        return VendorNotFound(message, status, code, metadata=metadata)
    if status == 409:
        return VendorConflict(message, status, code, metadata=metadata)
    if status == 429:
        return VendorRateLimited(message, status, code, metadata=metadata, retry_after_s=retry_after_from(headers))
    if status >= 500:
        return VendorUnavailable(message, status, code, metadata=metadata)
    if status in (400, 422):
        return VendorValidationError(message, status, code, metadata=metadata)
    return VendorError(message, status, code, metadata=metadata)


class OktaClient:
    """The Okta calls the connector makes, sent with one caller's credential within one deadline."""

    def __init__(self, session: VendorSession, base_url: str, *, scheme: str, token: str, deadline: float,
                 page_size: int = DEFAULT_PAGE_SIZE) -> None:
        self.session = session
        self.origin = base_url.rstrip("/").removesuffix(API)
        self.deadline = deadline  # time.monotonic() by which every call must have answered
        self.page_size = page_size
        self._headers = {"Authorization": f"{scheme} {token}", "Accept": "application/json",
                         "User-Agent": USER_AGENT}

    def _timeout_s(self) -> float:
        return max(self.deadline - time.monotonic(), MIN_CALL_TIMEOUT_S)

    async def _call(self, method: str, url: str, *,
                    params: Mapping[str, str] | None = None) -> tuple[Mapping[str, str], Any]:
        """One request (timeout: what is left of the deadline); an error status raises its failure class."""
        if not url.startswith(("http://", "https://")):
            url = f"{self.origin}{API}{url}"
        status, headers, body = await self.session.request(method, url, timeout_s=self._timeout_s(), params=params,
                                                           headers=self._headers)
        log.debug("okta %s %s -> %s", method, url.split("?")[0], status)
        if status >= 400:
            raise vendor_error(status, headers, body)
        return headers, body

    async def _list(self, path: str, params: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Every item of a listing, following rel="next" links (the `after` cursor is opaque)."""
        items: list[dict[str, Any]] = []
        url: str | None = path
        query: Mapping[str, str] | None = {**(params or {}), "limit": str(self.page_size)}
        for _ in range(MAX_PAGES):
            if url is None:
                return items
            headers, body = await self._call("GET", url, params=query)
            items.extend(body or [])
            url, query = next_link(headers), None
        raise VendorUnavailable(f"Okta kept paging {path} past {MAX_PAGES} pages")

    # --- users -----------------------------------------------------------------------------------
    async def get_user(self, id_or_login: str) -> dict[str, Any]:
        _, body = await self._call("GET", f"/users/{quote(id_or_login, safe='@')}")
        return dict(body)

    async def search_users(self, expression: str) -> list[dict[str, Any]]:
        return await self._list("/users", {"search": expression})

    async def user_by_email(self, email: str) -> dict[str, Any]:
        """The Okta user whose primary email is `email`: the login lookup first (strongly consistent, and most
        orgs use the email as login), then a search on profile.email. Unknown → UnknownPerson."""
        wanted = email.casefold()
        try:
            user = await self.get_user(email)
            if str(user.get("profile", {}).get("email", "")).casefold() == wanted:
                return user
        except VendorNotFound:
            pass
        found = [u for u in await self.search_users(f"profile.email eq {scim_string(email)}")
                 if str(u.get("profile", {}).get("email", "")).casefold() == wanted]
        if not found:
            raise UnknownPerson(f"Okta has no user with the email {email}", metadata={"email": email})
        if len(found) > 1:
            logins = [str(u["profile"].get("login")) for u in found]
            raise AmbiguousRecord(f"several Okta users have the email {email}: {', '.join(logins)}",
                                  metadata={"candidates": json.dumps(logins)})
        return found[0]

    async def user_groups(self, user_id: str) -> list[dict[str, Any]]:
        return await self._list(f"/users/{user_id}/groups")

    async def app_links(self, user_id: str) -> list[dict[str, Any]]:
        _, body = await self._call("GET", f"/users/{user_id}/appLinks")
        return list(body or [])

    async def reset_password(self, user_id: str, *, send_email: bool) -> dict[str, Any]:
        _, body = await self._call("POST", f"/users/{user_id}/lifecycle/reset_password",
                                   params={"sendEmail": "true" if send_email else "false"})
        return dict(body or {})

    async def unlock(self, user_id: str) -> None:
        await self._call("POST", f"/users/{user_id}/lifecycle/unlock")

    async def reset_factors(self, user_id: str) -> None:
        await self._call("POST", f"/users/{user_id}/lifecycle/reset_factors")

    # --- groups ----------------------------------------------------------------------------------
    async def get_group(self, group_id: str) -> dict[str, Any]:
        _, body = await self._call("GET", f"/groups/{group_id}")
        return dict(body)

    async def groups(self) -> list[dict[str, Any]]:
        return await self._list("/groups")

    async def group_named(self, text: str) -> dict[str, Any]:
        """A group by id, or by words that all occur in its name (case- and order-insensitive); an exact name
        wins over partial matches. None → VendorNotFound; several → AmbiguousRecord listing them."""
        text = text.strip()
        if _GROUP_ID.match(text):
            return await self.get_group(text)
        words = text.casefold().split()
        everything = await self.groups()
        exact = [g for g in everything if g["profile"]["name"].casefold() == text.casefold()]
        if len(exact) == 1:
            return exact[0]
        matches = [g for g in everything if all(w in g["profile"]["name"].casefold() for w in words)]
        if not matches:
            raise VendorNotFound(f"no Okta group matches {text!r}", metadata={"group": text})
        if len(matches) > 1:
            names = sorted(g["profile"]["name"] for g in matches)
            raise AmbiguousRecord(f"{text!r} matches {len(names)} Okta groups: {', '.join(names)}",
                                  metadata={"candidates": json.dumps(names)})
        return matches[0]

    async def add_to_group(self, group_id: str, user_id: str) -> None:
        await self._call("PUT", f"/groups/{group_id}/users/{user_id}")

    async def remove_from_group(self, group_id: str, user_id: str) -> None:
        await self._call("DELETE", f"/groups/{group_id}/users/{user_id}")
