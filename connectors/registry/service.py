"""RegistryService: protos in and out of the registry's domain modules; tenant and user from the principal only."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2
from opentelemetry import trace

from agentmesh.common.v1 import common_pb2
from agentmesh.connector.v1 import connector_pb2
from agentmesh.registry.v1 import registry_pb2, registry_service_pb2, registry_service_pb2_grpc
from connectors.common import vendorwait
from connectors.registry import catalog as catalog_mod
from connectors.registry import directory, registrations, tenants
from connectors.registry.audit import TOOL_CALL, AuditLog, AuditRow, decode_page_token
from connectors.registry.catalog import CatalogEntry, Tool
from connectors.registry.credentials import Credentials, LinkInfo
from connectors.registry.invoke import Caller, Invoker
from connectors.registry.linking import Actor, Linker
from connectors.registry.oauth import TokenSet
from connectors.registry.secretstore import SERVICE_SUBJECT
from connectors.registry.upstream import Upstream
from mesh import principal as principal_mod
from mesh.db import tenant_tx
from mesh.errors import MeshError, Reason, invalid_argument
from mesh.server import ANY_KIND, OPERATOR_ONLY, USER_ONLY, ServiceSpec
from mesh.structs import whole_numbers

SERVICE_NAME = "agentmesh.registry.v1.RegistryService"
DOMAIN = "agentmesh.registry"
ENDPOINT = re.compile(r"^[A-Za-z0-9._-]+:\d{1,5}$|^(unix|dns|ipv4|ipv6):.+$")
URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")
_EFFECTS = {"READ": common_pb2.EFFECT_READ, "WRITE": common_pb2.EFFECT_WRITE}


@dataclass
class RegistryParts:
    """The domain objects one registry process wires together (server.py builds them)."""

    pool: Any
    credentials: Credentials
    audit: AuditLog
    invoker: Invoker
    linker: Linker
    upstream: Upstream
    catalog: list[CatalogEntry]
    describe_timeout_s: float


def _trace_id() -> str:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def _dict(value: struct_pb2.Struct) -> dict[str, Any]:
    converted: dict[str, Any] = whole_numbers(json_format.MessageToDict(value))
    return converted


def _timestamp(when: datetime | None) -> timestamp_pb2.Timestamp | None:
    if when is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(when.astimezone(UTC))
    return out


def _duration(delta: timedelta) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromTimedelta(delta)
    return out


def _operator_scope(tenant_id: str) -> str:
    """An operator principal minted for one tenant administers only that tenant; `*` administers all."""
    p = principal_mod.current()
    if p.tenant not in ("*", tenant_id):
        raise MeshError(Reason.POLICY_DENIED, f"this operator principal administers tenant {p.tenant!r} only",
                        domain=DOMAIN, metadata={"rule": "operator scope"})
    return tenant_id


def _actor() -> Actor:
    p = principal_mod.current()
    return Actor(request_id=p.request_id, operator=p.user if p.kind == principal_mod.OPERATOR else "",
                 trace_id=_trace_id())


# --- proto conversions ----------------------------------------------------------------------------------------------
def tenant_from_proto(t: registry_pb2.Tenant) -> tenants.Tenant:
    return tenants.Tenant(
        tenant_id=t.tenant_id, policy_document=_dict(t.policy), display_name=t.display_name, domain=t.domain,
        request_timeout=t.request_timeout.ToTimedelta() if t.HasField("request_timeout")
        else tenants.DEFAULT_REQUEST_TIMEOUT,
        audit_retention=t.audit_retention.ToTimedelta() if t.HasField("audit_retention")
        else tenants.DEFAULT_AUDIT_RETENTION,
        memory_ttl=t.memory_ttl.ToTimedelta() if t.HasField("memory_ttl") else tenants.DEFAULT_MEMORY_TTL,
        slack_team_id=t.slack_team_id)


def tenant_proto(t: tenants.Tenant) -> registry_pb2.Tenant:
    return registry_pb2.Tenant(tenant_id=t.tenant_id, display_name=t.display_name, domain=t.domain,
                               policy=_struct(t.policy_document), request_timeout=_duration(t.request_timeout),
                               audit_retention=_duration(t.audit_retention), memory_ttl=_duration(t.memory_ttl),
                               slack_team_id=t.slack_team_id, update_time=_timestamp(t.update_time))


def person_from_proto(p: common_pb2.Person) -> directory.Person:
    name = p.name or f"{p.first_name} {p.last_name}".strip()
    return directory.Person(email=p.email.strip().lower(), name=name, first_name=p.first_name,
                            last_name=p.last_name, groups=tuple(p.groups), title=p.title, department=p.department,
                            manager=p.manager.strip().lower(), system_ids=dict(p.system_ids))


def person_proto(p: directory.Person) -> common_pb2.Person:
    return common_pb2.Person(email=p.email, name=p.name, first_name=p.first_name, last_name=p.last_name,
                             groups=list(p.groups), title=p.title, department=p.department, manager=p.manager,
                             system_ids=p.system_ids)


def registration_proto(r: registrations.Registration) -> registry_pb2.ConnectorRegistration:
    return registry_pb2.ConnectorRegistration(
        tenant_id=r.tenant_id, connector=r.connector, endpoint=r.endpoint,
        instance=connector_pb2.InstanceSettings(base_url=r.instance.base_url, cloud_id=r.instance.cloud_id,
                                                instance_url=r.instance.instance_url,
                                                api_version=r.instance.api_version, extra=r.instance.extra),
        oauth=registry_pb2.OAuthClient(authorize_url=r.oauth.authorize_url, token_url=r.oauth.token_url,
                                       client_id=r.oauth.client_id, scopes=list(r.oauth.scopes),
                                       revoke_url=r.oauth.revoke_url),
        manifest_version=r.manifest_version, healthy=r.healthy, update_time=_timestamp(r.update_time),
        service_credential=r.service_credential)


def link_proto(link: LinkInfo) -> registry_pb2.AccountLink:
    return registry_pb2.AccountLink(connector=link.connector, linked=link.linked,
                                    expire_time=_timestamp(link.expire_time), scopes=list(link.scopes))


def audit_proto(row: AuditRow) -> registry_pb2.AuditEvent:
    latency = duration_pb2.Duration()
    latency.FromMicroseconds(int(row.latency_ms * 1000))
    return registry_pb2.AuditEvent(
        id=row.id, tenant_id=row.tenant_id, user=row.user, acting_identity=row.acting_identity, kind=row.kind,
        tool=row.tool, effect=_EFFECTS.get(row.effect, common_pb2.EFFECT_UNSPECIFIED),
        arguments=_struct(dict(row.arguments)), outcome=row.outcome, code=row.code, reason=row.reason,
        rule=row.rule, latency=latency, idempotency_key=row.idempotency_key, trace_id=row.trace_id,
        request_id=row.request_id, run_id=row.run_id, create_time=_timestamp(row.create_time),
        detail=_struct(dict(row.detail)))


_SPECS: dict[tuple[str, str, bool], common_pb2.ToolSpec] = {}


def tool_spec(tool: Tool, confirm: bool) -> common_pb2.ToolSpec:
    """The ToolSpec of a tool (built once per tool version and confirmation flag)."""
    key = (tool.name, catalog_mod.manifest_digest({"a": tool.arguments_schema, "r": tool.result_schema,
                                                   "v": tool.version, "d": tool.description}), confirm)
    spec = _SPECS.get(key)
    if spec is None:
        spec = _SPECS[key] = common_pb2.ToolSpec(
            name=tool.name, description=tool.description, effect=_EFFECTS[tool.effect],
            arguments_schema=_struct(dict(tool.arguments_schema)), result_schema=_struct(dict(tool.result_schema)),
            examples=list(tool.examples), scopes=list(tool.scopes), confirm_before=confirm,
            connector=tool.connector, version=tool.version)
    return spec


# --- request validators (run by the mesh interceptor before the handler) ---------------------------------------------
Violations = list[tuple[str, str]]


MAX_TIMESTAMP_S = 253402300799  # 9999-12-31T23:59:59Z, protobuf's upper bound
MAX_DURATION_S = 10 * 365 * 86400


def _timestamp_field(message: Any, name: str) -> Violations:
    if message.HasField(name):
        value = getattr(message, name)
        if not 0 <= value.seconds <= MAX_TIMESTAMP_S or not 0 <= value.nanos < 1_000_000_000:
            return [(name, "not a valid time")]
    return []


def _duration_field(message: Any, name: str, prefix: str = "") -> Violations:
    if message.HasField(name):
        value = getattr(message, name)
        if not 0 <= value.seconds <= MAX_DURATION_S or not 0 <= value.nanos < 1_000_000_000:
            return [(prefix + name, "must be between 0 and 10 years")]
    return []


def _tenant_field(value: str, name: str = "tenant_id") -> Violations:
    return [] if tenants.TENANT_ID.match(value) else [(name, "a tenant id is required (lower-case letters, digits)")]


def _connector_field(value: str, name: str = "connector") -> Violations:
    return [] if tenants.CONNECTOR_NAME.match(value) else [(name, "a connector name is required, e.g. servicenow")]


def _validate_upsert_tenant(r: registry_service_pb2.UpsertTenantRequest) -> Violations:
    if not r.HasField("tenant"):
        return [("tenant", "the tenant is required")]
    durations = [v for name in ("request_timeout", "audit_retention", "memory_ttl")
                 for v in _duration_field(r.tenant, name, "tenant.")]
    return durations or tenants.tenant_violations(tenant_from_proto(r.tenant))


def _validate_register(r: registry_service_pb2.RegisterConnectorRequest) -> Violations:
    reg = r.registration
    out = _tenant_field(reg.tenant_id, "registration.tenant_id") + _connector_field(reg.connector,
                                                                                   "registration.connector")
    if not ENDPOINT.match(reg.endpoint):
        out.append(("registration.endpoint", "the connector's gRPC address is required, host:port"))
    oauth = reg.oauth
    for name in ("authorize_url", "token_url", "revoke_url"):
        value = getattr(oauth, name)
        if value and not URL.match(value):
            out.append((f"registration.oauth.{name}", "must be an http(s) URL"))
    if (oauth.authorize_url or oauth.token_url or oauth.client_id) and not (
            oauth.authorize_url and oauth.token_url and oauth.client_id):
        out.append(("registration.oauth", "authorize_url, token_url and client_id go together"))
    for name in ("base_url", "instance_url"):
        value = getattr(reg.instance, name)
        if value and not URL.match(value):
            out.append((f"registration.instance.{name}", "must be an http(s) URL"))
    return out


def _validate_tenant_connector(r: Any) -> Violations:
    return _tenant_field(r.tenant_id) + _connector_field(r.connector)


def _validate_import(r: registry_service_pb2.ImportDirectoryRequest) -> Violations:
    return _tenant_field(r.tenant_id) + directory.people_violations([person_from_proto(p) for p in r.people])


def _validate_resolve(r: registry_service_pb2.ResolvePersonRequest) -> Violations:
    if not r.query.strip() or len(r.query) > 254:
        return [("query", "`me`, an email or a name is required (at most 254 characters)")]
    return []


def _validate_connector(r: Any) -> Violations:
    return _connector_field(r.connector)


def _validate_complete(r: registry_service_pb2.CompleteAccountLinkRequest) -> Violations:
    out: Violations = []
    if not r.state:
        out.append(("state", "the state parameter from StartAccountLink is required"))
    if not r.code or len(r.code) > 2048:
        out.append(("code", "the authorization code is required"))
    return out


def _validate_unlink(r: registry_service_pb2.UnlinkAccountRequest) -> Violations:
    out = _connector_field(r.connector)
    if r.user and not directory.EMAIL.match(r.user):
        out.append(("user", "must be the user's email"))
    return out


def _validate_put_credential(r: registry_service_pb2.PutCredentialRequest) -> Violations:
    out = _validate_tenant_connector(r)
    if r.user and not directory.EMAIL.match(r.user):
        out.append(("user", "the user's email, or empty for the tenant's service credential"))
    if not r.credential.token:
        out.append(("credential.token", "the token is required"))
    if len(r.credential.token) > 8192 or len(r.refresh_token) > 8192:
        out.append(("credential.token", "at most 8192 characters"))
    return out + _timestamp_field(r, "expire_time")


def _validate_append(r: registry_service_pb2.AppendAuditEventRequest) -> Violations:
    out: Violations = []
    if not re.match(r"^[a-z][a-z0-9_]{0,39}$", r.event.kind):
        out.append(("event.kind", "a kind is required, e.g. request, rate_limited, forget_user"))
    elif r.event.kind == TOOL_CALL:
        out.append(("event.kind", "tool_call rows are written by Invoke only"))
    if r.event.tenant_id and not tenants.TENANT_ID.match(r.event.tenant_id):
        out.append(("event.tenant_id", "not a tenant id"))
    return out + _duration_field(r.event, "latency", "event.")


def _validate_list_audit(r: registry_service_pb2.ListAuditEventsRequest) -> Violations:
    out = _tenant_field(r.tenant_id)
    if r.page_size < 0 or r.page_size > 1000:
        out.append(("page_size", "between 0 and 1000"))
    out += _timestamp_field(r, "since")
    if r.page_token:
        try:
            decode_page_token(r.page_token)
        except ValueError:
            out.append(("page_token", "not a page token of this listing"))
    return out


KINDS = {
    "UpsertTenant": OPERATOR_ONLY, "GetTenant": ANY_KIND, "ListTenants": OPERATOR_ONLY,
    "RegisterConnector": OPERATOR_ONLY,
    "ListConnectors": OPERATOR_ONLY, "DeleteConnector": OPERATOR_ONLY, "ImportDirectory": OPERATOR_ONLY,
    "ResolvePerson": USER_ONLY, "ListPeople": USER_ONLY, "ListTools": USER_ONLY, "Invoke": ANY_KIND,
    "StartAccountLink": USER_ONLY, "CompleteAccountLink": USER_ONLY, "ListAccountLinks": USER_ONLY,
    "UnlinkAccount": ANY_KIND, "PutCredential": OPERATOR_ONLY, "AppendAuditEvent": ANY_KIND,
    "ListAuditEvents": OPERATOR_ONLY,
}
VALIDATORS: dict[str, Callable[[Any], Violations]] = {
    "UpsertTenant": _validate_upsert_tenant, "RegisterConnector": _validate_register,
    "ListConnectors": lambda r: _tenant_field(r.tenant_id), "DeleteConnector": _validate_tenant_connector,
    "ImportDirectory": _validate_import, "ResolvePerson": _validate_resolve, "StartAccountLink": _validate_connector,
    "CompleteAccountLink": _validate_complete, "UnlinkAccount": _validate_unlink,
    "PutCredential": _validate_put_credential, "AppendAuditEvent": _validate_append,
    "ListAuditEvents": _validate_list_audit,
}


class RegistryServicer(registry_service_pb2_grpc.RegistryServiceServicer):
    """The RegistryService handlers."""

    def __init__(self, parts: RegistryParts) -> None:
        self.parts = parts
        self.pool = parts.pool

    async def _tenant(self, tenant_id: str) -> tenants.Tenant:
        async with tenant_tx(self.pool, tenant_id) as conn:
            found = await tenants.get_tenant(conn, tenant_id)
        if found is None:
            raise MeshError(Reason.NOT_FOUND, f"tenant {tenant_id!r} is not registered", domain=DOMAIN,
                            metadata={"tenant_id": tenant_id})
        return found

    # --- tenants -------------------------------------------------------------------------------------------------
    async def UpsertTenant(self, request: registry_service_pb2.UpsertTenantRequest,
                           context: grpc.aio.ServicerContext) -> registry_service_pb2.UpsertTenantResponse:
        tenant = tenant_from_proto(request.tenant)
        _operator_scope(tenant.tenant_id)
        async with tenant_tx(self.pool, tenant.tenant_id) as conn:
            stored = await tenants.upsert_tenant(conn, tenant)
        return registry_service_pb2.UpsertTenantResponse(tenant=tenant_proto(stored))

    async def GetTenant(self, request: registry_service_pb2.GetTenantRequest,
                        context: grpc.aio.ServicerContext) -> registry_service_pb2.GetTenantResponse:
        p = principal_mod.current()
        if p.kind == principal_mod.OPERATOR:
            if not tenants.TENANT_ID.match(request.tenant_id):
                raise invalid_argument([("tenant_id", "a tenant id is required")], domain=DOMAIN)
            tenant_id = _operator_scope(request.tenant_id)
        else:
            tenant_id = p.tenant
        return registry_service_pb2.GetTenantResponse(tenant=tenant_proto(await self._tenant(tenant_id)))

    async def ListTenants(self, request: registry_service_pb2.ListTenantsRequest,
                          context: grpc.aio.ServicerContext) -> registry_service_pb2.ListTenantsResponse:
        p = principal_mod.current()
        async with self.pool.acquire() as conn:
            ids = await tenants.tenant_ids(conn)
        found = [await self._tenant(t) for t in ids if p.tenant in ("*", t)]
        return registry_service_pb2.ListTenantsResponse(tenants=[tenant_proto(t) for t in found])

    # --- connector registrations ---------------------------------------------------------------------------------
    async def RegisterConnector(self, request: registry_service_pb2.RegisterConnectorRequest,
                                context: grpc.aio.ServicerContext) -> registry_service_pb2.RegisterConnectorResponse:
        reg = request.registration
        tenant_id = _operator_scope(reg.tenant_id)
        await self._tenant(tenant_id)
        timeout = min(self.parts.describe_timeout_s, max((context.time_remaining() or 1.0) - 0.2, 0.05))
        manifest = await self.parts.upstream.describe(reg.endpoint, principal_mod.current().token, timeout)
        problems = catalog_mod.manifest_violations(manifest, reg.connector)
        if problems:
            raise invalid_argument([("registration.endpoint", p) for p in problems], domain=DOMAIN)
        instance = registrations.Instance(base_url=reg.instance.base_url, cloud_id=reg.instance.cloud_id,
                                          instance_url=reg.instance.instance_url,
                                          api_version=reg.instance.api_version, extra=dict(reg.instance.extra))
        # Without explicit scopes, a link asks for every scope the connector's actions need.
        scopes = tuple(reg.oauth.scopes) or tuple(sorted({s for a in manifest["actions"] for s in a["scopes"]}))
        oauth = registrations.OAuthSettings(authorize_url=reg.oauth.authorize_url, token_url=reg.oauth.token_url,
                                            client_id=reg.oauth.client_id,
                                            scopes=scopes if reg.oauth.client_id else (),
                                            revoke_url=reg.oauth.revoke_url)
        if reg.oauth.client_secret:
            await self.parts.credentials.put_client_secret(tenant_id, reg.connector, reg.oauth.client_secret)
        async with tenant_tx(self.pool, tenant_id) as conn:
            stored = await registrations.upsert_registration(conn, tenant_id, reg.connector, reg.endpoint, instance,
                                                             oauth, manifest)
            stored = await registrations.get_registration(conn, tenant_id, reg.connector) or stored
        return registry_service_pb2.RegisterConnectorResponse(registration=registration_proto(stored))

    async def ListConnectors(self, request: registry_service_pb2.ListConnectorsRequest,
                             context: grpc.aio.ServicerContext) -> registry_service_pb2.ListConnectorsResponse:
        tenant_id = _operator_scope(request.tenant_id)
        async with tenant_tx(self.pool, tenant_id) as conn:
            found = await registrations.list_registrations(conn, tenant_id)
        return registry_service_pb2.ListConnectorsResponse(registrations=[registration_proto(r) for r in found])

    async def DeleteConnector(self, request: registry_service_pb2.DeleteConnectorRequest,
                              context: grpc.aio.ServicerContext) -> registry_service_pb2.DeleteConnectorResponse:
        tenant_id = _operator_scope(request.tenant_id)
        async with tenant_tx(self.pool, tenant_id) as conn:
            removed = await registrations.delete_registration(conn, tenant_id, request.connector)
        if not removed:
            raise MeshError(Reason.NOT_FOUND, f"no {request.connector} connector is registered for {tenant_id}",
                            domain=DOMAIN)
        return registry_service_pb2.DeleteConnectorResponse()

    # --- directory -----------------------------------------------------------------------------------------------
    async def ImportDirectory(self, request: registry_service_pb2.ImportDirectoryRequest,
                              context: grpc.aio.ServicerContext) -> registry_service_pb2.ImportDirectoryResponse:
        tenant_id = _operator_scope(request.tenant_id)
        await self._tenant(tenant_id)
        people = [person_from_proto(p) for p in request.people]
        async with tenant_tx(self.pool, tenant_id) as conn:
            count = await directory.replace_people(conn, tenant_id, people)
        return registry_service_pb2.ImportDirectoryResponse(people_count=count)

    async def ResolvePerson(self, request: registry_service_pb2.ResolvePersonRequest,
                            context: grpc.aio.ServicerContext) -> registry_service_pb2.ResolvePersonResponse:
        p = principal_mod.current()
        async with tenant_tx(self.pool, p.tenant) as conn:
            person = await directory.find(conn, p.tenant, request.query, p.user)
        return registry_service_pb2.ResolvePersonResponse(person=person_proto(person))

    async def ListPeople(self, request: registry_service_pb2.ListPeopleRequest,
                         context: grpc.aio.ServicerContext) -> registry_service_pb2.ListPeopleResponse:
        p = principal_mod.current()
        async with tenant_tx(self.pool, p.tenant) as conn:
            people = await directory.list_people(conn, p.tenant)
        return registry_service_pb2.ListPeopleResponse(people=[person_proto(x) for x in people])

    # --- tools ---------------------------------------------------------------------------------------------------
    async def ListTools(self, request: registry_service_pb2.ListToolsRequest,
                        context: grpc.aio.ServicerContext) -> registry_service_pb2.ListToolsResponse:
        p = principal_mod.current()
        async with tenant_tx(self.pool, p.tenant) as conn:
            tenant = await tenants.get_tenant(conn, p.tenant)
            found = await registrations.list_registrations(conn, p.tenant)
        if tenant is None:
            raise MeshError(Reason.NOT_FOUND, f"tenant {p.tenant!r} is not registered", domain=DOMAIN)
        tools = [tool for registration in found for tool in registration.tools]
        listing = catalog_mod.list_tools(p.tenant, tenant.policy, p.groups, tools, self.parts.catalog)
        return registry_service_pb2.ListToolsResponse(
            tools=[tool_spec(o.tool, o.confirm_before) for o in listing.tools],
            denied_tools=[common_pb2.DeniedTool(name=d.name, description=d.description, examples=list(d.examples),
                                                reason=d.reason) for d in listing.denied],
            fingerprint=listing.fingerprint)

    async def Invoke(self, request: registry_service_pb2.InvokeRequest,
                     context: grpc.aio.ServicerContext) -> registry_service_pb2.InvokeResponse:
        p = principal_mod.current()
        who = Caller(tenant=p.tenant, user=p.user, groups=p.groups, request_id=p.request_id, run_id=p.run_id,
                     token=p.token, trace_id=_trace_id())
        arguments = _dict(request.arguments)
        if p.kind == principal_mod.OPERATOR:
            who = Caller(tenant=p.tenant, user=p.on_behalf_of.lower(), groups=(), request_id=p.request_id,
                         run_id=p.run_id, token=p.token, operator=p.user, trace_id=_trace_id())
            if not p.on_behalf_of or not p.run_id or p.tenant == "*":
                refusal = MeshError(Reason.POLICY_DENIED,
                                    "an operator invokes tools only to replay one run of one tenant for the user it "
                                    "names (a tenant, run_id and on_behalf_of are required)", domain=DOMAIN,
                                    metadata={"rule": "operator replay"})
                if p.tenant == "*":
                    raise refusal  # no tenant to audit it under
                await self.parts.invoker.refuse(who, request.tool, arguments, request.idempotency_key, refusal)
        # The connector calls behind this Invoke (upstream.Upstream.invoke) add their vendor wait to `waited`.
        with vendorwait.measuring() as waited:
            try:
                outcome = await self.parts.invoker.invoke(who, request.tool, arguments, request.idempotency_key,
                                                          lambda: context.time_remaining() or 0.0)
            except MeshError as err:
                await vendorwait.abort(context, err, waited.seconds)
        return registry_service_pb2.InvokeResponse(result=_struct(outcome.result), summary=outcome.summary,
                                                   replayed=outcome.replayed, arguments=_struct(outcome.arguments),
                                                   confirm_before=outcome.confirm_before,
                                                   vendor_wait=vendorwait.duration(waited.seconds))

    # --- account links -------------------------------------------------------------------------------------------
    async def StartAccountLink(self, request: registry_service_pb2.StartAccountLinkRequest,
                               context: grpc.aio.ServicerContext) -> registry_service_pb2.StartAccountLinkResponse:
        p = principal_mod.current()
        url, state = await self.parts.linker.start(p.tenant, p.user, request.connector)
        return registry_service_pb2.StartAccountLinkResponse(url=url, state=state)

    async def CompleteAccountLink(self, request: registry_service_pb2.CompleteAccountLinkRequest,
                                  context: grpc.aio.ServicerContext
                                  ) -> registry_service_pb2.CompleteAccountLinkResponse:
        p = principal_mod.current()
        link = await self.parts.linker.complete(request.state, request.code, tenant=p.tenant, user=p.user,
                                                actor=_actor())
        return registry_service_pb2.CompleteAccountLinkResponse(link=link_proto(link))

    async def ListAccountLinks(self, request: registry_service_pb2.ListAccountLinksRequest,
                               context: grpc.aio.ServicerContext) -> registry_service_pb2.ListAccountLinksResponse:
        p = principal_mod.current()
        links = await self.parts.linker.links(p.tenant, p.user)
        return registry_service_pb2.ListAccountLinksResponse(links=[link_proto(x) for x in links])

    async def UnlinkAccount(self, request: registry_service_pb2.UnlinkAccountRequest,
                            context: grpc.aio.ServicerContext) -> registry_service_pb2.UnlinkAccountResponse:
        p = principal_mod.current()
        if p.kind == principal_mod.OPERATOR:
            violations = _tenant_field(request.tenant_id)
            if not request.user:
                violations.append(("user", "the user whose link to remove is required"))
            if violations:
                raise invalid_argument(violations, domain=DOMAIN)
            tenant_id, user = _operator_scope(request.tenant_id), request.user.lower()
        else:
            if request.tenant_id not in ("", p.tenant) or request.user.lower() not in ("", p.user.lower()):
                raise invalid_argument([("user", "users unlink their own accounts; tenant_id and user are for "
                                                 "operators")], domain=DOMAIN)
            tenant_id, user = p.tenant, p.user
        removed = await self.parts.linker.unlink(tenant_id, user, request.connector, _actor())
        if not removed:
            raise MeshError(Reason.NOT_FOUND, f"{user} has no linked {request.connector} account", domain=DOMAIN)
        return registry_service_pb2.UnlinkAccountResponse()

    async def PutCredential(self, request: registry_service_pb2.PutCredentialRequest,
                            context: grpc.aio.ServicerContext) -> registry_service_pb2.PutCredentialResponse:
        tenant_id = _operator_scope(request.tenant_id)
        await self._tenant(tenant_id)
        cred = request.credential
        if request.user:
            expires = request.expire_time.ToDatetime(UTC).timestamp() if request.HasField("expire_time") else None
            tokens = TokenSet(access_token=cred.token, refresh_token=request.refresh_token, expires_at=expires,
                              scopes=tuple(request.scopes), token_type=cred.scheme or "Bearer")
            await self.parts.credentials.put_user(tenant_id, request.connector, request.user, tokens)
        else:
            await self.parts.credentials.put_service(tenant_id, request.connector, cred.token, cred.scheme,
                                                     cred.service_identity or f"agentmesh-service@{tenant_id}")
        await self.parts.audit.append(AuditRow(
            tenant_id=tenant_id, user=request.user.lower() or SERVICE_SUBJECT, kind="credential_stored",
            acting_identity=principal_mod.current().user, outcome="ok", code="OK",
            request_id=principal_mod.current().request_id, trace_id=_trace_id(),
            detail={"connector": request.connector, "kind": "user" if request.user else "service"}))
        return registry_service_pb2.PutCredentialResponse()

    # --- audit ---------------------------------------------------------------------------------------------------
    async def AppendAuditEvent(self, request: registry_service_pb2.AppendAuditEventRequest,
                               context: grpc.aio.ServicerContext) -> registry_service_pb2.AppendAuditEventResponse:
        p = principal_mod.current()
        event = request.event
        if p.kind == principal_mod.OPERATOR:
            tenant_id = p.tenant if p.tenant != "*" else event.tenant_id
            if not tenant_id:
                raise invalid_argument([("event.tenant_id", "an operator names the tenant")], domain=DOMAIN)
            tenant_id = _operator_scope(tenant_id)
            user, acting = (event.user or p.on_behalf_of).lower(), p.user
        else:
            tenant_id, user, acting = p.tenant, p.user, event.acting_identity
        latency = event.latency.ToTimedelta().total_seconds() * 1000 if event.HasField("latency") else 0.0
        row_id = await self.parts.audit.append(AuditRow(
            tenant_id=tenant_id, user=user, kind=event.kind, acting_identity=acting, tool=event.tool,
            effect={v: k for k, v in _EFFECTS.items()}.get(event.effect, ""),
            arguments=_dict(event.arguments), outcome=event.outcome, code=event.code, reason=event.reason,
            rule=event.rule, latency_ms=latency, idempotency_key=event.idempotency_key,
            trace_id=event.trace_id or _trace_id(), request_id=p.request_id, run_id=p.run_id or event.run_id,
            detail=_dict(event.detail)))
        return registry_service_pb2.AppendAuditEventResponse(id=row_id)

    async def ListAuditEvents(self, request: registry_service_pb2.ListAuditEventsRequest,
                              context: grpc.aio.ServicerContext) -> registry_service_pb2.ListAuditEventsResponse:
        tenant_id = _operator_scope(request.tenant_id)
        since = request.since.ToDatetime(UTC) if request.HasField("since") else None
        rows, token = await self.parts.audit.list(tenant_id, since=since, user=request.user,
                                                  page_size=request.page_size, page_token=request.page_token)
        return registry_service_pb2.ListAuditEventsResponse(events=[audit_proto(r) for r in rows],
                                                            next_page_token=token)


def registry_spec(parts: RegistryParts) -> ServiceSpec:
    """The ServiceSpec of the RegistryService with its principal kinds and request validators."""
    return ServiceSpec(SERVICE_NAME, RegistryServicer(parts),
                       registry_service_pb2_grpc.add_RegistryServiceServicer_to_server, kinds=KINDS,
                       validators=VALIDATORS)
