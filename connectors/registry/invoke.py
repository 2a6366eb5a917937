"""One tool call as the requester, from validation to the connector call, with exactly one audit row per call."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import asyncpg

from connectors.registry import authorization
from connectors.registry.audit import TOOL_CALL, AuditLog, AuditRow
from connectors.registry.catalog import CatalogEntry, Tool
from connectors.registry.credentials import CallCredential, Credentials
from connectors.registry.directory import find, get_person
from connectors.registry.idempotency import Idempotency, call_fingerprint, key_violations
from connectors.registry.registrations import Registration, get_registration
from connectors.registry.tenants import Tenant, get_tenant
from mesh.db import tenant_tx
from mesh.errors import MeshError, Reason, invalid_argument

log = logging.getLogger("agentmesh.registry")
DOMAIN = "agentmesh.registry"
TOOL_NAME = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Caller:
    """Who the call is for, from the verified principal only. `operator` is set for dead-letter replays."""

    tenant: str
    user: str
    groups: tuple[str, ...]
    request_id: str
    run_id: str
    token: str = field(repr=False)
    operator: str = ""
    trace_id: str = ""


@dataclass(frozen=True)
class ConnectorCall:
    """What the registry sends to a connector for one action."""

    registration: Registration
    action: str
    arguments: Mapping[str, Any]
    idempotency_key: str
    credential: CallCredential
    principal_token: str = field(repr=False)
    timeout_s: float


@dataclass(frozen=True)
class ConnectorAnswer:
    result: dict[str, Any]
    summary: str
    replayed: bool = False


class ConnectorCaller(Protocol):
    """Calls a connector's Invoke; failures arrive as MeshError with the connector's reason."""

    async def invoke(self, call: ConnectorCall) -> ConnectorAnswer: ...


@dataclass(frozen=True)
class Outcome:
    """What Invoke answers."""

    result: dict[str, Any]
    summary: str
    replayed: bool
    arguments: dict[str, Any]
    confirm_before: bool


LinkUrl = Callable[[Tenant, Registration, str], Awaitable[str]]


@dataclass
class _Trace:
    """What the audit row records, filled in as the call proceeds."""

    tool: str
    effect: str = ""
    arguments: Mapping[str, Any] = field(default_factory=dict)
    rule: str = ""
    acting_identity: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


class Invoker:
    """Runs Invoke. Domain logic only: the connector call and the link URL are injected."""

    def __init__(self, pool: asyncpg.Pool, credentials: Credentials, idempotency: Idempotency, audit: AuditLog,
                 caller: ConnectorCaller, link_url: LinkUrl, catalog: list[CatalogEntry],
                 reserve_s: float = 0.05) -> None:
        self.pool = pool
        self.credentials = credentials
        self.idempotency = idempotency
        self.audit = audit
        self.caller = caller
        self.link_url = link_url
        self.catalog = {entry.name: entry for entry in catalog}
        self.reserve_s = reserve_s

    async def invoke(self, who: Caller, tool_name: str, arguments: Mapping[str, Any], key: str,
                     remaining: Callable[[], float]) -> Outcome:
        started = time.perf_counter()
        trace = _Trace(tool=tool_name, arguments=dict(arguments))
        if who.operator:
            trace.detail["operator"] = who.operator
            trace.acting_identity = who.operator
        outcome: Outcome | None = None
        error: BaseException | None = None
        try:
            outcome = await self._invoke(who, tool_name, arguments, key, remaining, trace)
            return outcome
        except BaseException as err:
            error = err
            raise
        finally:
            # Exactly one row per Invoke, even when the deadline or the client cancels the call midway.
            row = _audit_row(who, trace, key, outcome, error, (time.perf_counter() - started) * 1000,
                             remaining() <= 0.01)
            await asyncio.shield(asyncio.ensure_future(self._append(row)))

    async def refuse(self, who: Caller, tool_name: str, arguments: Mapping[str, Any], key: str,
                     error: MeshError) -> NoReturn:
        """Audits a call refused before it could start (an operator without a replay to act for), then raises."""
        trace = _Trace(tool=tool_name, arguments=dict(arguments), rule=error.metadata.get("rule", ""),
                       acting_identity=who.operator, detail={"operator": who.operator} if who.operator else {})
        await self._append(_audit_row(who, trace, key, None, error, 0.0, False))
        raise error

    async def _append(self, row: AuditRow) -> None:
        try:
            await self.audit.append(row)
        except Exception:
            log.exception("audit append failed", extra={"fields": {"tenant": row.tenant_id, "tool": row.tool,
                                                                   "request_id": row.request_id}})
            raise

    async def _invoke(self, who: Caller, tool_name: str, arguments: Mapping[str, Any], key: str,
                      remaining: Callable[[], float], trace: _Trace) -> Outcome:
        if not TOOL_NAME.match(tool_name):
            raise invalid_argument([("tool", "must be <connector>.<action>, e.g. servicenow.create_incident")],
                                   domain=DOMAIN)
        connector = tool_name.split(".", 1)[0]
        async with tenant_tx(self.pool, who.tenant) as conn:
            tenant = await get_tenant(conn, who.tenant)
            if tenant is None:
                raise MeshError(Reason.NOT_FOUND, f"tenant {who.tenant!r} is not registered", domain=DOMAIN)
            groups = await self._groups(conn, who)
            registration = await get_registration(conn, who.tenant, connector)
            policy = tenant.policy
            tool = registration.tool(tool_name) if registration is not None else None
            if tool is None and tool_name not in self.catalog:
                served = ", ".join(t.name for t in registration.tools) if registration else ""
                hint = f"; {connector} serves {served}" if served else ""
                raise invalid_argument([("tool", f"unknown tool {tool_name!r}{hint}")], domain=DOMAIN)
            trace.effect = tool.effect if tool is not None else self.catalog[tool_name].effect
            early = authorization.precheck(policy, groups, tool_name, who.user)
            if early is not None:
                trace.rule = early.rule or authorization.NO_RULE
                raise authorization.denied(tool_name, early)
            if registration is None:
                raise MeshError(Reason.UPSTREAM_UNAVAILABLE,
                                f"the {connector} connector is not registered for this tenant", domain=DOMAIN,
                                metadata={"connector": connector})
            if tool is None:
                raise MeshError(Reason.UPSTREAM_UNAVAILABLE,
                                f"the registered {connector} connector (version {registration.manifest_version}) "
                                f"does not serve {tool_name}", domain=DOMAIN, metadata={"connector": connector})
            filled = tool.with_defaults(arguments)
            trace.arguments = filled
            violations = tool.violations(filled)
            if tool.effect == "WRITE":
                violations += key_violations(key)
            if violations:
                raise invalid_argument(violations, domain=DOMAIN)
            resolved = dict(filled)
            for name in tool.person_arguments:
                value = resolved.get(name)
                if isinstance(value, str):
                    resolved[name] = (await find(conn, who.tenant, value, who.user, argument=name)).email
            trace.arguments = resolved
        decided = authorization.authorize(policy, groups, tool, resolved, who.user)
        trace.rule = decided.rule
        if not decided.decision.allowed:
            raise authorization.denied(tool_name, decided.decision)
        confirm = policy.needs_confirmation(tool_name)
        claimed = False
        if tool.effect == "WRITE":
            fingerprint = call_fingerprint(who.user, tool_name, resolved)
            replay = await self.idempotency.begin(who.tenant, key, fingerprint, tool_name, max(remaining(), 1.0))
            if replay is not None:
                trace.detail["replayed"] = True
                return Outcome(replay.result, replay.summary, True, replay.arguments, confirm)
            claimed = True
        try:
            answer = await self._call(who, tenant, registration, tool, resolved, key, decided, remaining, trace)
        except BaseException:
            if claimed:
                await asyncio.shield(asyncio.ensure_future(self.idempotency.release(who.tenant, key)))
            raise
        if claimed:
            await self.idempotency.complete(who.tenant, key, answer.result, answer.summary, resolved)
        if answer.replayed:
            trace.detail["connector_replayed"] = True
        return Outcome(answer.result, answer.summary, answer.replayed, resolved, confirm)

    async def _groups(self, conn: asyncpg.Connection, who: Caller) -> tuple[str, ...]:
        """A user's groups come from their principal; a replaying operator acts with the directory's groups."""
        if not who.operator:
            return who.groups
        person = await get_person(conn, who.tenant, who.user)
        if person is None:
            raise MeshError(Reason.UNKNOWN_PERSON, f"{who.user} is not in the {who.tenant} directory", domain=DOMAIN)
        return person.groups

    async def _call(self, who: Caller, tenant: Tenant, registration: Registration, tool: Tool,
                    arguments: Mapping[str, Any], key: str, decided: authorization.Authorization,
                    remaining: Callable[[], float], trace: _Trace) -> ConnectorAnswer:
        connector = registration.connector
        if decided.service_credential:
            credential = await self.credentials.service(who.tenant, connector)
            if credential is None:
                raise MeshError(Reason.ACCOUNT_NOT_LINKED,
                                f"the tenant has no {connector} service credential for {tool.name}", domain=DOMAIN,
                                metadata={"connector": connector, "link_url": ""})
            trace.acting_identity = credential.service_identity
            trace.detail["service_identity"] = credential.service_identity
        else:
            found = await self.credentials.for_user(who.tenant, connector, who.user, registration.oauth)
            if found is None:
                url = await self.link_url(tenant, registration, who.user)
                how = f"; link it at {url}" if url else "; the tenant has not set up account linking for it"
                raise MeshError(Reason.ACCOUNT_NOT_LINKED, f"{who.user} has not linked their {connector} account{how}",
                                domain=DOMAIN, metadata={"connector": connector, "link_url": url})
            credential = found
        trace.detail["acting_as"] = credential.kind
        call = ConnectorCall(registration, tool.action, arguments, key if tool.effect == "WRITE" else "",
                             credential, who.token, max(remaining() - self.reserve_s, 0.001))
        try:
            return await self.caller.invoke(call)
        except MeshError as err:
            if err.reason != Reason.VENDOR_UNAUTHENTICATED or credential.kind != "user":
                raise
            fresh = await self.credentials.refresh_after_rejection(who.tenant, connector, who.user,
                                                                   registration.oauth, credential)
            if fresh is None:
                raise
            trace.detail["retried_after_401"] = True
            retry = ConnectorCall(registration, tool.action, arguments, call.idempotency_key, fresh, who.token,
                                  max(remaining() - self.reserve_s, 0.001))
            return await self.caller.invoke(retry)


def _audit_row(who: Caller, trace: _Trace, key: str, outcome: Outcome | None, error: BaseException | None,
               latency_ms: float, deadline_passed: bool) -> AuditRow:
    if outcome is not None:
        result, code, reason = "ok", "OK", ""
    elif isinstance(error, MeshError):
        code, reason = error.code.name, error.reason.value
        result = "denied" if code == "PERMISSION_DENIED" else "failed"
    elif isinstance(error, TimeoutError) or (isinstance(error, asyncio.CancelledError) and deadline_passed):
        result, code, reason = "failed", "DEADLINE_EXCEEDED", Reason.DEADLINE.value
    elif isinstance(error, asyncio.CancelledError):
        result, code, reason = "failed", "CANCELLED", Reason.CANCELLED.value
    else:
        result, code, reason = "failed", "INTERNAL", Reason.INTERNAL.value
    return AuditRow(tenant_id=who.tenant, user=who.user, kind=TOOL_CALL, acting_identity=trace.acting_identity,
                    tool=trace.tool, effect=trace.effect, arguments=trace.arguments, outcome=result, code=code,
                    reason=reason, rule=trace.rule, latency_ms=latency_ms, idempotency_key=key,
                    trace_id=who.trace_id, request_id=who.request_id, run_id=who.run_id, detail=trace.detail)
