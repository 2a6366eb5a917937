"""Okta sandbox: each tenant's org as a local Okta Management API v1 (users, groups, lifecycle, OAuth)."""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from connectors.common.sandbox import ADMIN_PREFIX, TENANT_KEY, VendorSandbox, abort

from .filters import FilterError, Predicate, attribute, compile_filter

# Requests per tenant per minute that X-Rate-Limit-* report (Okta's org-wide default for /api/v1/users).
RATE_LIMIT_PER_MINUTE = 600
SEEDED_AT = "2026-01-05T09:00:00.000Z"
EVERYONE = "Everyone"

# Okta error codes the sandbox answers, with their HTTP status and errorSummary ({0} takes the detail).
ERRORS: dict[str, tuple[int, str]] = {
    "E0000001": (400, "Api validation failed: {0}"),
    "E0000003": (400, "The request body was not well-formed."),
    "E0000006": (403, "You do not have permission to perform the requested action"),
    "E0000007": (404, "Not found: {0}"),
    "E0000008": (404, "The requested path was not found"),
    "E0000009": (500, "Internal Server Error"),
    "E0000010": (503, "Service is in read only mode"),
    "E0000011": (401, "Invalid token provided"),
    "E0000028": (400, "The request is missing a required parameter."),
    "E0000029": (400, "Invalid paging request."),
    "E0000031": (400, "Invalid search criteria."),
    "E0000032": (403, "Unlock is not allowed for this user."),
    "E0000033": (400, "Bad request. Can't specify a search query and filter in the same request."),
    "E0000038": (403, "This operation is not allowed in the user's current status."),
    "E0000047": (429, "API call exceeded rate limit due to too many requests."),
}
_CODE_BY_STATUS = {400: "E0000001", 401: "E0000011", 403: "E0000006", 404: "E0000008", 429: "E0000047",
                   500: "E0000009", 503: "E0000010"}

# Statuses from which Okta allows a password reset or a factor reset ("resets work on LOCKED_OUT users").
RESETTABLE = frozenset({"ACTIVE", "LOCKED_OUT", "PASSWORD_EXPIRED", "RECOVERY"})

# What `search` and `filter` may name, per resource (Okta's documented subsets; operators in filters.py).
USER_SEARCH = ("id", "status", "created", "lastUpdated", "statusChanged", "type.id")
USER_FILTER = ("id", "status", "profile.login", "profile.email", "profile.firstName", "profile.lastName")
GROUP_SEARCH = ("id", "type", "created", "lastUpdated", "lastMembershipUpdated", "profile.name",
                "profile.description")
GROUP_FILTER = ("id", "type")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _okta_id(prefix: str, *parts: str) -> str:
    """A stable 20-character Okta-style id (`0oa…`, `0ua…`) derived from `parts`."""
    return prefix + hashlib.sha256(":".join(parts).encode()).hexdigest()[:17]


@dataclass
class _Org:
    """One tenant's Okta org: users, groups, memberships, app assignments, factors, sent emails."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    members: dict[str, set[str]] = field(default_factory=dict)
    apps: list[dict[str, Any]] = field(default_factory=list)
    factors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    admin_groups: set[str] = field(default_factory=set)
    outbox: list[dict[str, str]] = field(default_factory=list)
    window_start: float = 0.0
    window_calls: int = 0

    def find_user(self, key: str) -> dict[str, Any] | None:
        """By id, login or login short name, as Okta's `GET /users/{id}`."""
        if key in self.users:
            return self.users[key]
        folded = key.casefold()
        for user in self.users.values():
            login = user["profile"]["login"].casefold()
            if folded in (login, login.split("@")[0]):
                return user
        return None

    def groups_of(self, user_id: str) -> list[dict[str, Any]]:
        return [g for gid, g in sorted(self.groups.items()) if user_id in self.members.get(gid, ())]

    def is_admin(self, user_id: str) -> bool:
        return any(user_id in self.members.get(gid, ()) for gid in self.admin_groups)


@dataclass
class _Caller:
    """Who a request acts as: a user of the org, or the tenant's API token (an admin)."""

    tenant: str
    org: _Org
    user_id: str | None
    admin: bool


def _org_from_fixture(tenant: str, data: dict[str, Any]) -> _Org:
    org = _Org()
    okta = data.get("okta") or {}
    if not okta:
        return org
    names: dict[str, str] = {}
    for group in okta.get("groups", []):
        built_in = group["name"] == EVERYONE
        org.groups[group["id"]] = {
            "id": group["id"], "created": SEEDED_AT, "lastUpdated": SEEDED_AT, "lastMembershipUpdated": SEEDED_AT,
            "objectClass": ["okta:user_group"], "type": "BUILT_IN" if built_in else "OKTA_GROUP",
            "profile": {"name": group["name"],
                        "description": "All users in your organization" if built_in else group.get("description")},
        }
        org.members[group["id"]] = set()
        names[group["name"]] = group["id"]
    people = [p for p in data.get("users", []) if p.get("okta_id")]
    by_email = {p["email"].casefold(): p for p in people}
    for person in people:
        uid = person["okta_id"]
        boss = by_email.get((person.get("manager") or "").casefold())
        status = person.get("okta_status") or "ACTIVE"
        org.users[uid] = {
            "id": uid, "status": status, "created": SEEDED_AT, "activated": SEEDED_AT, "statusChanged": SEEDED_AT,
            "lastLogin": SEEDED_AT, "lastUpdated": SEEDED_AT, "passwordChanged": SEEDED_AT,
            "type": {"id": _okta_id("oty", tenant, "default")},
            "profile": {
                "login": person["email"], "email": person["email"], "firstName": person["first_name"],
                "lastName": person["last_name"], "displayName": f"{person['first_name']} {person['last_name']}",
                "title": person.get("title"), "department": person.get("department"),
                "manager": f"{boss['first_name']} {boss['last_name']}" if boss else None,
                "managerId": boss["okta_id"] if boss else None,
                "secondEmail": None, "mobilePhone": None,
            },
            "credentials": {"password": {}, "provider": {"type": "OKTA", "name": "OKTA"}},
        }
        for name in person.get("groups", []):
            if name in names:
                org.members[names[name]].add(uid)
        if EVERYONE in names:
            org.members[names[EVERYONE]].add(uid)
        org.factors[uid] = _seed_factors(tenant, uid) if status != "STAGED" else []
    for index, app in enumerate(okta.get("apps", [])):
        slug = re.sub(r"[^a-z0-9]+", "_", app["label"].lower()).strip("_")
        org.apps.append({"id": _okta_id("0oa", tenant, app["label"]), "name": slug, "label": app["label"],
                         "groups": {names[g] for g in app.get("groups", []) if g in names}, "sortOrder": index})
    org.admin_groups = {names[g] for g in okta.get("admin_groups", []) if g in names}
    return org


def _seed_factors(tenant: str, uid: str) -> list[dict[str, Any]]:
    return [
        {"id": _okta_id("opf", tenant, uid, "push"), "factorType": "push", "provider": "OKTA",
         "vendorName": "OKTA", "status": "ACTIVE", "created": SEEDED_AT, "lastUpdated": SEEDED_AT,
         "profile": {"name": "Work phone", "platform": "IOS"}},
        {"id": _okta_id("mbl", tenant, uid, "sms"), "factorType": "sms", "provider": "OKTA", "vendorName": "OKTA",
         "status": "ACTIVE", "created": SEEDED_AT, "lastUpdated": SEEDED_AT,
         "profile": {"phoneNumber": "+1-555-01" + uid[-2:]}},
    ]


class OktaSandbox(VendorSandbox):
    """Okta orgs (one origin per tenant) answering the Management API calls the connector makes."""

    vendor = "okta"
    oauth_authorize_path = "/oauth2/v1/authorize"
    oauth_token_path = "/oauth2/v1/token"  # noqa: S105 - a URL path, not a secret

    orgs: dict[str, _Org]

    def reset(self) -> None:
        self.orgs = {tenant: _org_from_fixture(tenant, data) for tenant, data in self.fixtures.items()}

    # --- error shapes ----------------------------------------------------------------------------
    def okta_error(self, code: str, detail: str = "", causes: Iterable[str] = (),
                   status: int | None = None) -> web.Response:
        """Okta's Error body for an error code."""
        default_status, summary = ERRORS[code]
        summary = summary.replace("{0}", detail) if "{0}" in summary else summary
        body = {"errorCode": code, "errorSummary": summary, "errorLink": code,
                "errorId": "oae" + secrets.token_urlsafe(16), "errorCauses": [{"errorSummary": c} for c in causes]}
        return web.json_response(body, status=status or default_status)

    def error_response(self, status: int, message: str = "") -> web.Response:
        code = _CODE_BY_STATUS.get(status, "E0000009" if status >= 500 else "E0000001")
        return self.okta_error(code, message or f"HTTP {status}", status=status)

    def rate_limited_response(self, retry_after_s: int) -> web.Response:
        response = self.okta_error("E0000047")
        response.headers["X-Rate-Limit-Limit"] = str(RATE_LIMIT_PER_MINUTE)
        response.headers["X-Rate-Limit-Remaining"] = "0"
        response.headers["X-Rate-Limit-Reset"] = str(math.ceil(time.time()) + retry_after_s)
        return response

    def _insufficient_scope(self, request: web.Request, scope: str) -> web.Response:
        origin = str(request.url.origin())
        challenge = (f'Bearer authorization_uri="{origin}{self.oauth_authorize_path}", realm="{origin}", '
                     f'scope="{scope}", error="insufficient_scope", error_description="The access token provided '
                     f'does not contain the required scopes.", resource="{request.path}"')
        return web.Response(status=403, headers={"WWW-Authenticate": challenge})

    # --- routes ----------------------------------------------------------------------------------
    def add_routes(self, app: web.Application, tenant: str | None) -> None:
        app.on_response_prepare.append(self._stamp_headers)
        r = app.router
        r.add_get("/api/v1/users", self._list_users)
        r.add_get("/api/v1/users/{id}", self._get_user)
        r.add_get("/api/v1/users/{id}/groups", self._user_groups)
        r.add_get("/api/v1/users/{id}/appLinks", self._app_links)
        r.add_get("/api/v1/users/{id}/factors", self._factors)
        r.add_post("/api/v1/users/{id}/lifecycle/reset_password", self._reset_password)
        r.add_post("/api/v1/users/{id}/lifecycle/unlock", self._unlock)
        r.add_post("/api/v1/users/{id}/lifecycle/reset_factors", self._reset_factors)
        r.add_get("/api/v1/groups", self._list_groups)
        r.add_post("/api/v1/groups", self._create_group)
        r.add_get("/api/v1/groups/{gid}", self._get_group)
        r.add_get("/api/v1/groups/{gid}/users", self._group_users)
        r.add_put("/api/v1/groups/{gid}/users/{uid}", self._add_member)
        r.add_delete("/api/v1/groups/{gid}/users/{uid}", self._remove_member)
        r.add_route("*", "/api/v1/{tail:.*}", self._no_such_path)

    async def _stamp_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """X-Rate-Limit-* and X-Okta-Request-Id on every API response, as Okta sends them."""
        if request.path.startswith(ADMIN_PREFIX):
            return
        org = self.orgs.get(request.app[TENANT_KEY])
        if org is None:
            return
        window = math.floor(time.time() / 60) * 60
        if window != org.window_start:
            org.window_start, org.window_calls = window, 0
        org.window_calls += 1
        response.headers.setdefault("X-Rate-Limit-Limit", str(RATE_LIMIT_PER_MINUTE))
        response.headers.setdefault("X-Rate-Limit-Remaining", str(max(RATE_LIMIT_PER_MINUTE - org.window_calls, 0)))
        response.headers.setdefault("X-Rate-Limit-Reset", str(int(window + 60)))
        response.headers.setdefault("X-Okta-Request-Id", secrets.token_urlsafe(18))

    async def _no_such_path(self, request: web.Request) -> web.Response:
        return self.okta_error("E0000008")

    # --- callers, targets, permissions -----------------------------------------------------------
    def _caller(self, request: web.Request, scope: str) -> _Caller:
        """Authenticates (Bearer user tokens; SSWS for the tenant's API token) and checks the token's scope."""
        tenant = request.app[TENANT_KEY]
        info = self.authenticate(request, tenant, schemes=("Bearer", "SSWS"))
        scheme = request.headers.get("Authorization", "").split(" ", 1)[0]
        if scheme == "SSWS" and info.kind != "service":
            raise abort(self.error_response(401))
        org = self.orgs[tenant]
        if info.kind == "service":
            return _Caller(tenant, org, None, True)
        if info.scopes and scope not in info.scopes:
            raise abort(self._insufficient_scope(request, scope))
        user = org.find_user(info.subject)
        if user is None:
            raise abort(self.error_response(401))
        return _Caller(tenant, org, user["id"], org.is_admin(user["id"]))

    def _target(self, caller: _Caller, key: str) -> dict[str, Any]:
        user = caller.org.users.get(caller.user_id or "") if key == "me" else caller.org.find_user(key)
        if user is None:
            raise abort(self.okta_error("E0000007", f"Resource not found: {key} (User)"))
        return user

    def _group(self, caller: _Caller, gid: str) -> dict[str, Any]:
        group = caller.org.groups.get(gid)
        if group is None:
            raise abort(self.okta_error("E0000007", f"Resource not found: {gid} (UserGroup)"))
        return group

    def _may_change_user(self, caller: _Caller, user: dict[str, Any]) -> None:
        """Only admin groups change other users; anyone may run lifecycle operations on themselves."""
        if not caller.admin and caller.user_id != user["id"]:
            raise abort(self.okta_error("E0000006"))

    def _may_manage_groups(self, caller: _Caller) -> None:
        """Group membership and groups themselves are an administrator's to change (self-escalation included)."""
        if not caller.admin:
            raise abort(self.okta_error("E0000006"))

    # --- rendering -------------------------------------------------------------------------------
    def _user_json(self, request: web.Request, user: dict[str, Any]) -> dict[str, Any]:
        base = f"{request.url.origin()}/api/v1/users/{user['id']}"
        links: dict[str, Any] = {"self": {"href": base}}
        if user["status"] == "LOCKED_OUT":
            links["unlock"] = {"href": f"{base}/lifecycle/unlock", "method": "POST"}
        if user["status"] in RESETTABLE:
            links["resetPassword"] = {"href": f"{base}/lifecycle/reset_password", "method": "POST"}
            links["resetFactors"] = {"href": f"{base}/lifecycle/reset_factors", "method": "POST"}
        if user["status"] == "ACTIVE":
            links["suspend"] = {"href": f"{base}/lifecycle/suspend", "method": "POST"}
        links["deactivate"] = {"href": f"{base}/lifecycle/deactivate", "method": "POST"}
        return {**user, "_links": links}

    def _group_json(self, request: web.Request, group: dict[str, Any]) -> dict[str, Any]:
        base = f"{request.url.origin()}/api/v1/groups/{group['id']}"
        return {**group, "_links": {"users": {"href": f"{base}/users"}, "apps": {"href": f"{base}/apps"}}}

    def _page(self, request: web.Request, items: list[dict[str, Any]], *, default_limit: int,
              max_limit: int) -> web.Response:
        """One page of `items` (sorted by id) after the `after` cursor, with Link rel=self and rel=next."""
        try:
            limit = min(int(request.query.get("limit", default_limit)), max_limit)
        except ValueError:
            raise abort(self.okta_error("E0000029")) from None
        if limit < 1:
            raise abort(self.okta_error("E0000029"))
        after = request.query.get("after")
        start = sum(1 for item in items if item["id"] <= after) if after else 0
        page = items[start:start + limit]
        response = web.json_response(page)
        response.headers.add("Link", f'<{request.url}>; rel="self"')
        if page and start + limit < len(items):
            following = request.url.update_query(after=page[-1]["id"], limit=str(limit))
            response.headers.add("Link", f'<{following}>; rel="next"')
        return response

    def _compile(self, expression: str, attributes: Iterable[str], prefixes: Iterable[str] = (),
                 operators: tuple[str, ...] | None = None) -> Predicate:
        try:
            return compile_filter(expression, attributes, prefixes, operators)
        except FilterError as err:
            raise abort(self.okta_error("E0000031", causes=[str(err)])) from None

    # --- users -----------------------------------------------------------------------------------
    async def _list_users(self, request: web.Request) -> web.Response:
        caller = self._caller(request, "okta.users.read")
        q = request.query
        if "search" in q and "filter" in q:
            raise abort(self.okta_error("E0000033"))
        users = sorted(caller.org.users.values(), key=lambda u: u["id"])
        if "search" in q:
            matches = self._compile(q["search"], USER_SEARCH, ("profile",))
            users = [u for u in users if matches(u)]
        elif "filter" in q:
            matches = self._compile(q["filter"], USER_FILTER, operators=("eq",))
            users = [u for u in users if matches(u) and (u["status"] != "DEPROVISIONED" or "status" in q["filter"])]
        else:
            users = [u for u in users if u["status"] != "DEPROVISIONED"]
        if "q" in q:
            prefix = q["q"].casefold()
            users = [u for u in users if any(str(u["profile"].get(k) or "").casefold().startswith(prefix)
                                             for k in ("firstName", "lastName", "email"))]
        if "sortBy" in q and "search" in q:
            users.sort(key=lambda u: str(attribute(u, q["sortBy"]) or ""),
                       reverse=q.get("sortOrder", "asc").lower() == "desc")
        default = 10 if "q" in q and "search" not in q and "filter" not in q else 200
        return self._page(request, [self._user_json(request, u) for u in users], default_limit=default,
                          max_limit=200)

    async def _get_user(self, request: web.Request) -> web.Response:
        caller = self._caller(request, "okta.users.read")
        body = self._user_json(request, self._target(caller, request.match_info["id"]))
        etag = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:20]
        return web.json_response(body, headers={"ETag": f'W/"{etag}"'})

    async def _user_groups(self, request: web.Request) -> web.Response:
        caller = self._caller(request, "okta.users.read")
        user = self._target(caller, request.match_info["id"])
        groups = [self._group_json(request, g) for g in caller.org.groups_of(user["id"])]
        return self._page(request, groups, default_limit=10000, max_limit=10000)

    async def _app_links(self, request: web.Request) -> web.Response:
        caller = self._caller(request, "okta.users.read")
        user = self._target(caller, request.match_info["id"])
        mine = {g["id"] for g in caller.org.groups_of(user["id"])}
        origin = request.url.origin()
        links = [{
            "id": _okta_id("00u", user["id"], app["id"]), "label": app["label"],
            "linkUrl": f"{origin}/home/{app['name']}/{app['id']}/{app['sortOrder'] + 1}",
            "logoUrl": f"{origin}/assets/img/logos/{app['name']}.png", "appName": app["name"],
            "appInstanceId": app["id"], "appAssignmentId": _okta_id("0ua", user["id"], app["id"]),
            "credentialsSetup": False, "hidden": False, "sortOrder": app["sortOrder"],
        } for app in caller.org.apps if app["groups"] & mine]
        return web.json_response(links)

    async def _factors(self, request: web.Request) -> web.Response:
        caller = self._caller(request, "okta.users.read")
        user = self._target(caller, request.match_info["id"])
        return web.json_response(caller.org.factors.get(user["id"], []))

    def _set_status(self, user: dict[str, Any], status: str) -> None:
        user["status"] = status
        user["statusChanged"] = user["lastUpdated"] = _now()

    async def _reset_password(self, request: web.Request) -> web.Response:
        caller = self._caller(request, "okta.users.manage")
        user = self._target(caller, request.match_info["id"])
        self._may_change_user(caller, user)
        send = request.query.get("sendEmail")
        if send is None:
            raise abort(self.okta_error("E0000028", causes=["sendEmail: The parameter is required."]))
        if send.lower() not in ("true", "false"):
            raise abort(self.okta_error("E0000001", "sendEmail: must be true or false"))
        if user["status"] not in RESETTABLE:
            raise abort(self.okta_error("E0000038"))
        self._set_status(user, "RECOVERY")
        if send.lower() == "true":
            caller.org.outbox.append({"to": user["profile"]["email"], "kind": "password_reset"})
            self.count_created(caller.tenant, "password_reset_email")
            return web.json_response({})
        token = secrets.token_urlsafe(15)
        return web.json_response({"resetPasswordUrl": f"{request.url.origin()}/signin/reset-password/{token}"})

    async def _unlock(self, request: web.Request) -> web.Response:
        caller = self._caller(request, "okta.users.manage")
        user = self._target(caller, request.match_info["id"])
        self._may_change_user(caller, user)
        if user["status"] != "LOCKED_OUT":
            raise abort(self.okta_error("E0000032", causes=["The user is not locked out."]))
        self._set_status(user, "ACTIVE")
        return web.Response(status=200)

    async def _reset_factors(self, request: web.Request) -> web.Response:
        caller = self._caller(request, "okta.users.manage")
        user = self._target(caller, request.match_info["id"])
        self._may_change_user(caller, user)
        if user["status"] not in RESETTABLE:
            raise abort(self.okta_error("E0000038"))
        caller.org.factors[user["id"]] = []
        user["lastUpdated"] = _now()
        return web.Response(status=200)

    # --- groups ----------------------------------------------------------------------------------
    async def _list_groups(self, request: web.Request) -> web.Response:
        caller = self._caller(request, "okta.groups.read")
        q = request.query
        if "search" in q and "filter" in q:
            raise abort(self.okta_error("E0000033"))
        groups = sorted(caller.org.groups.values(), key=lambda g: g["id"])
        if "search" in q:
            matches = self._compile(q["search"], GROUP_SEARCH)
            groups = [g for g in groups if matches(g)]
        elif "filter" in q:
            matches = self._compile(q["filter"], GROUP_FILTER, operators=("eq",))
            groups = [g for g in groups if matches(g)]
        if "q" in q:
            groups = [g for g in groups if g["profile"]["name"].casefold().startswith(q["q"].casefold())]
        return self._page(request, [self._group_json(request, g) for g in groups], default_limit=10000,
                          max_limit=10000)

    async def _get_group(self, request: web.Request) -> web.Response:
        caller = self._caller(request, "okta.groups.read")
        return web.json_response(self._group_json(request, self._group(caller, request.match_info["gid"])))

    async def _create_group(self, request: web.Request) -> web.Response:
        caller = self._caller(request, "okta.groups.manage")
        self._may_manage_groups(caller)
        try:
            body = await request.json()
        except ValueError:
            raise abort(self.okta_error("E0000003")) from None
        profile = body.get("profile") if isinstance(body, dict) else None
        if not isinstance(profile, dict):
            profile = {}
        name = profile.get("name")
        if not isinstance(name, str) or not name.strip():
            raise abort(self.okta_error("E0000001", "name: The field cannot be left blank",
                                        causes=["name: The field cannot be left blank"]))
        if any(g["profile"]["name"].casefold() == name.casefold() for g in caller.org.groups.values()):
            cause = "name: An object with this field already exists in the current organization"
            raise abort(self.okta_error("E0000001", cause, causes=[cause]))
        now = _now()
        gid = "00g" + secrets.token_hex(9)[:17]
        group = {"id": gid, "created": now, "lastUpdated": now, "lastMembershipUpdated": now,
                 "objectClass": ["okta:user_group"], "type": "OKTA_GROUP",
                 "profile": {"name": name, "description": profile.get("description")}}
        caller.org.groups[gid] = group
        caller.org.members[gid] = set()
        self.count_created(caller.tenant, "group")
        return web.json_response(self._group_json(request, group))

    async def _group_users(self, request: web.Request) -> web.Response:
        caller = self._caller(request, "okta.groups.read")
        group = self._group(caller, request.match_info["gid"])
        users = [caller.org.users[uid] for uid in sorted(caller.org.members.get(group["id"], ()))]
        return self._page(request, [self._user_json(request, u) for u in users], default_limit=1000,
                          max_limit=1000)

    def _membership_target(self, request: web.Request) -> tuple[_Caller, dict[str, Any], dict[str, Any]]:
        caller = self._caller(request, "okta.groups.manage")
        group = self._group(caller, request.match_info["gid"])
        user = caller.org.users.get(request.match_info["uid"])
        if user is None:
            raise abort(self.okta_error("E0000007", f"Resource not found: {request.match_info['uid']} (User)"))
        self._may_manage_groups(caller)
        if group["type"] != "OKTA_GROUP":
            detail = f"Cannot modify the membership of a group of type {group['type']}"
            raise abort(self.okta_error("E0000001", detail, causes=[detail]))
        return caller, group, user

    async def _add_member(self, request: web.Request) -> web.Response:
        caller, group, user = self._membership_target(request)
        members = caller.org.members[group["id"]]
        if user["id"] not in members:
            members.add(user["id"])
            group["lastMembershipUpdated"] = _now()
            self.count_created(caller.tenant, "group_membership")
        return web.Response(status=204)

    async def _remove_member(self, request: web.Request) -> web.Response:
        caller, group, user = self._membership_target(request)
        members = caller.org.members[group["id"]]
        if user["id"] in members:
            members.discard(user["id"])
            group["lastMembershipUpdated"] = _now()
        return web.Response(status=204)
