"""The Salesforce sandbox: each tenant's org on its own origin, answering the REST API as Salesforce does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from connectors.common.sandbox import SANDBOX_CLIENT_SECRET, TENANT_KEY, Handler, TokenInfo, VendorSandbox

from . import soql
from .org import OBJECTS, WRITABLE, ApiError, Org, not_found

API_PREFIX = "/services/data/v"
# The versions the sandbox answers (GET /services/data/ lists them); the catalog uses v60.0.
VERSIONS = {"58.0": "Summer '23", "59.0": "Winter '24", "60.0": "Spring '24", "61.0": "Summer '24",
            "62.0": "Winter '25"}
DEFAULT_DAILY_API_LIMIT = 100_000
BATCH_MIN, BATCH_MAX, BATCH_DEFAULT = 200, 2000, 2000
CURSOR_TTL_S = 15 * 60

_STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("JSON_PARSER_ERROR", "The request body could not be parsed"),
    401: ("INVALID_SESSION_ID", "Session expired or invalid"),
    403: ("INSUFFICIENT_ACCESS", "insufficient access rights on object id"),
    404: ("NOT_FOUND", "The requested resource does not exist"),
    409: ("CONFLICT", "The request could not be completed due to a conflict with the current state of the resource"),
    500: ("UNKNOWN_EXCEPTION", "An unexpected error occurred. Please include this ErrorId if you contact support: "
                               "1290481236-58413 (-1174215372)"),
    503: ("SERVER_UNAVAILABLE", "Server is temporarily unavailable, please try again later"),
}


@dataclass
class _Cursor:
    """A query's remaining rows, served batch by batch through nextRecordsUrl to the user who ran it."""

    tenant: str
    user_id: str
    rows: list[dict[str, Any]]
    batch: int
    expires_at: float


class SalesforceSandbox(VendorSandbox):
    """Salesforce REST API (v58.0 to v62.0) for the tenants whose fixtures have a `salesforce` section."""

    vendor = "salesforce"
    oauth_authorize_path = "/services/oauth2/authorize"
    oauth_token_path = "/services/oauth2/token"  # noqa: S105 - a URL path, not a secret

    def __init__(self, fixtures: dict[str, dict[str, Any]] | None = None, *,
                 daily_api_limit: int = DEFAULT_DAILY_API_LIMIT) -> None:
        self.daily_api_limit = daily_api_limit
        super().__init__(fixtures)

    def tenant_ids(self) -> list[str]:
        return [tenant for tenant, data in self.fixtures.items() if data.get("salesforce")]

    def reset(self) -> None:
        self.orgs: dict[str, Org] = {tenant: Org(tenant, self.fixtures[tenant]) for tenant in self.tenant_ids()}
        self.api_usage: dict[str, int] = dict.fromkeys(self.orgs, 0)
        self.cursors: dict[str, _Cursor] = {}

    # --- vendor shapes ------------------------------------------------------------------------------------------
    def error_response(self, status: int, message: str = "") -> web.Response:
        code, default = _STATUS_ERRORS.get(status, ("UNKNOWN_EXCEPTION" if status >= 500 else "BAD_REQUEST",
                                                    "The request failed"))
        return _json([{"message": message or default, "errorCode": code}], status)

    def rate_limited_response(self, retry_after_s: int) -> web.Response:
        """An injected (transient) limit: too many concurrent long requests. Salesforce answers it with a 403 and
        sends no Retry-After, so `retry_after_s` has no header to go in."""
        return _limit_exceeded("ConcurrentPerOrgLongTxn Limit exceeded.")

    def token_extras(self, info: TokenInfo, tenant: str) -> dict[str, Any]:
        instance_url = self.base_urls.get(tenant, "")
        person = self.user(tenant, info.subject) or {}
        org = self.orgs.get(tenant)
        identity = f"{instance_url}/id/{org.org_id if org else ''}/{person.get('salesforce_user_id') or ''}"
        issued_at = str(int(time.time() * 1000))
        digest = hmac.new(SANDBOX_CLIENT_SECRET.encode(), (identity + issued_at).encode(), hashlib.sha256).digest()
        return {"instance_url": instance_url, "id": identity, "issued_at": issued_at,
                "signature": base64.b64encode(digest).decode()}

    # --- routes -------------------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application, tenant: str | None) -> None:
        app.middlewares.append(self._api_middleware)
        app.on_response_prepare.append(self._limit_header)
        data = "/services/data/v{version:[0-9]+\\.0}"
        sobject = data + "/sobjects/{sobject}"
        app.router.add_get("/services/data/", self._versions)
        app.router.add_get("/services/oauth2/userinfo", self._userinfo)
        app.router.add_get(data + "/query", self._query)
        app.router.add_get(data + "/query/{locator}", self._query_more)
        app.router.add_post(sobject, self._create)
        app.router.add_get(sobject + "/{record_id}", self._get_record)
        app.router.add_patch(sobject + "/{record_id}", self._update)
        app.router.add_get(sobject + "/{field}/{value}", self._get_by_external_id)
        app.router.add_patch(sobject + "/{field}/{value}", self._upsert)

    @web.middleware
    async def _api_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Counts API requests against the org's daily limit and answers failures in Salesforce's shape."""
        tenant = request.app[TENANT_KEY]
        if request.path.startswith(API_PREFIX):
            if self.api_usage[tenant] >= self.daily_api_limit:
                return _limit_exceeded("TotalRequests Limit exceeded.")
            self.api_usage[tenant] += 1
        try:
            return await handler(request)
        except ApiError as err:
            return _json(err.body(), err.status)
        except web.HTTPNotFound:
            return self.error_response(404)
        except web.HTTPMethodNotAllowed as err:
            return _json([{"message": f"HTTP Method '{request.method}' not allowed. Allowed are "
                                      f"{','.join(sorted(err.allowed_methods))}", "errorCode": "METHOD_NOT_ALLOWED"}],
                         405)

    async def _limit_header(self, request: web.Request, response: web.StreamResponse) -> None:
        """Sforce-Limit-Info on every API response (GET /services/data/ itself does not count)."""
        tenant = request.app[TENANT_KEY]
        if request.path.startswith(API_PREFIX) and tenant in self.api_usage:
            response.headers["Sforce-Limit-Info"] = f"api-usage={self.api_usage[tenant]}/{self.daily_api_limit}"

    def _caller(self, request: web.Request) -> tuple[str, Org, dict[str, Any]]:
        """The tenant, its org and the Salesforce user behind the bearer token (403 without one)."""
        tenant = request.app[TENANT_KEY]
        info = self.authenticate(request, tenant)
        version = request.match_info.get("version")
        if version is not None and version not in VERSIONS:
            raise not_found()
        org = self.orgs[tenant]
        person = self.user(tenant, info.subject) or {}
        user = org.user_for(person.get("salesforce_user_id"))
        if user is None:
            raise ApiError(403, "INSUFFICIENT_ACCESS", f"{info.subject} has no active Salesforce user in this "
                                                       "organization")
        return tenant, org, user

    def _sobject(self, request: web.Request) -> str:
        name = request.match_info["sobject"]
        found = next((n for n in OBJECTS if n.lower() == name.lower()), None)
        if found is None:
            raise not_found()
        return found

    @staticmethod
    def _url(version: str, sobject: str, record_id: str) -> str:
        return f"/services/data/v{version}/sobjects/{sobject}/{record_id}"

    def _record_body(self, version: str, sobject: str, record: dict[str, Any],
                     fields: list[str] | None = None) -> dict[str, Any]:
        names = fields if fields is not None else list(OBJECTS[sobject].fields)
        return {"attributes": {"type": sobject, "url": self._url(version, sobject, record["Id"])},
                **{name: record.get(name) for name in names}}

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            raise ApiError(400, "JSON_PARSER_ERROR", "Unexpected character: was expecting a JSON value") from None
        if not isinstance(body, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of the sObject from a non-object")
        return body

    # --- handlers -----------------------------------------------------------------------------------------------
    async def _versions(self, request: web.Request) -> web.Response:
        return _json([{"label": label, "url": f"/services/data/v{v}", "version": v} for v, label in VERSIONS.items()])

    async def _userinfo(self, request: web.Request) -> web.Response:
        tenant, org, user = self._caller(request)
        instance_url = self.base_urls.get(tenant, "")
        return _json({"sub": f"{instance_url}/id/{org.org_id}/{user['Id']}", "user_id": user["Id"],
                      "organization_id": org.org_id, "preferred_username": user["Username"],
                      "nickname": user["FirstName"], "name": user["Name"], "email": user["Email"],
                      "email_verified": True, "given_name": user["FirstName"], "family_name": user["LastName"],
                      "zoneinfo": "America/Los_Angeles", "active": True, "user_type": "STANDARD",
                      "language": "en_US", "locale": "en_US", "utcOffset": -28800000,
                      "updated_at": user["LastModifiedDate"]})

    async def _query(self, request: web.Request) -> web.Response:
        tenant, org, user = self._caller(request)
        version = request.match_info["version"]
        text = request.query.get("q", "")
        if not text.strip():
            raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
        parsed, rows = org.query(user, text)
        shaped = [soql.shape(parsed, r, org.find, lambda kind, rid: self._url(version, kind, rid)) for r in rows]
        options = request.headers.get("Sforce-Query-Options", "")
        match = re.search(r"batchSize\s*=\s*(\d+)", options)
        batch = min(max(int(match.group(1)), BATCH_MIN), BATCH_MAX) if match else BATCH_DEFAULT
        cursor = _Cursor(tenant, user["Id"], shaped, batch, time.monotonic() + CURSOR_TTL_S)
        return self._page(version, cursor, 0)

    async def _query_more(self, request: web.Request) -> web.Response:
        tenant, _, user = self._caller(request)
        locator, _, start = request.match_info["locator"].rpartition("-")
        cursor = self.cursors.get(locator)
        if (cursor is None or cursor.tenant != tenant or cursor.user_id != user["Id"] or not start.isdigit()
                or cursor.expires_at < time.monotonic()):
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(request.match_info["version"], cursor, int(start), locator)

    def _page(self, version: str, cursor: _Cursor, start: int, locator: str | None = None) -> web.Response:
        end = start + cursor.batch
        body: dict[str, Any] = {"totalSize": len(cursor.rows), "done": end >= len(cursor.rows)}
        if body["done"]:
            if locator:
                self.cursors.pop(locator, None)
        else:
            if locator is None:
                now = time.monotonic()
                self.cursors = {k: c for k, c in self.cursors.items() if c.expires_at >= now}
                locator = "01g" + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(15))
                self.cursors[locator] = cursor
            body["nextRecordsUrl"] = f"/services/data/v{version}/query/{locator}-{end}"
        body["records"] = cursor.rows[start:end]
        return _json(body)

    async def _get_record(self, request: web.Request) -> web.Response:
        _, org, user = self._caller(request)
        sobject = self._sobject(request)
        record = org.get(user, sobject, request.match_info["record_id"])
        fields = None
        if "fields" in request.query:
            fields = []
            for name in (n.strip() for n in request.query["fields"].split(",") if n.strip()):
                canonical = OBJECTS[sobject].field_named(name)
                if canonical is None:
                    raise ApiError(400, "INVALID_FIELD", f"No such column '{name}' on entity '{sobject}'. If you "
                                   "are attempting to use a custom field, be sure to append the '__c' after the "
                                   "custom field name. Please reference your WSDL or the describe call for the "
                                   "appropriate names.")
                fields.append(canonical)
        return _json(self._record_body(request.match_info["version"], sobject, record, fields))

    async def _get_by_external_id(self, request: web.Request) -> web.Response:
        _, org, user = self._caller(request)
        sobject = self._sobject(request)
        version = request.match_info["version"]
        found = org.by_external_id(sobject, request.match_info["field"], request.match_info["value"])
        if len(found) > 1:
            return _json([self._url(version, sobject, r["Id"]) for r in found], 300)
        if not found or not org.can_access(user, sobject, found[0]):
            raise not_found()
        return _json(self._record_body(version, sobject, found[0]))

    def _writable(self, request: web.Request) -> str:
        sobject = self._sobject(request)
        if sobject not in WRITABLE:
            raise ApiError(403, "INSUFFICIENT_ACCESS", "insufficient access rights on object id")
        return sobject

    async def _create(self, request: web.Request) -> web.Response:
        tenant, org, user = self._caller(request)
        sobject = self._writable(request)
        record = org.create(user, sobject, await self._json_body(request))
        self.count_created(tenant, sobject)
        return _json({"id": record["Id"], "success": True, "errors": []}, 201)

    async def _update(self, request: web.Request) -> web.Response:
        _, org, user = self._caller(request)
        sobject = self._writable(request)
        org.update(user, sobject, request.match_info["record_id"], await self._json_body(request))
        return web.Response(status=204)

    async def _upsert(self, request: web.Request) -> web.Response:
        """Upsert by external ID: 201 created, 200 updated (created false), 300 when the value is not unique."""
        tenant, org, user = self._caller(request)
        sobject = self._writable(request)
        version = request.match_info["version"]
        field, value = request.match_info["field"], request.match_info["value"]
        found = org.by_external_id(sobject, field, value)
        body = await self._json_body(request)
        if body.get(field, value) != value:
            raise ApiError(400, "INVALID_FIELD", f"{field}: the value in the request body does not match the "
                                                 "external ID in the URL", (field,))
        body[field] = value
        if len(found) > 1:
            return _json([self._url(version, sobject, r["Id"]) for r in found], 300)
        if found:
            record = org.update(user, sobject, found[0]["Id"], body)
            return _json({"id": record["Id"], "success": True, "errors": [], "created": False})
        if request.query.get("updateOnly", "").lower() == "true":
            raise not_found()
        record = org.create(user, sobject, body)
        self.count_created(tenant, sobject)
        return _json({"id": record["Id"], "success": True, "errors": [], "created": True}, 201)


def _limit_exceeded(message: str) -> web.Response:
    return _json([{"message": message, "errorCode": "REQUEST_LIMIT_EXCEEDED"}], 403)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)
