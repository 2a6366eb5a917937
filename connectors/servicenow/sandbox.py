"""ServiceNow sandbox: each tenant's instance serves the Table API and the catalog order endpoint as ServiceNow does."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from connectors.common.sandbox import TENANT_KEY, TokenInfo, VendorSandbox, abort

from .query import QueryError, parse
from .sandbox_state import DISPLAY_FIELD, SCHEMA, Denied, Record, TenantState

# The Table API answers under its unversioned and versioned paths alike.
TABLE_PREFIXES = ("/api/now/table", "/api/now/v1/table", "/api/now/v2/table")
ORDER_NOW_PATH = "/api/sn_sc/servicecatalog/items/{sys_id}/order_now"
# Tables that extend `task`: a reference to a task (an approval's `sysapproval`) resolves in one of these.
TASK_TABLES = ("incident", "sc_req_item", "sc_request")
DEFAULT_LIMIT = 10_000
RATE_LIMIT_PER_HOUR = 1000
RATE_LIMIT_RULE = "0a7e0a1bdb2c20104a8e5a1b8c961900"

_ERRORS: dict[int, tuple[str, str]] = {
    400: ("Invalid request", "The request could not be processed"),
    401: ("User Not Authenticated", "Required to provide Auth information"),
    403: ("User Not Authorized", "Failed API level ACL Validation"),
    404: ("No Record found", "Record doesn't exist or ACL restricts the record retrieval"),
    405: ("Method not Supported", "Requested method is not supported by this resource"),
    415: ("Unsupported Media Type", "Requested Content-Type is not supported"),
    500: ("Internal Server Error", "An unexpected error occurred"),
    502: ("Bad Gateway", "The instance is not reachable"),
    503: ("Service Unavailable", "The instance is temporarily unavailable"),
    504: ("Gateway Timeout", "The instance did not answer in time"),
}

Handler = Callable[[web.Request, str, str], Awaitable[web.Response]]


def sn_error(status: int, message: str = "", detail: str = "") -> web.Response:
    """ServiceNow's error body: {"error": {"message", "detail"}, "status": "failure"}."""
    default_message, default_detail = _ERRORS.get(status, ("Error", ""))
    body = {"error": {"message": message or default_message, "detail": detail or default_detail},
            "status": "failure"}
    return web.json_response(body, status=status)


class ServiceNowSandbox(VendorSandbox):
    """One ServiceNow instance per tenant, with the fixtures' users, roles, incidents, catalog and approvals."""

    vendor = "servicenow"
    oauth_authorize_path = "/oauth_auth.do"
    oauth_token_path = "/oauth_token.do"  # noqa: S105 - a URL path, not a secret

    def reset(self) -> None:
        self.states = {tenant: TenantState.from_fixture(data) for tenant, data in self.fixtures.items()}

    def error_response(self, status: int, message: str = "") -> web.Response:
        return sn_error(status, message)

    def rate_limited_response(self, retry_after_s: int) -> web.Response:
        response = sn_error(429, "Too Many Requests",
                            f"Rate limit of {RATE_LIMIT_PER_HOUR} requests per hour exceeded")
        response.headers.update({
            "Retry-After": str(retry_after_s),
            "X-RateLimit-Limit": str(RATE_LIMIT_PER_HOUR),
            "X-RateLimit-Reset": str(int(time.time()) + retry_after_s),
            "X-RateLimit-Rule": RATE_LIMIT_RULE,
        })
        return response

    def token_extras(self, info: TokenInfo, tenant: str) -> dict[str, Any]:
        return {"scope": "useraccount"}

    def add_routes(self, app: web.Application, tenant: str | None) -> None:
        if tenant is None:
            raise ValueError("a ServiceNow sandbox serves one instance (origin) per tenant")
        for prefix in TABLE_PREFIXES:
            for table in SCHEMA:
                path = f"{prefix}/{table}"
                app.router.add_get(path, self._on(tenant, table, self._list))
                app.router.add_post(path, self._on(tenant, table, self._create))
                app.router.add_get(path + "/{sys_id}", self._on(tenant, table, self._get))
                app.router.add_patch(path + "/{sys_id}", self._on(tenant, table, self._update))
                app.router.add_put(path + "/{sys_id}", self._on(tenant, table, self._update))
                app.router.add_delete(path + "/{sys_id}", self._on(tenant, table, self._delete))
            app.router.add_get(f"{prefix}/task/{{sys_id}}", self._on(tenant, "task", self._get))
            app.router.add_route("*", prefix + "/{table}", self._invalid_table)
            app.router.add_route("*", prefix + "/{table}/{sys_id}", self._invalid_table)
        app.router.add_post(ORDER_NOW_PATH, self._on(tenant, "sc_cat_item", self._order_now))

    @staticmethod
    def _on(tenant: str, table: str, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            return await handler(request, tenant, table)

        return handle

    # --- request helpers -------------------------------------------------------------------------------
    def _caller(self, request: web.Request, tenant: str) -> tuple[TenantState, str]:
        """The instance and the sys_id of the user the bearer token belongs to (401 otherwise)."""
        info = self.authenticate(request, tenant)
        state = self.states[tenant]
        if info.kind == "user":
            for user in state.tables["sys_user"].values():
                if user["email"].lower() == info.subject and user["active"] == "true":
                    return state, user["sys_id"]
        raise abort(sn_error(401))

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        if "json" not in request.content_type:
            raise abort(sn_error(415))
        try:
            body = await request.json()
        except json.JSONDecodeError:
            raise abort(sn_error(400, "Exception while reading request", "The payload is not valid JSON.")) from None
        if isinstance(body, list):  # several records: only the first is applied (KB0534905)
            body = body[0] if body else {}
        if not isinstance(body, dict):
            raise abort(sn_error(400, "Exception while reading request", "The payload must be a JSON object."))
        return body

    @staticmethod
    def _int_param(request: web.Request, name: str, default: int) -> int:
        raw = request.query.get(name, "")
        if raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise abort(sn_error(400, f"Invalid {name.removeprefix('sysparm_')} {raw!r}",
                                 f"{name} must be a whole number")) from None
        if value < 0:
            if name == "sysparm_offset":
                raise abort(sn_error(400, f"offset is {value}", "Negative offset is not supported"))
            raise abort(sn_error(400, f"limit is {value}", "Negative limit is not supported"))
        return value

    def _record(self, state: TenantState, table: str, sys_id: str, uid: str) -> tuple[str, Record]:
        tables = TASK_TABLES if table == "task" else (table,)
        for name in tables:
            record = state.tables[name].get(sys_id)
            if record is not None and state.can_read(name, record, uid):
                return name, record
        raise abort(sn_error(404))

    # --- rendering: every value a string, references {link, value} --------------------------------------
    def _render(self, request: web.Request, state: TenantState, table: str, record: Record) -> dict[str, Any]:
        q = request.query
        display = q.get("sysparm_display_value", "false").lower()
        no_links = q.get("sysparm_exclude_reference_link", "false").lower() == "true"
        origin = str(request.url.origin())
        columns = SCHEMA[table]
        names = [f.strip() for f in q["sysparm_fields"].split(",")] if q.get("sysparm_fields") else list(columns)
        out: dict[str, Any] = {}
        for name in names:
            column = columns.get(name)
            if column is None:
                continue
            if column.kind == "journal":
                value, shown = "", _journal_text(state, table, record["sys_id"], name)
            else:
                value = record.get(name, "")
                shown = column.label(value)
            if column.kind == "reference":
                shown = self._display_of(state, column.ref, value)
                link = f"{origin}/api/now/table/{column.ref}/{value}" if value and not no_links else ""
                if display == "true":
                    out[name] = shown
                elif display == "all":
                    out[name] = {"display_value": shown, "value": value} | ({"link": link} if link else {})
                else:
                    out[name] = {"link": link, "value": value} if link else value
            elif display == "true":
                out[name] = shown
            elif display == "all":
                out[name] = {"display_value": shown, "value": value}
            else:
                out[name] = value
        return out

    @staticmethod
    def _display_of(state: TenantState, table: str, sys_id: str) -> str:
        if not sys_id:
            return ""
        for name in TASK_TABLES if table == "task" else (table,):
            record = state.tables.get(name, {}).get(sys_id)
            if record is not None:
                return record.get(DISPLAY_FIELD.get(table, "sys_id"), sys_id)
        return ""

    # --- Table API -------------------------------------------------------------------------------------
    async def _list(self, request: web.Request, tenant: str, table: str) -> web.Response:
        state, uid = self._caller(request, tenant)
        offset = self._int_param(request, "sysparm_offset", 0)
        limit = self._int_param(request, "sysparm_limit", DEFAULT_LIMIT)
        try:
            query = parse(request.query.get("sysparm_query", ""), SCHEMA[table], uid, table)
        except QueryError as err:
            raise abort(sn_error(400, f"Invalid query detected, please check logs for details [{err}]",
                                 str(err))) from None
        rows = query.sort([r for r in state.tables[table].values()
                           if query.matches(r) and state.can_read(table, r, uid)])
        page = rows[offset:offset + limit] if limit else []
        response = web.json_response({"result": [self._render(request, state, table, r) for r in page]})
        response.headers["X-Total-Count"] = str(len(rows))
        if request.query.get("sysparm_suppress_pagination_header", "false").lower() != "true" and limit:
            response.headers["Link"] = _link_header(request, offset, limit, len(rows))
        return response

    async def _get(self, request: web.Request, tenant: str, table: str) -> web.Response:
        state, uid = self._caller(request, tenant)
        actual, record = self._record(state, table, request.match_info["sys_id"], uid)
        return web.json_response({"result": self._render(request, state, actual, record)})

    async def _create(self, request: web.Request, tenant: str, table: str) -> web.Response:
        state, uid = self._caller(request, tenant)
        if table != "incident":
            raise abort(sn_error(403))
        body = await self._body(request)
        record = state.create_incident(body, uid)
        self.count_created(tenant, "incident")
        for _ in state.journal("incident", record["sys_id"]):
            self.count_created(tenant, "sys_journal_field")
        response = web.json_response({"result": self._render(request, state, table, record)}, status=201)
        response.headers["Location"] = f"{request.url.origin()}/api/now/table/incident/{record['sys_id']}"
        return response

    async def _update(self, request: web.Request, tenant: str, table: str) -> web.Response:
        state, uid = self._caller(request, tenant)
        _, record = self._record(state, table, request.match_info["sys_id"], uid)
        body = await self._body(request)
        try:
            if table == "incident":
                record, journal = state.update_incident(record, body, uid)
            elif table == "sysapproval_approver":
                record, journal = state.decide(record, body, uid)
            else:
                raise Denied("User Not Authorized", "Failed API level ACL Validation")
        except Denied as err:
            raise abort(sn_error(403, err.message, err.detail)) from None
        for _ in journal:
            self.count_created(tenant, "sys_journal_field")
        return web.json_response({"result": self._render(request, state, table, record)})

    async def _delete(self, request: web.Request, tenant: str, table: str) -> web.Response:
        state, uid = self._caller(request, tenant)
        _, record = self._record(state, table, request.match_info["sys_id"], uid)
        if table != "incident" or "admin" not in state.roles.get(uid, set()):
            raise abort(sn_error(403))
        del state.tables[table][record["sys_id"]]
        return web.Response(status=204)

    async def _invalid_table(self, request: web.Request) -> web.Response:
        tenant = request.app[TENANT_KEY]
        self._caller(request, tenant)
        table = request.match_info["table"]
        return sn_error(400, f"Invalid table {table}", f"Invalid table {table}")

    # --- Service Catalog API -----------------------------------------------------------------------------
    async def _order_now(self, request: web.Request, tenant: str, table: str) -> web.Response:
        state, uid = self._caller(request, tenant)
        item = state.tables["sc_cat_item"].get(request.match_info["sys_id"])
        if item is None or item["active"] != "true":
            raise abort(sn_error(404, "Catalog item not found", "The catalog item is not available"))
        body = await self._body(request)
        try:
            quantity = int(str(body.get("sysparm_quantity", "1")))
        except ValueError:
            quantity = 0
        if quantity < 1:
            raise abort(sn_error(400, "Invalid quantity", "sysparm_quantity must be a positive whole number"))
        variables = body.get("variables", {})
        if not isinstance(variables, dict):
            raise abort(sn_error(400, "Invalid variables", "variables must be an object"))
        requested_for = str(body.get("sysparm_requested_for") or uid)
        if state.user(requested_for) is None:
            raise abort(sn_error(400, "Invalid requested for", f"No user {requested_for}"))
        request_record, _ = state.order(item, quantity, variables, requested_for, uid)
        self.count_created(tenant, "sc_request")
        self.count_created(tenant, "sc_req_item")
        return web.json_response({"result": {
            "sys_id": request_record["sys_id"], "number": request_record["number"],
            "request_number": request_record["number"], "request_id": request_record["sys_id"],
            "table": "sc_request",
        }})


def _journal_text(state: TenantState, table: str, sys_id: str, element: str) -> str:
    """A journal field's display value: its entries, newest first, each under a stamp line."""
    entries = [j for j in state.journal(table, sys_id) if j["element"] == element]
    label = "Comments" if element == "comments" else "Work notes"
    parts = []
    for entry in reversed(entries):
        author = next((u["name"] for u in state.tables["sys_user"].values()
                       if u["user_name"] == entry["sys_created_by"]), entry["sys_created_by"])
        parts.append(f"{entry['sys_created_on']} - {author} ({label})\n{entry['value']}\n\n")
    return "".join(parts)


def _link_header(request: web.Request, offset: int, limit: int, total: int) -> str:
    """The Table API's Link header: first, prev, next and last pages, each the same query at another offset."""
    base = f"{request.url.origin()}{request.path}"

    def url(at: int) -> str:
        params = {k: v for k, v in request.query.items() if k not in ("sysparm_offset", "sysparm_limit")}
        params.update(sysparm_limit=str(limit), sysparm_offset=str(at))
        return f"{base}?{urlencode(params)}"

    links = [(url(0), "first")]
    if offset > 0:
        links.append((url(max(offset - limit, 0)), "prev"))
    if offset + limit < total:
        links.append((url(offset + limit), "next"))
    links.append((url(max((total - 1) // limit, 0) * limit), "last"))
    return ",".join(f'<{target}>;rel="{rel}"' for target, rel in links)
