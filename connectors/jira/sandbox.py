"""The Jira Cloud sandbox: the REST API v3 endpoints the connector calls, behind the OAuth gateway URL form."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from connectors.common.sandbox import TokenInfo, VendorSandbox, abort

from . import adf, jql
from .sandbox_data import PRIORITIES, Issue, JiraTenant, User, jira_time, selected_fields

GATEWAY_PREFIX = "/ex/jira/{cloud_id}"
API = GATEWAY_PREFIX + "/rest/api/3"
READ, WRITE, READ_USER = "read:jira-work", "write:jira-work", "read:jira-user"
SEARCH_PAGE_DEFAULT = 50
SEARCH_PAGE_MAX = 100  # per page when fields beyond id/key are requested
SEARCH_PAGE_MAX_IDS = 5000
COMMENT_PAGE_MAX = 100
SUMMARY_MAX = 255
ID_FIELDS = frozenset({"id", "key"})  # a search for these alone may page up to 5000
_STATUS_TEXT = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 413: "Request Entity Too Large", 422: "Unprocessable Entity", 429: "Too Many Requests",
    500: "Internal server error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}
NOT_VISIBLE = "Issue does not exist or you do not have permission to see it."
NOT_ADF = "Operation value must be an Atlassian Document (see the Atlassian Document Format)"
ACCOUNT = web.RequestKey("jira_account", str)  # the caller's accountId, echoed as X-AAccountId
SEARCH_REMOVED = ("The requested API has been removed. Please use the newer, enhanced search-based API instead. "
                  "See https://developer.atlassian.com/changelog/#CHANGE-2046 for more details.")


def error_collection(status: int, messages: list[str] | None = None,
                     errors: dict[str, str] | None = None) -> web.Response:
    """Jira's ErrorCollection body: {"errorMessages": [...], "errors": {field: message}}."""
    return web.json_response({"errorMessages": messages or [], "errors": errors or {}}, status=status)


def gateway_error(status: int, message: str) -> web.Response:
    """The api.atlassian.com gateway's own error body: {"code": status, "message": ...}."""
    return web.json_response({"code": status, "message": message}, status=status)


class JiraSandbox(VendorSandbox):
    """Jira Cloud for every fixture tenant on one app; tenants are routed by cloud id as the OAuth gateway does."""

    vendor = "jira"
    single_app = True
    oauth_authorize_path = "/authorize"
    oauth_token_path = "/oauth/token"  # noqa: S105 - a URL path, not a secret

    def reset(self) -> None:
        self.sites: dict[str, JiraTenant] = {}
        self.tenant_by_cloud: dict[str, str] = {}
        for tenant_id, fixture in self.fixtures.items():
            if fixture.get("jira"):
                site = JiraTenant(tenant_id, fixture)
                self.sites[tenant_id] = site
                self.tenant_by_cloud[site.cloud_id] = tenant_id

    def tenant_ids(self) -> list[str]:
        return [t for t, f in self.fixtures.items() if f.get("jira")]

    def base_url_for(self, tenant: str, origin: str) -> str:
        return f"{origin}/ex/jira/{self.fixtures[tenant]['jira']['cloud_id']}"

    def tenant_of(self, request: web.Request) -> str:
        return self.tenant_by_cloud.get(request.match_info.get("cloud_id", ""), "")

    def _tenant_of(self, request: web.Request, given: str | None) -> str | None:
        """Atlassian's consent screen picks the site; here the login_hint's directory does when none is given."""
        if given in self.fixtures:
            return given
        hint = request.query.get("login_hint", "").lower()
        return next((t for t in self.tenant_ids() if self.user(t, hint) is not None), None)

    # --- error shapes --------------------------------------------------------------------------------
    def error_response(self, status: int, message: str = "") -> web.Response:
        if status == 401:
            return gateway_error(401, message or "Unauthorized")
        return error_collection(status, [message or _STATUS_TEXT.get(status, "Error")])

    def rate_limited_response(self, retry_after_s: int) -> web.Response:
        reset = datetime.now(UTC) + timedelta(seconds=retry_after_s + 60)
        response = error_collection(429, ["Rate limit exceeded."])
        response.headers.update({
            "Retry-After": str(retry_after_s),
            "X-RateLimit-Reset": reset.strftime("%Y-%m-%dT%H:%MZ"),
            "X-RateLimit-Limit": "350",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-NearLimit": "true",
            "RateLimit-Reason": "jira-burst-based",
        })
        return response

    # --- routes -------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application, tenant: str | None) -> None:
        app.on_response_prepare.append(self._stamp_account)
        r = app.router
        r.add_get("/oauth/token/accessible-resources", self._accessible_resources)
        r.add_get(f"{API}/myself", self._myself)
        r.add_get(f"{API}/serverInfo", self._server_info)
        r.add_get(f"{API}/user/search", self._user_search)
        r.add_get(f"{API}/search/jql", self._search)
        r.add_post(f"{API}/search/jql", self._search)
        r.add_post(f"{API}/search/approximate-count", self._approximate_count)
        r.add_route("*", f"{API}/search", self._search_removed)
        r.add_post(f"{API}/issue", self._create_issue)
        r.add_get(f"{API}/issue/{{key}}", self._get_issue)
        r.add_get(f"{API}/issue/{{key}}/transitions", self._get_transitions)
        r.add_post(f"{API}/issue/{{key}}/transitions", self._do_transition)
        r.add_put(f"{API}/issue/{{key}}/assignee", self._assign)
        r.add_get(f"{API}/issue/{{key}}/comment", self._get_comments)
        r.add_post(f"{API}/issue/{{key}}/comment", self._add_comment)
        r.add_get(f"{API}/issue/{{key}}/properties/{{property}}", self._get_property)
        r.add_put(f"{API}/issue/{{key}}/properties/{{property}}", self._set_property)
        r.add_post(f"{API}/comment/list", self._comments_by_ids)

    @staticmethod
    async def _stamp_account(request: web.Request, response: web.StreamResponse) -> None:
        account = request.get(ACCOUNT)
        if account:
            response.headers["X-AAccountId"] = account

    def _caller(self, request: web.Request, scope: str) -> tuple[JiraTenant, User, str]:
        """(site, calling user, API base for self links); the gateway's 401 for a missing, foreign or
        under-scoped token."""
        tenant = self.tenant_of(request)
        if not tenant:
            raise abort(gateway_error(404, "Not Found"))
        info: TokenInfo = self.authenticate(request, tenant)
        if info.scopes and scope not in info.scopes:
            raise abort(gateway_error(401, "Unauthorized; scope does not match"))
        site = self.sites[tenant]
        user = site.by_email.get(info.subject)
        if user is None or not user.active:
            raise abort(gateway_error(401, "Unauthorized"))
        request[ACCOUNT] = user.account_id
        api = f"{request.scheme}://{request.host}/ex/jira/{site.cloud_id}/rest/api/3"
        return site, user, api

    @staticmethod
    async def _body(request: web.Request) -> Any:
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise abort(error_collection(400, [f"Unexpected character in the request body: {err}"])) from None

    @staticmethod
    def _issue(site: JiraTenant, user: User, key: str) -> Issue:
        issue = site.visible_issue(user, key)
        if issue is None:
            raise abort(error_collection(404, [NOT_VISIBLE]))
        return issue

    # --- identity -------------------------------------------------------------------------------------
    async def _accessible_resources(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        info = self.tokens.lookup(token.strip()) if scheme == "Bearer" else None
        if info is None or info.tenant not in self.sites:
            return gateway_error(401, "Unauthorized")
        site = self.sites[info.tenant]
        scopes = list(info.scopes) or [READ, WRITE, READ_USER]
        return web.json_response([{"id": site.cloud_id, "name": site.site.removeprefix("https://").split(".")[0],
                                   "url": site.site, "scopes": scopes,
                                   "avatarUrl": "https://site-admin-avatar-cdn.prod.public.atl-paas.net/avatars/240/"
                                                "rocket.png"}])

    async def _myself(self, request: web.Request) -> web.Response:
        site, user, api = self._caller(request, READ_USER)
        body = site.user_json(user.account_id, api)
        body.update({"locale": "en_US", "groups": {"size": len(user.groups), "items": []},
                     "applicationRoles": {"size": 1, "items": []}})
        return web.json_response(body)

    async def _server_info(self, request: web.Request) -> web.Response:
        site, _, _ = self._caller(request, READ_USER)
        now = datetime.now(UTC)
        return web.json_response({"baseUrl": site.site, "displayUrl": site.site, "version": "1001.0.0-SNAPSHOT",
                                  "versionNumbers": [1001, 0, 0], "deploymentType": "Cloud", "buildNumber": 100282,
                                  "buildDate": "2026-11-01T00:00:00.000+0000", "serverTime": jira_time(now),
                                  "scmInfo": "0c1e5d1b0d6b4c2f", "serverTitle": "Jira",
                                  "defaultLocale": {"locale": "en_US"}, "serverTimeZone": "Etc/UTC"})

    async def _user_search(self, request: web.Request) -> web.Response:
        site, _, api = self._caller(request, READ_USER)
        query = request.query.get("query", "").strip().lower()
        account = request.query.get("accountId", "")
        if not query and not account:
            return error_collection(400, ["The query parameter 'query' or 'accountId' must be provided."])
        start, limit = _int(request, "startAt", 0), min(_int(request, "maxResults", 50), 1000)

        def hit(u: User) -> bool:
            if account:
                return u.account_id == account
            words = [*u.display_name.lower().split(), u.email]
            return any(w.startswith(query) for w in words) or u.display_name.lower().startswith(query)

        users = [u for u in site.users.values() if u.active and hit(u)]
        return web.json_response([site.user_json(u.account_id, api) for u in users[start:start + limit]])

    # --- search ----------------------------------------------------------------------------------------
    async def _search_removed(self, request: web.Request) -> web.Response:
        self._caller(request, READ)
        return error_collection(410, [SEARCH_REMOVED])

    async def _search(self, request: web.Request) -> web.Response:
        site, user, api = self._caller(request, READ)
        if request.method == "POST":
            body = await self._body(request)
            if not isinstance(body, dict):
                return error_collection(400, ["The request body must be a JSON object."])
            query_text = str(body.get("jql") or "")
            token = body.get("nextPageToken")
            requested = body.get("maxResults", SEARCH_PAGE_DEFAULT)
            field_specs = [str(f) for f in body.get("fields") or []]
        else:
            query_text = request.query.get("jql", "")
            token = request.query.get("nextPageToken")
            requested = request.query.get("maxResults", SEARCH_PAGE_DEFAULT)
            field_specs = request.query.getall("fields", [])
        try:
            matches = site.search(user, query_text)
        except jql.JqlError as err:
            return error_collection(400, [str(err)])
        fields = selected_fields(field_specs, {"id"})
        try:
            page_size = int(requested)
        except (TypeError, ValueError):
            return error_collection(400, ["The value of 'maxResults' must be a number."])
        ids_only = fields is not None and fields <= ID_FIELDS
        page_size = max(0, min(page_size, SEARCH_PAGE_MAX_IDS if ids_only else SEARCH_PAGE_MAX))
        start = _decode_page_token(token, query_text) if token else 0
        page = matches[start:start + page_size]
        end = start + len(page)
        out: dict[str, Any] = {"issues": [site.issue_json(i, api, fields) for i in page], "isLast": end >= len(matches)}
        if end < len(matches):
            out["nextPageToken"] = _page_token(end, query_text)
        return web.json_response(out)

    async def _approximate_count(self, request: web.Request) -> web.Response:
        site, user, _ = self._caller(request, READ)
        body = await self._body(request)
        try:
            matches = site.search(user, str((body or {}).get("jql") or ""))
        except jql.JqlError as err:
            return error_collection(400, [str(err)])
        return web.json_response({"count": len(matches)})

    # --- issues ----------------------------------------------------------------------------------------
    async def _get_issue(self, request: web.Request) -> web.Response:
        site, user, api = self._caller(request, READ)
        issue = self._issue(site, user, request.match_info["key"])
        fields = selected_fields(request.query.getall("fields", []), None)
        return web.json_response(site.issue_json(issue, api, fields))

    async def _create_issue(self, request: web.Request) -> web.Response:
        site, user, api = self._caller(request, WRITE)
        body = await self._body(request)
        given = body.get("fields") if isinstance(body, dict) else None
        if not isinstance(given, dict):
            return error_collection(400, ["Issue must have a 'fields' object."])
        errors: dict[str, str] = {}
        project_ref = given["project"] if isinstance(given.get("project"), dict) else {}
        project = site.visible_project(user, str(project_ref.get("key") or project_ref.get("id") or ""))
        if project is None:
            errors["project"] = "Specify a valid project ID or key"
        elif not site.can_create(user, project):
            return error_collection(403, ["You do not have permission to create issues in this project."])
        fields: dict[str, Any] = {}
        for name, value in given.items():
            if name == "project":
                continue
            problem = self._field_problem(site, name, value, fields, project)
            if problem:
                errors[name] = problem
        if not str(given.get("summary") or "").strip():
            errors["summary"] = "You must specify a summary of the issue."
        if "issuetype" not in given:
            errors["issuetype"] = "Specify an issue type"
        properties = _properties(body.get("properties"), errors)
        if errors or project is None:
            return error_collection(400, [], errors)
        issue = site.create_issue(project, user, fields, properties)
        self.count_created(site.tenant, "issue")
        return web.json_response({"id": issue.id, "key": issue.key, "self": f"{api}/issue/{issue.id}"}, status=201)

    @staticmethod
    def _field_problem(site: JiraTenant, name: str, value: Any, fields: dict[str, Any],
                       project: Any) -> str | None:
        """Validates one create field into `fields`; returns Jira's message for it when it is invalid."""
        ref = value if isinstance(value, dict) else {}
        if name == "summary":
            if not isinstance(value, str):
                return "Operation value must be a string"
            if len(value) > SUMMARY_MAX:
                return f"Summary must be less than {SUMMARY_MAX} characters."
            if "\n" in value or "\r" in value:
                return "The summary is invalid because it contains newline characters."
            fields["summary"] = value
        elif name == "issuetype":
            wanted = str(ref.get("name") or ref.get("id") or "").lower()
            match = next((t for t, tid in site.issue_types.items() if wanted in (t.lower(), tid)), None)
            if match is None:
                return "The issue type selected is invalid."
            fields["issuetype"] = match
        elif name == "description":
            if value is not None and not adf.is_document(value):
                return NOT_ADF
            fields["description"] = value
        elif name == "priority":
            wanted = str(ref.get("name") or ref.get("id") or "").lower()
            match = next((p for n, p in enumerate(PRIORITIES) if wanted in (p.lower(), str(n + 1))), None)
            if match is None:
                return "The priority selected is invalid."
            fields["priority"] = match
        elif name == "assignee":
            if value is None:
                return None
            account = str(ref.get("accountId") or ref.get("id") or "")
            assignee = site.users.get(account)
            if assignee is None:
                return f"User '{account}' does not exist."
            if project is not None and not site.assignable(assignee, project):
                return f"User '{assignee.display_name}' cannot be assigned issues."
            fields["assignee"] = account
        elif name == "labels":
            if not isinstance(value, list) or not all(isinstance(v, str) and " " not in v for v in value):
                return "The label must not contain spaces."
            fields["labels"] = list(value)
        else:
            return f"Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
        return None

    async def _get_property(self, request: web.Request) -> web.Response:
        site, user, _ = self._caller(request, READ)
        issue = self._issue(site, user, request.match_info["key"])
        key = request.match_info["property"]
        if key not in issue.properties:
            return error_collection(404, [f"The property with key '{key}' does not exist."])
        return web.json_response({"key": key, "value": issue.properties[key]})

    async def _set_property(self, request: web.Request) -> web.Response:
        site, user, _ = self._caller(request, WRITE)
        issue = self._issue(site, user, request.match_info["key"])
        if not site.can_create(user, issue.project):
            return error_collection(403, ["You do not have permission to edit issues in this project."])
        value = await self._body(request)
        key = request.match_info["property"]
        created = key not in issue.properties
        issue.properties[key] = value
        return web.json_response({}, status=201 if created else 200)

    # --- workflow and assignment ----------------------------------------------------------------------
    def _transitions(self, site: JiraTenant, user: User, issue: Issue, api: str) -> list[dict[str, Any]]:
        if not site.can_create(user, issue.project):
            return []
        return [{"id": tid, "name": status.name, "to": site.status_json(status, api), "hasScreen": False,
                 "isGlobal": True, "isInitial": False, "isAvailable": True, "isConditional": False,
                 "isLooped": False}
                for tid, status in site.transitions if status is not issue.status]

    async def _get_transitions(self, request: web.Request) -> web.Response:
        site, user, api = self._caller(request, READ)
        issue = self._issue(site, user, request.match_info["key"])
        return web.json_response({"expand": "transitions",
                                  "transitions": self._transitions(site, user, issue, api)})

    async def _do_transition(self, request: web.Request) -> web.Response:
        site, user, api = self._caller(request, WRITE)
        issue = self._issue(site, user, request.match_info["key"])
        body = await self._body(request)
        wanted = body.get("transition") if isinstance(body, dict) else None
        if not isinstance(wanted, dict) or not (wanted.get("id") or wanted.get("name")):
            return error_collection(400, ["Missing 'transition' identifier"])
        if not site.can_create(user, issue.project):
            return error_collection(400, ["You do not have permission to transition this issue."])
        for option in self._transitions(site, user, issue, api):
            if str(wanted.get("id", "")) == option["id"] or (not wanted.get("id") and wanted.get("name") ==
                                                              option["name"]):
                target = site.status_named(option["to"]["id"])
                if target is not None:
                    issue.status = target
                    issue.updated = datetime.now(UTC)
                return web.Response(status=204)
        return error_collection(400, [f"Transition id '{wanted.get('id', '')}' is not valid for this issue."])

    async def _assign(self, request: web.Request) -> web.Response:
        site, user, _ = self._caller(request, WRITE)
        issue = self._issue(site, user, request.match_info["key"])
        body = await self._body(request)
        if not isinstance(body, dict) or "accountId" not in body:
            return error_collection(400, [], {"accountId": "The accountId must be provided (null unassigns)."})
        if not site.can_create(user, issue.project):
            return error_collection(403, ["You do not have permission to assign issues."])
        account = body["accountId"]
        if account == "-1":
            account = issue.project.lead or None
        if account is not None:
            assignee = site.users.get(str(account))
            if assignee is None:
                return error_collection(404, [f"The user with account ID '{account}' does not exist."])
            if not site.assignable(assignee, issue.project):
                return error_collection(400, [], {"assignee": f"User '{assignee.display_name}' cannot be "
                                                              "assigned issues."})
        issue.assignee = account
        issue.updated = datetime.now(UTC)
        return web.Response(status=204)

    # --- comments ---------------------------------------------------------------------------------------
    async def _get_comments(self, request: web.Request) -> web.Response:
        site, user, api = self._caller(request, READ)
        issue = self._issue(site, user, request.match_info["key"])
        start = _int(request, "startAt", 0)
        limit = max(0, min(_int(request, "maxResults", COMMENT_PAGE_MAX), COMMENT_PAGE_MAX))
        comments = sorted(issue.comments, key=lambda c: (c.created, int(c.id)),
                          reverse=request.query.get("orderBy", "created").startswith("-"))
        return web.json_response({"startAt": start, "maxResults": limit, "total": len(comments),
                                  "comments": [site.comment_json(issue, c, api)
                                               for c in comments[start:start + limit]]})

    async def _add_comment(self, request: web.Request) -> web.Response:
        site, user, api = self._caller(request, WRITE)
        issue = self._issue(site, user, request.match_info["key"])
        body = await self._body(request)
        text = body.get("body") if isinstance(body, dict) else None
        if text is None or (adf.is_document(text) and not adf.to_text(text).strip()):
            return error_collection(400, [], {"comment": "Comment body can not be empty!"})
        if not adf.is_document(text):
            return error_collection(400, [], {"comment": NOT_ADF})
        errors: dict[str, str] = {}
        properties = _properties(body.get("properties"), errors)
        if errors:
            return error_collection(400, [], errors)
        comment = site.add_comment(issue, user, text, properties)
        self.count_created(site.tenant, "comment")
        return web.json_response(site.comment_json(issue, comment, api), status=201)

    async def _comments_by_ids(self, request: web.Request) -> web.Response:
        site, user, api = self._caller(request, READ)
        body = await self._body(request)
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or len(ids) > 1000:
            return error_collection(400, ["Provide between 1 and 1000 comment ids in 'ids'."])
        expand = {e.strip() for e in request.query.get("expand", "").split(",")}
        values = []
        for comment_id in ids:
            found = site.comment_by_id(str(comment_id))
            if found is not None and site.can_browse(user, found[0].project):
                values.append(site.comment_json(found[0], found[1], api, properties="properties" in expand))
        return web.json_response({"maxResults": 1000, "startAt": 0, "total": len(values), "isLast": True,
                                  "values": values})


def _int(request: web.Request, name: str, default: int) -> int:
    try:
        return int(request.query.get(name, default))
    except ValueError:
        raise abort(error_collection(400, [f"The value of '{name}' must be a number."])) from None


def _properties(given: Any, errors: dict[str, str]) -> dict[str, Any]:
    """Entity properties of a create body ([{"key", "value"}]); problems land in `errors`."""
    if given is None:
        return {}
    out: dict[str, Any] = {}
    if not isinstance(given, list):
        errors["properties"] = "Properties must be a list of {key, value} objects."
        return out
    for item in given:
        key = item.get("key") if isinstance(item, dict) else None
        if not isinstance(key, str) or not 0 < len(key) <= 255:
            errors["properties"] = "The property key must be between 1 and 255 characters."
            continue
        if len(json.dumps(item.get("value"))) > 32768:
            errors["properties"] = f"The value of property '{key}' is too long (at most 32768 characters)."
            continue
        out[key] = item.get("value")
    return out


def _page_token(offset: int, query_text: str) -> str:
    digest = hashlib.sha256(query_text.encode()).hexdigest()[:12]
    raw = json.dumps({"o": offset, "q": digest}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_page_token(token: Any, query_text: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(str(token) + "=" * (-len(str(token)) % 4))
        data = json.loads(raw)
        if data["q"] != hashlib.sha256(query_text.encode()).hexdigest()[:12]:
            raise ValueError("token of another query")
        return int(data["o"])
    except (ValueError, KeyError, TypeError) as err:
        raise abort(error_collection(400, ["The provided next page token is invalid or expired."])) from err
