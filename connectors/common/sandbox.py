"""Shared machinery of the vendor sandboxes: per-tenant apps, OAuth, tokens, faults, counters, admin API."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import secrets
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

ADMIN_PREFIX = "/__sandbox"
# The tenant an app serves ("" for an app that routes tenants itself, like Jira's).
TENANT_KEY: web.AppKey[str] = web.AppKey("agentmesh_tenant")
# The OAuth client every sandbox accepts; the local stack registers it for account linking.
SANDBOX_CLIENT_ID = "agentmesh"
SANDBOX_CLIENT_SECRET = "agentmesh-sandbox-secret"  # noqa: S105 - a sandbox-only fixture secret
ACCESS_TOKEN_TTL_S = 3600


def fixtures_dir() -> Path:
    """The shared fixtures folder (`AGENTMESH_FIXTURES`, default `../shared/fixtures` beside the repo)."""
    env = os.environ.get("AGENTMESH_FIXTURES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"


def load_fixtures(names: tuple[str, ...] = ("acme", "globex")) -> dict[str, dict[str, Any]]:
    """Loads the demo tenants' fixture files, keyed by tenant id."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        data = json.loads((fixtures_dir() / f"{name}.json").read_text())
        out[data["tenant"]["id"]] = data
    return out


@dataclass
class TokenInfo:
    """What a sandbox knows about one issued token."""

    tenant: str
    subject: str  # the user's email, or the service identity for service tokens
    kind: str  # "user" or "service"
    scopes: tuple[str, ...]
    expires_at: float
    refresh_token: str | None = None


class TokenStore:
    """Opaque bearer tokens issued by a sandbox; refresh tokens rotate on use."""

    def __init__(self) -> None:
        self._access: dict[str, TokenInfo] = {}
        self._refresh: dict[str, TokenInfo] = {}
        self._codes: dict[str, tuple[TokenInfo, str]] = {}

    def issue(self, tenant: str, subject: str, *, kind: str = "user", scopes: tuple[str, ...] = (),
              ttl_s: float = ACCESS_TOKEN_TTL_S) -> tuple[str, TokenInfo]:
        token = secrets.token_urlsafe(24)
        info = TokenInfo(tenant, subject, kind, scopes, time.time() + ttl_s)
        if kind == "user":
            info.refresh_token = secrets.token_urlsafe(24)
            self._refresh[info.refresh_token] = info
        self._access[token] = info
        return token, info

    def lookup(self, token: str) -> TokenInfo | None:
        info = self._access.get(token)
        if info is None or info.expires_at < time.time():
            return None
        return info

    def refresh(self, refresh_token: str) -> tuple[str, TokenInfo] | None:
        old = self._refresh.pop(refresh_token, None)
        if old is None:
            return None
        for tok, info in list(self._access.items()):
            if info is old:
                del self._access[tok]
        return self.issue(old.tenant, old.subject, kind=old.kind, scopes=old.scopes)

    def revoke(self, token: str) -> None:
        info = self._access.pop(token, None) or self._refresh.pop(token, None)
        if info is not None:
            self._access = {k: v for k, v in self._access.items() if v is not info}
            if info.refresh_token:
                self._refresh.pop(info.refresh_token, None)

    def new_code(self, tenant: str, subject: str, scopes: tuple[str, ...], redirect_uri: str) -> str:
        code = secrets.token_urlsafe(16)
        self._codes[code] = (TokenInfo(tenant, subject, "user", scopes, time.time() + 300), redirect_uri)
        return code

    def redeem_code(self, code: str, redirect_uri: str) -> TokenInfo | None:
        entry = self._codes.pop(code, None)
        if entry is None or entry[0].expires_at < time.time() or entry[1] != redirect_uri:
            return None
        return entry[0]


@dataclass
class Faults:
    """Injected faults for one sandbox (optionally limited to one tenant).

    latency: {"median_ms": float, "p99_ms": float} drawn log-normally, or {"fixed_ms": float};
    errors: {"503": 0.2, "500": 0.05, ...} probability per status; rate_limit: probability of a 429 answered
    with the vendor's own rate-limit signal; reset_after_commit: probability that a write is committed and then the
    connection is dropped before the response.
    """

    latency: dict[str, float] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    rate_limit: float = 0.0
    retry_after_s: int = 1
    reset_after_commit: float = 0.0
    tenant: str | None = None
    seed: int | None = None

    def delay_s(self, rng: random.Random) -> float:
        if "fixed_ms" in self.latency:
            return self.latency["fixed_ms"] / 1000
        median = self.latency.get("median_ms")
        if not median:
            return 0.0
        p99 = self.latency.get("p99_ms", median)
        sigma = math.log(max(p99, median) / median) / 2.326
        return rng.lognormvariate(math.log(median), sigma) / 1000


class Counters:
    """Calls per (tenant, method, path) and records created per (tenant, kind), for tests and benchmarks."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.created: Counter[str] = Counter()

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {"calls": dict(self.calls), "created": dict(self.created)}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class VendorSandbox(ABC):
    """One vendor's sandbox: vendors implement the routes, state and error shapes; the kit does the rest.

    Origin-per-tenant vendors (ServiceNow, Okta, Salesforce) return one app per tenant from `build_apps`;
    Jira returns a single app keyed "*" that routes by cloud id.
    """

    vendor: str = ""

    def __init__(self, fixtures: dict[str, dict[str, Any]] | None = None) -> None:
        self.fixtures = fixtures if fixtures is not None else load_fixtures()
        self.tokens = TokenStore()
        self.faults = Faults()
        self.counters = Counters()
        self.rng = random.Random()
        self.base_urls: dict[str, str] = {}
        self.reset()

    # --- what a vendor implements -------------------------------------------------------------
    @abstractmethod
    def reset(self) -> None:
        """Rebuilds every tenant's state from the fixtures (tokens survive)."""

    @abstractmethod
    def add_routes(self, app: web.Application, tenant: str | None) -> None:
        """Adds the vendor's API routes (tenant None: one app serving all tenants)."""

    @abstractmethod
    def error_response(self, status: int, message: str = "") -> web.Response:
        """The vendor's own error body and headers for a status."""

    @abstractmethod
    def rate_limited_response(self, retry_after_s: int) -> web.Response:
        """The vendor's own rate-limit answer (status, body and headers)."""

    def base_url_for(self, tenant: str, origin: str) -> str:
        """The tenant's base URL given the origin its app listens on."""
        return origin

    def token_extras(self, info: TokenInfo, tenant: str) -> dict[str, Any]:
        """Vendor-specific fields of a token response (Salesforce's instance_url, say)."""
        return {}

    oauth_authorize_path = "/oauth/authorize"
    oauth_token_path = "/oauth/token"  # noqa: S105 - a URL path, not a secret

    def tenant_ids(self) -> list[str]:
        return list(self.fixtures)

    def tenant_of(self, request: web.Request) -> str:
        """The tenant a vendor API request is addressed to, for counters and tenant-scoped faults (Jira maps its
        cloud id here)."""
        tenant: str = request.app[TENANT_KEY] or request.match_info.get("tenant", "")
        return tenant

    # --- helpers for vendors ------------------------------------------------------------------
    def authenticate(self, request: web.Request, tenant: str, schemes: tuple[str, ...] = ("Bearer",)) -> TokenInfo:
        """The token's info, or raises the vendor's 401 (a token of another tenant is a 401 too)."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        info = self.tokens.lookup(token.strip()) if scheme in schemes else None
        if info is None or info.tenant != tenant:
            raise _Abort(self.error_response(401))
        return info

    def user(self, tenant: str, email: str) -> dict[str, Any] | None:
        for person in self.fixtures[tenant]["users"]:
            if person["email"].lower() == email.lower():
                return person
        return None

    def count_created(self, tenant: str, kind: str) -> None:
        self.counters.created[f"{tenant}:{kind}"] += 1

    # --- the kit --------------------------------------------------------------------------------
    def build_apps(self) -> dict[str, web.Application]:
        tenants: list[str | None] = [None] if self.single_app else list(self.tenant_ids())
        apps: dict[str, web.Application] = {}
        for tenant in tenants:
            app = web.Application(middlewares=[self._middleware])
            app[TENANT_KEY] = tenant or ""
            self._add_admin_routes(app)
            self.add_routes(app, tenant)
            apps[tenant or "*"] = app
        return apps

    single_app = False

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        try:
            if path.startswith(ADMIN_PREFIX):
                return await handler(request)
            tenant = self.tenant_of(request)
            self.counters.calls[f"{tenant}:{request.method} {self._route_of(request)}"] += 1
            faults = self.faults
            applies = faults.tenant in (None, tenant)
            if applies:
                delay = faults.delay_s(self.rng)
                if delay:
                    await asyncio.sleep(delay)
                if faults.rate_limit and self.rng.random() < faults.rate_limit:
                    return self.rate_limited_response(faults.retry_after_s)
                for status, rate in faults.errors.items():
                    if self.rng.random() < rate:
                        return self.error_response(int(status))
            response = await handler(request)
            if (applies and request.method != "GET" and faults.reset_after_commit
                    and self.rng.random() < faults.reset_after_commit and request.transport is not None):
                request.transport.close()
            return response
        except _Abort as abort:
            return abort.response

    @staticmethod
    def _route_of(request: web.Request) -> str:
        resource = request.match_info.route.resource
        return resource.canonical if resource is not None else request.path

    def _add_admin_routes(self, app: web.Application) -> None:
        app.router.add_post(f"{ADMIN_PREFIX}/reset", self._admin_reset)
        app.router.add_put(f"{ADMIN_PREFIX}/faults", self._admin_set_faults)
        app.router.add_delete(f"{ADMIN_PREFIX}/faults", self._admin_clear_faults)
        app.router.add_get(f"{ADMIN_PREFIX}/counters", self._admin_counters)
        app.router.add_post(f"{ADMIN_PREFIX}/tokens", self._admin_token)
        app.router.add_get(self.oauth_authorize_path, self._oauth_authorize)
        app.router.add_post(self.oauth_token_path, self._oauth_token)
        app.router.add_post(f"{ADMIN_PREFIX}/revoke", self._oauth_revoke)

    async def _admin_reset(self, request: web.Request) -> web.Response:
        self.reset()
        self.faults = Faults()
        self.counters = Counters()
        return web.json_response({"reset": True})

    async def _admin_set_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.faults = Faults(**body)
        if self.faults.seed is not None:
            self.rng.seed(self.faults.seed)
        return web.json_response(body)

    async def _admin_clear_faults(self, request: web.Request) -> web.Response:
        self.faults = Faults()
        return web.json_response({})

    async def _admin_counters(self, request: web.Request) -> web.Response:
        return web.json_response(self.counters.snapshot())

    async def _admin_token(self, request: web.Request) -> web.Response:
        """Issues a token directly: {"tenant", "user"} for a user, {"tenant", "service": true} for a service token."""
        body = await request.json()
        tenant = body.get("tenant") or request.app[TENANT_KEY]
        if tenant not in self.fixtures:
            return web.json_response({"error": f"unknown tenant {tenant!r}"}, status=404)
        if body.get("service"):
            token, info = self.tokens.issue(tenant, f"agentmesh-service@{tenant}", kind="service",
                                            ttl_s=float(body.get("ttl_s", 365 * 86400)))
        else:
            if self.user(tenant, body.get("user", "")) is None:
                return web.json_response({"error": f"unknown user {body.get('user')!r}"}, status=404)
            token, info = self.tokens.issue(tenant, body["user"].lower(), scopes=tuple(body.get("scopes", ())),
                                            ttl_s=float(body.get("ttl_s", ACCESS_TOKEN_TTL_S)))
        return web.json_response(self._token_body(token, info, tenant))

    def _token_body(self, token: str, info: TokenInfo, tenant: str) -> dict[str, Any]:
        body: dict[str, Any] = {"access_token": token, "token_type": "Bearer",
                                "expires_in": int(info.expires_at - time.time()), "scope": " ".join(info.scopes)}
        if info.refresh_token:
            body["refresh_token"] = info.refresh_token
        body.update(self.token_extras(info, tenant))
        return body

    def _tenant_of(self, request: web.Request, given: str | None) -> str | None:
        tenant = request.app[TENANT_KEY] or given
        return tenant if tenant in self.fixtures else None

    async def _oauth_authorize(self, request: web.Request) -> web.Response:
        """Authorization endpoint: the sandbox's "login" is the `login_hint` (the user's email)."""
        q = request.query
        tenant = self._tenant_of(request, q.get("tenant"))
        if q.get("response_type") != "code" or q.get("client_id") != SANDBOX_CLIENT_ID or not q.get("redirect_uri"):
            return web.json_response({"error": "invalid_request"}, status=400)
        if tenant is None or self.user(tenant, q.get("login_hint", "")) is None:
            return web.json_response({"error": "access_denied", "error_description": "unknown user"}, status=400)
        code = self.tokens.new_code(tenant, q["login_hint"].lower(), tuple(q.get("scope", "").split()),
                                    q["redirect_uri"])
        params = {"code": code}
        if "state" in q:
            params["state"] = q["state"]
        sep = "&" if "?" in q["redirect_uri"] else "?"
        raise web.HTTPFound(q["redirect_uri"] + sep + urlencode(params))

    async def _oauth_token(self, request: web.Request) -> web.Response:
        form = dict(await request.post()) if request.content_type != "application/json" else await request.json()
        if form.get("client_id") != SANDBOX_CLIENT_ID or form.get("client_secret") != SANDBOX_CLIENT_SECRET:
            return web.json_response({"error": "invalid_client"}, status=401)
        grant = form.get("grant_type")
        if grant == "authorization_code":
            info = self.tokens.redeem_code(str(form.get("code", "")), str(form.get("redirect_uri", "")))
            if info is None:
                return web.json_response({"error": "invalid_grant"}, status=400)
            token, info = self.tokens.issue(info.tenant, info.subject, scopes=info.scopes)
        elif grant == "refresh_token":
            issued = self.tokens.refresh(str(form.get("refresh_token", "")))
            if issued is None:
                return web.json_response({"error": "invalid_grant"}, status=400)
            token, info = issued
        else:
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        return web.json_response(self._token_body(token, info, info.tenant))

    async def _oauth_revoke(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.tokens.revoke(str(form.get("token", "")))
        return web.Response(status=200)


class _Abort(Exception):
    """Carries a finished vendor error response out of a handler (see VendorSandbox.abort)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def sandbox_classes() -> dict[str, type[VendorSandbox]]:
    """The VendorSandbox subclass of each vendor package present (connectors/<vendor>/sandbox.py)."""
    import importlib
    import inspect

    found: dict[str, type[VendorSandbox]] = {}
    for vendor in ("servicenow", "jira", "salesforce", "okta"):
        try:
            module = importlib.import_module(f"connectors.{vendor}.sandbox")
        except ModuleNotFoundError as err:
            if err.name == f"connectors.{vendor}.sandbox":
                continue
            raise
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, VendorSandbox) and cls is not VendorSandbox and cls.vendor == vendor:
                found[vendor] = cls
    return found


def abort(response: web.Response) -> _Abort:
    """`raise abort(resp)` ends a sandbox handler with a vendor-shaped error response."""
    return _Abort(response)


@dataclass
class RunningSandboxes:
    """Sandboxes listening on loopback; `base_urls[vendor][tenant]` is each tenant's base URL."""

    sandboxes: dict[str, VendorSandbox]
    runners: list[web.AppRunner]
    base_urls: dict[str, dict[str, str]]
    admin_urls: dict[str, str]

    async def close(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


async def start_sandboxes(sandboxes: list[VendorSandbox], host: str = "127.0.0.1",
                          ports: dict[str, int] | None = None) -> RunningSandboxes:
    """Starts every sandbox app on its own port (`ports["<vendor>:<tenant or *>"]`, else a free one) and records
    the tenants' base URLs."""
    runners: list[web.AppRunner] = []
    base_urls: dict[str, dict[str, str]] = {}
    admin_urls: dict[str, str] = {}
    for sb in sandboxes:
        base_urls[sb.vendor] = {}
        for key, app in sb.build_apps().items():
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, host, (ports or {}).get(f"{sb.vendor}:{key}", 0))
            await site.start()
            runners.append(runner)
            port = runner.addresses[0][1]
            origin = f"http://{host}:{port}"
            admin_urls.setdefault(sb.vendor, origin)
            tenants = sb.tenant_ids() if key == "*" else [key]
            for tenant in tenants:
                base_urls[sb.vendor][tenant] = sb.base_url_for(tenant, origin)
        sb.base_urls = base_urls[sb.vendor]
    return RunningSandboxes({sb.vendor: sb for sb in sandboxes}, runners, base_urls, admin_urls)
