"""The registry through its gRPC server with real PostgreSQL, the four real connectors and their sandboxes."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from agentmesh.common.v1 import common_pb2
from agentmesh.connector.v1 import connector_pb2
from agentmesh.registry.v1 import registry_pb2, registry_service_pb2, registry_service_pb2_grpc
from connectors.common.sandbox import RunningSandboxes, VendorSandbox, fixtures_dir, start_sandboxes
from connectors.common.server import create_connector_server
from connectors.common.service import ActionResult, CallContext
from connectors.jira.sandbox import JiraSandbox
from connectors.jira.vendor import JiraVendor
from connectors.okta.sandbox import OktaSandbox
from connectors.okta.vendor import OktaVendor
from connectors.registry.config import RegistryConfig
from connectors.registry.seed import seed_demo
from connectors.registry.server import RegistryRunning, create_registry_server
from connectors.salesforce.sandbox import SalesforceSandbox
from connectors.salesforce.vendor import SalesforceVendor
from connectors.servicenow.sandbox import ServiceNowSandbox
from connectors.servicenow.vendor import ServiceNowVendor
from mesh import client
from mesh.config import MeshConfig
from mesh.errors import ErrorDetails, details_of
from mesh.principal import KeyRing, Minter, Principal
from mesh.server import Running

ALICE, BOB, CAROL = "alice.nguyen@acme.example", "bob.smith@acme.example", "carol.diaz@acme.example"
DAVE, ERIN, FRANK = "dave.okafor@acme.example", "erin.walsh@acme.example", "frank.miller@acme.example"
GRACE, HENRY = "grace.lee@acme.example", "henry.park@acme.example"
IVAN, JUDY = "ivan.petrov@globex.example", "judy.chen@globex.example"
FIXTURES = {t: json.loads((fixtures_dir() / f"{t}.json").read_text()) for t in ("acme", "globex")}
POLICY = json.loads((fixtures_dir() / "policy.json").read_text())
GROUPS = {u["email"]: tuple(u["groups"]) for t in FIXTURES.values() for u in t["users"]}
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=5)


@dataclass
class Stack:
    """The running registry, connectors and sandboxes, and the calls tests make on them."""

    registry: RegistryRunning
    stub: registry_service_pb2_grpc.RegistryServiceStub
    minter: Minter
    sandboxes: RunningSandboxes
    connectors: dict[str, Running]
    endpoints: dict[str, Any]
    http: aiohttp.ClientSession
    admin_dsn: str
    app_dsn: str
    config: RegistryConfig
    invoked: list[tuple[str, str]] = field(default_factory=list)  # (tenant, request_id) of every Invoke made

    def user(self, email: str, tenant: str | None = None, **kwargs: Any) -> Principal:
        tenant = tenant or email.split("@")[1].split(".")[0]
        return self.minter.mint_user(tenant, email, GROUPS.get(email, ("Everyone",)), **kwargs)

    def operator(self, **kwargs: Any) -> Principal:
        return self.minter.mint_operator("ops@agentmesh", **kwargs)

    async def invoke(self, who: Principal | str, tool: str, arguments: dict[str, Any] | None = None, *,
                     key: str | None = None, deadline_s: float = 5.0) -> registry_service_pb2.InvokeResponse:
        principal = self.user(who) if isinstance(who, str) else who
        args = struct_pb2.Struct()
        args.update(arguments or {})
        self.invoked.append((principal.tenant, principal.request_id))
        return await self.stub.Invoke(
            registry_service_pb2.InvokeRequest(tool=tool, arguments=args,
                                               idempotency_key=uuid.uuid4().hex if key is None else key),
            metadata=client.metadata(principal), timeout=deadline_s)

    async def refused(self, who: Principal | str, tool: str, arguments: dict[str, Any] | None = None,
                      **kwargs: Any) -> ErrorDetails:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await self.invoke(who, tool, arguments, **kwargs)
        return details_of(info.value)

    def sandbox(self, vendor: str) -> VendorSandbox:
        return self.sandboxes.sandboxes[vendor]

    def calls(self, vendor: str, tenant: str = "acme") -> int:
        """Vendor API calls the sandbox has served for a tenant (OAuth and admin endpoints excluded)."""
        return sum(n for k, n in self.sandbox(vendor).counters.calls.items()
                   if k.startswith(f"{tenant}:") and "oauth" not in k.lower() and "/authorize" not in k)

    async def audit(self, tenant: str, **kwargs: Any) -> list[registry_pb2.AuditEvent]:
        answer = await self.stub.ListAuditEvents(
            registry_service_pb2.ListAuditEventsRequest(tenant_id=tenant, page_size=1000, **kwargs),
            metadata=client.metadata(self.operator()), timeout=5)
        return list(answer.events)

    async def audit_of(self, principal: Principal, rows: int = 1) -> list[registry_pb2.AuditEvent]:
        """The audit rows of one request, waiting briefly for rows of calls the client stopped waiting for."""
        for _ in range(50):
            found = [e for e in await self.audit(principal.tenant) if e.request_id == principal.request_id]
            if len(found) >= rows:
                return found
            await asyncio.sleep(0.05)
        return found


@pytest.fixture(scope="module")
async def stack(backing, keyring: KeyRing, minter: Minter, mesh_config: MeshConfig,
                tmp_path_factory: pytest.TempPathFactory):
    sandboxes = await start_sandboxes([OktaSandbox(), ServiceNowSandbox(), JiraSandbox(), SalesforceSandbox()])
    vendors = {"okta": OktaVendor(), "servicenow": ServiceNowVendor(), "jira": JiraVendor(),
               "salesforce": SalesforceVendor()}
    connectors = {name: await create_connector_server(mesh_config, vendor) for name, vendor in vendors.items()}
    config = RegistryConfig(state_dir=tmp_path_factory.mktemp("registry"), jwks_path=keyring.jwks_path, port=0,
                            database_url=backing.app_dsn, database_admin_url=backing.admin_dsn,
                            signing_keys_dir=keyring.folder, watch_interval_s=3600, callback_port=0)
    registry = await create_registry_server(config)
    endpoints = {"services": {"registry": f"127.0.0.1:{registry.port}",
                              **{f"connector-{n}": f"127.0.0.1:{r.port}" for n, r in connectors.items()}},
                 "sandboxes": sandboxes.base_urls, "sandbox_admin": sandboxes.admin_urls}
    await seed_demo(endpoints, minter)
    chan = client.channel(endpoints["services"]["registry"])
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        yield Stack(registry, registry_service_pb2_grpc.RegistryServiceStub(chan), minter, sandboxes, connectors,
                    endpoints, http, backing.admin_dsn, backing.app_dsn, config)
    await chan.close()
    await registry.stop(0)
    for running in connectors.values():
        await running.stop(0)
    for vendor in vendors.values():
        await vendor.close()
    await sandboxes.close()


@pytest.fixture(autouse=True)
async def fresh_sandboxes(stack: Stack) -> None:
    """Every test starts from the fixture state, no faults and zero counters (issued tokens survive)."""
    for origin in stack.sandboxes.admin_urls.values():
        async with stack.http.post(f"{origin}/__sandbox/reset") as resp:
            assert resp.status == 200


async def test_seeded_tenants_have_their_connectors_directory_and_links(stack: Stack) -> None:
    acme = await stack.stub.ListConnectors(registry_service_pb2.ListConnectorsRequest(tenant_id="acme"),
                                           metadata=client.metadata(stack.operator()), timeout=5)
    assert {r.connector for r in acme.registrations} == {"servicenow", "jira", "salesforce", "okta"}
    assert all(r.manifest_version and r.healthy for r in acme.registrations)
    assert {r.connector for r in acme.registrations if r.service_credential} == {"okta"}
    globex = await stack.stub.ListConnectors(registry_service_pb2.ListConnectorsRequest(tenant_id="globex"),
                                             metadata=client.metadata(stack.operator()), timeout=5)
    assert {r.connector for r in globex.registrations} == {"servicenow", "jira", "okta"}
    people = await stack.stub.ListPeople(registry_service_pb2.ListPeopleRequest(),
                                         metadata=client.metadata(stack.user(ALICE)), timeout=5)
    assert len(people.people) == 8 and all(p.email.endswith("@acme.example") for p in people.people)
    links = await stack.stub.ListAccountLinks(registry_service_pb2.ListAccountLinksRequest(),
                                              metadata=client.metadata(stack.user(JUDY)), timeout=5)
    assert {(link.connector, link.linked) for link in links.links} == {("servicenow", True), ("jira", True),
                                                                        ("okta", True)}


async def test_alice_reads_her_manager_through_okta(stack: Stack) -> None:
    answer = await stack.invoke(ALICE, "okta.get_user", {})
    result = json_format.MessageToDict(answer.result)
    assert "Carol" in json.dumps(result)
    assert answer.arguments["user"] == ALICE


# --- every rule of policy.json, through Invoke ---------------------------------------------------------------------
def _rule(tenant: str, index: int) -> str:
    rule = POLICY[tenant]["rules"][index]
    text = f"rule {index}: {rule['effect']} {', '.join(rule['groups'])} -> {', '.join(rule['tools'])}"
    return f"{text} (subject {rule['subject']})" if rule.get("subject") else text


ALLOWED = [
    pytest.param(ALICE, "okta.get_user", {"user": "Bob Smith"}, ("acme", 0), id="acme0-everyone-reads-anyone"),
    pytest.param(ALICE, "okta.list_groups", {"user": "me"}, ("acme", 0), id="acme0-list"),
    pytest.param(ALICE, "jira.search_issues", {"assignee": "me"}, ("acme", 0), id="acme0-search"),
    pytest.param(BOB, "salesforce.find_account", {"name": "Initech"}, ("acme", 0), id="acme0-find"),
    pytest.param(ALICE, "servicenow.create_incident", {"short_description": "VPN drops", "caller": "Carol Diaz"},
                 ("acme", 1), id="acme1-subject-does-not-constrain-caller"),
    pytest.param(FRANK, "okta.unlock_user", {"user": "me"}, ("acme", 1), id="acme1-self-service-on-self"),
    pytest.param(ALICE, "jira.add_comment", {"key": "ENG-101", "comment": "seen on staging"}, ("acme", 1),
                 id="acme1-comment"),
    pytest.param(CAROL, "servicenow.list_approvals", {}, ("acme", 0), id="acme0-approvals"),
    pytest.param(ERIN, "okta.reset_password", {"user": BOB}, ("acme", 3), id="acme3-admin-subject-any"),
    pytest.param(HENRY, "servicenow.update_incident", {"number": "INC0010002", "assigned_to": "Erin"}, ("acme", 3),
                 id="acme3-update-incident"),
    pytest.param(BOB, "salesforce.create_task", {"subject": "Call back", "related_to": "Initech"}, ("acme", 4),
                 id="acme4-sales-writes"),
    pytest.param(JUDY, "jira.create_issue", {"project": "GLX", "summary": "Printer jams"}, ("globex", 0),
                 id="globex0-everyone-creates-issue"),
    pytest.param(IVAN, "okta.reset_password", {"user": JUDY}, ("globex", 1), id="globex1-admin-subject-any"),
]

DENIED = [
    pytest.param(ALICE, "okta.reset_password", {"user": BOB}, None, id="acme1-self-unmet-no-other-rule"),
    pytest.param(ALICE, "okta.reset_password", {"user": "Erin Walsh"}, None, id="acme1-self-unmet-by-name"),
    pytest.param(ALICE, "servicenow.approve", {"number": "RITM0010001"}, None, id="unmatched-no-manager"),
    pytest.param(ALICE, "servicenow.update_incident", {"number": "INC0010001", "state": "Resolved"}, None,
                 id="unmatched-no-admin"),
    pytest.param(ALICE, "salesforce.update_opportunity", {"opportunity": "Initech", "stage": "Closed Won"}, None,
                 id="unmatched-not-sales"),
    pytest.param(FRANK, "okta.list_apps", {"user": "me"}, ("acme", 5), id="acme5-deny-beats-allow0"),
    pytest.param(FRANK, "salesforce.find_account", {"name": "Initech"}, ("acme", 5), id="acme5-contractors"),
    pytest.param(BOB, "salesforce.query", {"soql": "SELECT Id FROM Account"}, ("acme", 6), id="acme6-deny-query"),
    pytest.param(JUDY, "okta.reset_password", {"user": "me"}, None, id="globex-unmatched-no-self-service"),
    pytest.param(JUDY, "servicenow.update_incident", {"number": "INC0020001"}, None, id="globex-unmatched"),
    pytest.param(JUDY, "salesforce.find_account", {"name": "Initech"}, None, id="globex-connector-not-enabled"),
]


@pytest.mark.parametrize(("user", "tool", "arguments", "rule"), ALLOWED)
async def test_policy_allows(stack: Stack, user: str, tool: str, arguments: dict[str, Any],
                             rule: tuple[str, int]) -> None:
    principal = stack.user(user)
    try:
        await stack.invoke(principal, tool, arguments)
    except grpc.aio.AioRpcError as err:
        # Only the vendor may still refuse or miss a record; the registry let the call through.
        assert details_of(err).reason not in ("POLICY_DENIED", "VALIDATION_FAILED", "ACCOUNT_NOT_LINKED"), err
    (row,) = await stack.audit_of(principal)
    assert row.rule == _rule(*rule)
    assert row.outcome in ("ok", "failed") and row.reason != "POLICY_DENIED"


@pytest.mark.parametrize(("user", "tool", "arguments", "rule"), DENIED)
async def test_policy_denies_before_any_connector_call(stack: Stack, user: str, tool: str,
                                                       arguments: dict[str, Any], rule: tuple[str, int] | None
                                                       ) -> None:
    tenant = user.split("@")[1].split(".")[0]
    before = {vendor: stack.calls(vendor, tenant) for vendor in stack.sandboxes.sandboxes}
    principal = stack.user(user)
    details = await stack.refused(principal, tool, arguments)
    assert details.code == grpc.StatusCode.PERMISSION_DENIED
    assert details.reason == "POLICY_DENIED" and details.domain == "agentmesh.registry"
    assert details.metadata["rule"] == (_rule(*rule) if rule else "no rule allows it (default deny)")
    assert {vendor: stack.calls(vendor, tenant) for vendor in stack.sandboxes.sandboxes} == before
    (row,) = await stack.audit_of(principal)
    assert (row.outcome, row.code, row.reason, row.tool) == ("denied", "PERMISSION_DENIED", "POLICY_DENIED", tool)


async def test_subject_is_resolved_before_the_policy_sees_it(stack: Stack) -> None:
    """`self` rules compare emails: a name or `me` naming the requester is allowed, anyone else is not."""
    answer = await stack.invoke(FRANK, "okta.reset_password", {"user": "Frank Miller"})
    assert answer.arguments["user"] == FRANK
    details = await stack.refused(FRANK, "okta.reset_password", {"user": "alice"})
    assert details.reason == "POLICY_DENIED"
    assert "alice.nguyen@acme.example is not the requester" in details.message


async def test_self_service_runs_on_the_service_credential_and_audits_both(stack: Stack) -> None:
    principal = stack.user(FRANK)
    answer = await stack.invoke(principal, "okta.unlock_user", {"user": "me"})
    assert answer.arguments["user"] == FRANK
    (row,) = await stack.audit_of(principal)
    assert (row.user, row.acting_identity) == (FRANK, "agentmesh-service@acme")
    assert row.detail["acting_as"] == "service"
    # The same action on someone else (an admin's call) runs on the admin's own token.
    admin = stack.user(ERIN)
    await stack.invoke(admin, "okta.reset_password", {"user": FRANK})
    (row,) = await stack.audit_of(admin)
    assert (row.user, row.acting_identity, row.detail["acting_as"]) == (ERIN, "", "user")


# --- ListTools -----------------------------------------------------------------------------------------------------
async def _tools(stack: Stack, principal: Principal) -> registry_service_pb2.ListToolsResponse:
    return await stack.stub.ListTools(registry_service_pb2.ListToolsRequest(), metadata=client.metadata(principal),
                                      timeout=5)


async def test_list_tools_offers_what_the_user_may_call_and_names_the_rest(stack: Stack) -> None:
    alice = await _tools(stack, stack.user(ALICE))
    offered = {t.name: t for t in alice.tools}
    denied = {t.name: t for t in alice.denied_tools}
    assert "okta.get_user" in offered and "servicenow.create_incident" in offered
    # A tool only a subject rule can refuse is offered (the registry refuses the call on someone else).
    assert "okta.reset_password" in offered
    spec = offered["okta.get_user"]
    assert spec.arguments_schema["properties"]["user"]["default"] == "me"
    assert spec.effect == common_pb2.EFFECT_READ and spec.connector == "okta" and spec.version
    for name in ("salesforce.query", "servicenow.approve", "okta.add_user_to_group", "salesforce.update_opportunity"):
        assert name in denied and name not in offered
        assert denied[name].description and len(denied[name].examples) >= 3 and denied[name].reason
    assert "rule 6: deny Everyone -> salesforce.query" in denied["salesforce.query"].reason
    assert not any(t.confirm_before for t in alice.tools)


async def test_list_tools_marks_confirm_before_and_follows_groups(stack: Stack) -> None:
    erin = {t.name: t for t in (await _tools(stack, stack.user(ERIN))).tools}
    assert erin["okta.add_user_to_group"].confirm_before and erin["okta.reset_factors"].confirm_before
    assert not erin["okta.get_user"].confirm_before
    frank = await _tools(stack, stack.user(FRANK))
    assert not any(t.name.startswith("salesforce.") for t in frank.tools)
    assert {"okta.list_apps", "salesforce.find_account"} <= {t.name for t in frank.denied_tools}


async def test_fingerprint_follows_tenant_and_permissions(stack: Stack) -> None:
    alice = (await _tools(stack, stack.user(ALICE))).fingerprint
    assert alice == (await _tools(stack, stack.user(ALICE))).fingerprint
    # Same groups, same tools: same permission set.
    assert alice == (await _tools(stack, stack.minter.mint_user("acme", "someone@acme.example",
                                                                  GROUPS[ALICE]))).fingerprint
    assert alice != (await _tools(stack, stack.user(ERIN))).fingerprint
    assert alice != (await _tools(stack, stack.minter.mint_user("globex", JUDY, GROUPS[ALICE]))).fingerprint


async def test_globex_sees_only_its_own_tools(stack: Stack) -> None:
    globex = await _tools(stack, stack.user(IVAN))
    assert {t.connector for t in globex.tools} == {"servicenow", "jira", "okta"}
    salesforce = [t for t in globex.denied_tools if t.name.startswith("salesforce.")]
    assert salesforce and all("not enabled" in t.reason for t in salesforce)
    assert not any(t.arguments_schema for t in globex.denied_tools if hasattr(t, "arguments_schema"))


# --- tenant isolation ----------------------------------------------------------------------------------------------
async def test_a_globex_principal_never_reaches_acme(stack: Stack) -> None:
    acme_calls = {vendor: stack.calls(vendor, "acme") for vendor in stack.sandboxes.sandboxes}
    # acme's incident does not exist on globex's instance: the call went to globex's ServiceNow.
    details = await stack.refused(IVAN, "servicenow.get_incident", {"number": "INC0010001"})
    assert details.code == grpc.StatusCode.NOT_FOUND
    # acme's people are not in globex's directory.
    details = await stack.refused(IVAN, "okta.get_user", {"user": ALICE})
    assert details.reason == "UNKNOWN_PERSON"
    # Salesforce is acme's only: refused for globex by its own policy.
    details = await stack.refused(JUDY, "salesforce.find_account", {"name": "Initech"})
    assert details.reason == "POLICY_DENIED"
    assert {vendor: stack.calls(vendor, "acme") for vendor in stack.sandboxes.sandboxes} == acme_calls
    # Request fields naming acme are ignored for user principals.
    tenant = await stack.stub.GetTenant(registry_service_pb2.GetTenantRequest(tenant_id="acme"),
                                        metadata=client.metadata(stack.user(JUDY)), timeout=5)
    assert tenant.tenant.tenant_id == "globex"
    judy = stack.user(JUDY)
    event = registry_pb2.AuditEvent(tenant_id="acme", user=ALICE, kind="request", outcome="ok")
    await stack.stub.AppendAuditEvent(registry_service_pb2.AppendAuditEventRequest(event=event),
                                      metadata=client.metadata(judy), timeout=5)
    assert not [e for e in await stack.audit("acme") if e.request_id == judy.request_id]
    (row,) = await stack.audit_of(judy)
    assert (row.tenant_id, row.user) == ("globex", JUDY)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.stub.UnlinkAccount(registry_service_pb2.UnlinkAccountRequest(connector="jira", tenant_id="acme",
                                                                                 user=ALICE),
                                       metadata=client.metadata(stack.user(IVAN)), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for who in (IVAN, ALICE):
        links = await stack.stub.ListAccountLinks(registry_service_pb2.ListAccountLinksRequest(),
                                                  metadata=client.metadata(stack.user(who)), timeout=5)
        assert {link.connector for link in links.links if link.linked} >= {"jira", "okta"}


async def test_an_operator_of_globex_cannot_read_acme_audit(stack: Stack) -> None:
    scoped = stack.operator(tenant="globex")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.stub.ListAuditEvents(registry_service_pb2.ListAuditEventsRequest(tenant_id="acme"),
                                         metadata=client.metadata(scoped), timeout=5)
    assert details_of(info.value).reason == "POLICY_DENIED"
    rows = await stack.stub.ListAuditEvents(registry_service_pb2.ListAuditEventsRequest(tenant_id="globex"),
                                            metadata=client.metadata(scoped), timeout=5)
    assert all(e.tenant_id == "globex" for e in rows.events)


async def test_user_principals_cannot_call_admin_rpcs(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.stub.ListAuditEvents(registry_service_pb2.ListAuditEventsRequest(tenant_id="acme"),
                                         metadata=client.metadata(stack.user(HENRY)), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.stub.PutCredential(registry_service_pb2.PutCredentialRequest(
            tenant_id="acme", connector="okta", user=HENRY, credential=connector_pb2.Credential(token="x")),
            metadata=client.metadata(stack.user(HENRY)), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _tools(stack, stack.operator())
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _expired(minter: Minter) -> str:
    return minter.mint(Principal("acme", ALICE, GROUPS[ALICE], "r", "run", "user", time.time() - 5))


def _tampered(minter: Minter) -> str:
    token = minter.mint_user("globex", JUDY, GROUPS[JUDY]).token
    head, body, sig = token.split(".")
    claims = json.loads(__import__("base64").urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["tid"] = "acme"
    forged = __import__("base64").urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{head}.{forged}.{sig}"


@pytest.mark.parametrize("make_token", [
    pytest.param(lambda m, tmp: "", id="missing"),
    pytest.param(lambda m, tmp: _expired(m), id="expired"),
    pytest.param(lambda m, tmp: _tampered(m), id="forged-tenant"),
    pytest.param(lambda m, tmp: Minter(KeyRing(tmp).ensure()).mint_user("acme", ALICE, GROUPS[ALICE]).token,
                 id="foreign-key"),
])
async def test_bad_principals_are_refused(stack: Stack, tmp_path: Path, make_token: Any) -> None:
    before = {vendor: stack.calls(vendor, "acme") for vendor in stack.sandboxes.sandboxes}
    meta = (("x-agentmesh-principal", make_token(stack.minter, tmp_path)),)
    args = struct_pb2.Struct()
    args.update({"user": "me"})
    for call in (stack.stub.Invoke(registry_service_pb2.InvokeRequest(tool="okta.get_user", arguments=args),
                                   metadata=meta, timeout=5),
                 stack.stub.ListTools(registry_service_pb2.ListToolsRequest(), metadata=meta, timeout=5)):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert details_of(info.value).reason == "PRINCIPAL_INVALID"
    assert {vendor: stack.calls(vendor, "acme") for vendor in stack.sandboxes.sandboxes} == before


# --- arguments and people ------------------------------------------------------------------------------------------
async def test_invalid_arguments_answer_field_violations_and_are_audited(stack: Stack) -> None:
    principal = stack.user(ALICE)
    details = await stack.refused(principal, "servicenow.create_incident", {"urgency": "high", "color": "red"},
                                  key="")
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT and details.reason == "VALIDATION_FAILED"
    fields = {f for f, _ in details.field_violations}
    assert fields == {"arguments.short_description", "arguments.urgency", "arguments.color", "idempotency_key"}
    (row,) = await stack.audit_of(principal)
    assert (row.outcome, row.code) == ("failed", "INVALID_ARGUMENT")
    details = await stack.refused(ALICE, "servicenow.nope", {})
    assert details.field_violations and details.field_violations[0][0] == "tool"
    details = await stack.refused(ALICE, "DROP TABLE", {})
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_defaults_are_filled_and_people_resolved_in_the_answer(stack: Stack) -> None:
    answer = await stack.invoke(ALICE, "servicenow.list_incidents", {})
    args = json_format.MessageToDict(answer.arguments)
    assert args == {"caller": ALICE, "state": "open", "limit": 10}
    answer = await stack.invoke(HENRY, "servicenow.update_incident", {"number": "INC0010002",
                                                                      "assigned_to": "Erin"})
    assert answer.arguments["assigned_to"] == ERIN


async def test_resolve_person(stack: Stack) -> None:
    async def resolve(query: str, who: str = ALICE) -> common_pb2.Person:
        answer = await stack.stub.ResolvePerson(registry_service_pb2.ResolvePersonRequest(query=query),
                                                metadata=client.metadata(stack.user(who)), timeout=5)
        return answer.person

    assert (await resolve("me")).email == ALICE
    assert (await resolve("Carol")).email == CAROL
    assert (await resolve("diaz carol")).email == CAROL
    assert (await resolve("DAVE.OKAFOR@acme.example")).name == "Dave Okafor"
    assert dict((await resolve("me", JUDY)).system_ids)["jira"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await resolve("Zed Nobody")
    assert details_of(info.value).reason == "UNKNOWN_PERSON"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await resolve("Alice", JUDY)  # acme's Alice is not globex's
    assert details_of(info.value).reason == "UNKNOWN_PERSON"


async def test_ambiguous_person_names_the_candidates(stack: Stack) -> None:
    operator = client.metadata(stack.operator())
    policy = struct_pb2.Struct()
    policy.update({"connectors": ["okta"], "rules": [{"effect": "allow", "groups": ["Everyone"], "tools": ["*"]}]})
    await stack.stub.UpsertTenant(registry_service_pb2.UpsertTenantRequest(
        tenant=registry_pb2.Tenant(tenant_id="initrode", display_name="Initrode", policy=policy)),
        metadata=operator, timeout=5)
    people = [common_pb2.Person(email=e, first_name=f, last_name=last, groups=["Everyone"]) for e, f, last in (
        ("sam.lee@initrode.example", "Sam", "Lee"), ("sam.ortiz@initrode.example", "Sam", "Ortiz"),
        ("pat.kim@initrode.example", "Pat", "Kim"))]
    await stack.stub.ImportDirectory(registry_service_pb2.ImportDirectoryRequest(tenant_id="initrode",
                                                                                 people=people),
                                     metadata=operator, timeout=5)
    await stack.stub.RegisterConnector(registry_service_pb2.RegisterConnectorRequest(
        registration=registry_pb2.ConnectorRegistration(
            tenant_id="initrode", connector="okta", endpoint=stack.endpoints["services"]["connector-okta"],
            instance=connector_pb2.InstanceSettings(base_url=stack.sandboxes.base_urls["okta"]["acme"]))),
        metadata=operator, timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.stub.ImportDirectory(registry_service_pb2.ImportDirectoryRequest(
            tenant_id="initrode", people=[*people, common_pb2.Person(email="not-an-email", name="X")]),
            metadata=operator, timeout=5)
    assert details_of(info.value).field_violations == [("people[3].email", "must be an email address")]
    pat = stack.minter.mint_user("initrode", "pat.kim@initrode.example", ["Everyone"])
    before = stack.calls("okta")
    details = await stack.refused(pat, "okta.get_user", {"user": "Sam"})
    assert details.code == grpc.StatusCode.FAILED_PRECONDITION and details.reason == "AMBIGUOUS_PERSON"
    assert details.metadata["candidate_emails"] == "sam.lee@initrode.example,sam.ortiz@initrode.example"
    assert "Sam Lee" in details.metadata["candidates"] and details.metadata["argument"] == "user"
    assert stack.calls("okta") == before
    (row,) = await stack.audit_of(pat)
    assert (row.tenant_id, row.reason) == ("initrode", "AMBIGUOUS_PERSON")


async def test_malformed_requests_never_answer_internal(stack: Stack) -> None:
    operator = client.metadata(stack.operator())
    user = client.metadata(stack.user(ALICE))
    far = timestamp_pb2.Timestamp(seconds=2**62)
    weird = struct_pb2.Struct()
    weird.update({"short_description": ["a", {"b": None}], "urgency": 1e300, "caller": 7})
    calls = [
        stack.stub.UpsertTenant(registry_service_pb2.UpsertTenantRequest(tenant=registry_pb2.Tenant(
            tenant_id="acme", request_timeout=duration_pb2.Duration(seconds=2**62))), metadata=operator, timeout=5),
        stack.stub.UpsertTenant(registry_service_pb2.UpsertTenantRequest(), metadata=operator, timeout=5),
        stack.stub.PutCredential(registry_service_pb2.PutCredentialRequest(
            tenant_id="acme", connector="okta", user=ALICE, expire_time=far,
            credential=connector_pb2.Credential(token="x")), metadata=operator, timeout=5),
        stack.stub.PutCredential(registry_service_pb2.PutCredentialRequest(
            tenant_id="nosuch", connector="okta", credential=connector_pb2.Credential(token="x")),
            metadata=operator, timeout=5),
        stack.stub.ListAuditEvents(registry_service_pb2.ListAuditEventsRequest(tenant_id="acme", since=far),
                                   metadata=operator, timeout=5),
        stack.stub.AppendAuditEvent(registry_service_pb2.AppendAuditEventRequest(event=registry_pb2.AuditEvent(
            kind="request", effect=99)), metadata=user, timeout=5),
        stack.stub.AppendAuditEvent(registry_service_pb2.AppendAuditEventRequest(event=registry_pb2.AuditEvent(
            kind="tool_call")), metadata=user, timeout=5),
        stack.stub.Invoke(registry_service_pb2.InvokeRequest(tool="servicenow.create_incident", arguments=weird,
                                                             idempotency_key="k" * 500), metadata=user, timeout=5),
        stack.stub.ResolvePerson(registry_service_pb2.ResolvePersonRequest(query="x" * 10_000), metadata=user,
                                 timeout=5),
        stack.stub.ResolvePerson(registry_service_pb2.ResolvePersonRequest(query="%_\\"), metadata=user, timeout=5),
        stack.stub.StartAccountLink(registry_service_pb2.StartAccountLinkRequest(connector="nosuch"), metadata=user,
                                    timeout=5),
        stack.stub.CompleteAccountLink(registry_service_pb2.CompleteAccountLinkRequest(state="x", code="y"),
                                       metadata=user, timeout=5),
        stack.stub.GetTenant(registry_service_pb2.GetTenantRequest(tenant_id="nosuch"), metadata=operator,
                             timeout=5),
        stack.stub.RegisterConnector(registry_service_pb2.RegisterConnectorRequest(
            registration=registry_pb2.ConnectorRegistration(tenant_id="nosuch", connector="okta",
                                                            endpoint="127.0.0.1:1")), metadata=operator, timeout=5),
    ]
    codes = []
    for call in calls:
        try:
            await call
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as err:
            codes.append(err.code())
            assert details_of(err).reason, err  # every refusal carries its ErrorInfo
    assert [c.name for c in codes] == [
        "INVALID_ARGUMENT", "INVALID_ARGUMENT", "INVALID_ARGUMENT", "NOT_FOUND", "INVALID_ARGUMENT",
        "OK",  # an unknown effect number is recorded as no effect
        "INVALID_ARGUMENT", "INVALID_ARGUMENT", "INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND",
        "INVALID_ARGUMENT", "NOT_FOUND", "NOT_FOUND"]


# --- idempotency ---------------------------------------------------------------------------------------------------


def incident_posts(stack: Stack) -> int:
    """POSTs that create acme incidents at the ServiceNow sandbox."""
    return sum(n for k, n in stack.sandbox("servicenow").counters.calls.items()
               if k.startswith("acme:POST ") and k.endswith("/incident"))


async def _set_faults(stack: Stack, vendor: str, faults: dict[str, Any]) -> None:
    async with stack.http.put(f"{stack.sandboxes.admin_urls[vendor]}/__sandbox/faults", json=faults) as resp:
        assert resp.status == 200


async def test_fifty_concurrent_invokes_with_one_key_make_one_connector_call(stack: Stack) -> None:
    await _set_faults(stack, "servicenow", {"latency": {"fixed_ms": 150}})
    key = f"run-{uuid.uuid4().hex}:s1"
    args = {"short_description": "Monitor flickers", "urgency": 3}
    outcomes = await asyncio.gather(*(stack.invoke(ALICE, "servicenow.create_incident", args, key=key)
                                      for _ in range(50)), return_exceptions=True)
    answers = [o for o in outcomes if isinstance(o, registry_service_pb2.InvokeResponse)]
    refusals = [details_of(o) for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(answers) + len(refusals) == 50
    assert {(d.code, d.reason) for d in refusals} <= {(grpc.StatusCode.ABORTED, "IDEMPOTENCY_KEY_IN_FLIGHT")}
    assert all(d.retry_after_s for d in refusals)
    assert incident_posts(stack) == 1
    assert stack.sandbox("servicenow").counters.created["acme:incident"] == 1
    assert len({a.result["number"] for a in answers}) == 1
    assert sum(not a.replayed for a in answers) == 1
    # After it completed, a repeat is answered from the record: same result, flagged, connector not called.
    again = await stack.invoke(ALICE, "servicenow.create_incident", args, key=key)
    assert again.replayed and again.result["number"] == answers[0].result["number"]
    assert incident_posts(stack) == 1


async def test_same_key_with_other_arguments_is_refused(stack: Stack) -> None:
    key = uuid.uuid4().hex
    first = await stack.invoke(ALICE, "servicenow.create_incident", {"short_description": "Laptop fan"}, key=key)
    details = await stack.refused(ALICE, "servicenow.create_incident", {"short_description": "Laptop fan!"}, key=key)
    assert (details.code, details.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")
    # Another user presenting the key does not get alice's result either.
    details = await stack.refused(BOB, "servicenow.create_incident", {"short_description": "Laptop fan"}, key=key)
    assert details.reason == "IDEMPOTENCY_KEY_REUSED"
    assert incident_posts(stack) == 1
    # Arguments equal once resolved are the same call: `me` is alice.
    again = await stack.invoke(ALICE, "servicenow.create_incident", {"short_description": "Laptop fan",
                                                                     "caller": ALICE}, key=key)
    assert again.replayed and again.result["number"] == first.result["number"]


async def test_same_key_while_the_first_call_runs_is_aborted(stack: Stack) -> None:
    await _set_faults(stack, "servicenow", {"latency": {"fixed_ms": 400}})
    key = uuid.uuid4().hex
    args = {"short_description": "Badge reader"}
    first = asyncio.ensure_future(stack.invoke(ALICE, "servicenow.create_incident", args, key=key))
    await asyncio.sleep(0.15)
    details = await stack.refused(ALICE, "servicenow.create_incident", args, key=key)
    assert (details.code, details.reason) == (grpc.StatusCode.ABORTED, "IDEMPOTENCY_KEY_IN_FLIGHT")
    assert details.retry_after_s
    assert not (await first).replayed


async def test_a_failed_call_releases_its_key(stack: Stack) -> None:
    """A retry after a failure runs again (the connector carries the key to the vendor for its own dedupe)."""
    await _set_faults(stack, "servicenow", {"errors": {"503": 1.0}})
    key = uuid.uuid4().hex
    args = {"short_description": "Wifi"}
    details = await stack.refused(ALICE, "servicenow.create_incident", args, key=key)
    assert details.code == grpc.StatusCode.UNAVAILABLE
    await _set_faults(stack, "servicenow", {})
    answer = await stack.invoke(ALICE, "servicenow.create_incident", args, key=key)
    assert answer.result["number"].startswith("INC") and not answer.replayed


async def test_idempotency_records_are_kept_at_least_a_day(stack: Stack) -> None:
    key = uuid.uuid4().hex
    await stack.invoke(ALICE, "servicenow.create_incident", {"short_description": "Keyboard"}, key=key)
    conn = await asyncpg.connect(stack.admin_dsn)
    try:
        kept = await conn.fetchval("SELECT expire_time - create_time FROM registry.idempotency "
                                   "WHERE tenant_id = 'acme' AND key = $1", key)
    finally:
        await conn.close()
    assert kept.total_seconds() >= 24 * 3600


# --- deadlines -----------------------------------------------------------------------------------------------------
async def test_the_connector_gets_the_remaining_deadline(stack: Stack) -> None:
    await _set_faults(stack, "okta", {"latency": {"fixed_ms": 3000}})
    principal = stack.user(ALICE)
    details = await stack.refused(principal, "okta.get_user", {}, deadline_s=0.6)
    # The connector stops waiting for the vendor when the budget it was given runs out (it may call that a
    # deadline or an unavailable vendor); either way the call ends within the caller's deadline and is audited.
    assert details.code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    (row,) = await stack.audit_of(principal)
    assert (row.outcome, row.code) == ("failed", details.code.name)


# --- account linking and tokens ------------------------------------------------------------------------------------
def _tokens_of(sandbox: VendorSandbox, tenant: str, subject: str) -> list[Any]:
    return [info for info in sandbox.tokens._access.values() if (info.tenant, info.subject) == (tenant, subject)]


async def _unlink(stack: Stack, who: str, connector: str) -> None:
    await stack.stub.UnlinkAccount(registry_service_pb2.UnlinkAccountRequest(connector=connector),
                                   metadata=client.metadata(stack.user(who)), timeout=5)


async def _authorize(stack: Stack, url: str) -> str:
    """What the user's browser does at the vendor: log in (the sandbox takes login_hint) and get redirected."""
    async with stack.http.get(url, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        return resp.headers["Location"]


async def test_unlinked_system_answers_with_a_link_url_and_the_callback_links_it(stack: Stack) -> None:
    jira = stack.sandbox("jira")
    assert _tokens_of(jira, "acme", ALICE)
    await _unlink(stack, ALICE, "jira")
    assert not _tokens_of(jira, "acme", ALICE)  # revoked at the vendor, not only forgotten
    before = stack.calls("jira")
    details = await stack.refused(ALICE, "jira.search_issues", {"assignee": "me"})
    assert (details.code, details.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_NOT_LINKED")
    assert stack.calls("jira") == before
    link_url = details.metadata["link_url"]
    assert link_url.startswith(stack.sandboxes.admin_urls["jira"] + "/authorize?")
    query = parse_qs(urlsplit(link_url).query)
    assert query["login_hint"] == [ALICE] and query["client_id"] == ["agentmesh"]
    assert query["redirect_uri"] == [stack.registry.callback_url] and "read:jira-work" in query["scope"][0]
    callback = await _authorize(stack, link_url)
    assert callback.startswith(stack.registry.callback_url + "?")
    async with stack.http.get(callback) as resp:
        assert resp.status == 200 and "linked" in await resp.text()
    answer = await stack.invoke(ALICE, "jira.search_issues", {"assignee": "me"})
    assert "ENG-101" in json.dumps(json_format.MessageToDict(answer.result))
    kinds = [e.kind for e in await stack.audit("acme", user=ALICE)]
    assert "link" in kinds and "unlink" in kinds


async def test_account_link_over_rpc_and_only_for_its_owner(stack: Stack) -> None:
    await _unlink(stack, DAVE, "okta")
    links = await stack.stub.ListAccountLinks(registry_service_pb2.ListAccountLinksRequest(),
                                              metadata=client.metadata(stack.user(DAVE)), timeout=5)
    assert {link.connector: link.linked for link in links.links}["okta"] is False
    started = await stack.stub.StartAccountLink(registry_service_pb2.StartAccountLinkRequest(connector="okta"),
                                                metadata=client.metadata(stack.user(DAVE)), timeout=5)
    returned = parse_qs(urlsplit(await _authorize(stack, started.url)).query)
    assert returned["state"] == [started.state]
    request = registry_service_pb2.CompleteAccountLinkRequest(state=started.state, code=returned["code"][0])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.stub.CompleteAccountLink(request, metadata=client.metadata(stack.user(BOB)), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    done = await stack.stub.CompleteAccountLink(request, metadata=client.metadata(stack.user(DAVE)), timeout=5)
    assert done.link.linked and done.link.connector == "okta" and done.link.expire_time.seconds > time.time()
    answer = await stack.invoke(DAVE, "okta.get_user", {})
    assert answer.arguments["user"] == DAVE
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.stub.CompleteAccountLink(registry_service_pb2.CompleteAccountLinkRequest(
            state=started.state[:-4] + "AAAA", code="x"), metadata=client.metadata(stack.user(DAVE)), timeout=5)
    assert details_of(info.value).field_violations[0][0] == "state"


async def test_a_rejected_token_is_refreshed_once_and_the_call_retried(stack: Stack) -> None:
    servicenow = stack.sandbox("servicenow")
    for info in _tokens_of(servicenow, "acme", GRACE):
        info.expires_at = time.time() - 1  # the vendor now answers 401 to the stored token
    principal = stack.user(GRACE)
    answer = await stack.invoke(principal, "servicenow.list_incidents", {"state": "all"})
    assert answer.arguments["caller"] == GRACE
    (row,) = await stack.audit_of(principal)
    assert row.outcome == "ok" and row.detail["retried_after_401"] is True
    assert sum(n for k, n in servicenow.counters.calls.items() if "oauth_token" in k) == 1
    # Without a refresh token the vendor's refusal stands.
    await _put_token(stack, "servicenow", GRACE, "not-a-valid-token", refresh="", expires_in=3600)
    details = await stack.refused(GRACE, "servicenow.list_incidents", {})
    assert details.reason == "VENDOR_UNAUTHENTICATED"


async def _put_token(stack: Stack, vendor: str, user: str, token: str, *, refresh: str, expires_in: float) -> None:
    expire = timestamp_pb2.Timestamp()
    expire.FromSeconds(int(time.time() + expires_in))
    await stack.stub.PutCredential(registry_service_pb2.PutCredentialRequest(
        tenant_id="acme", connector=vendor, user=user, refresh_token=refresh, expire_time=expire,
        credential=connector_pb2.Credential(kind=connector_pb2.CREDENTIAL_KIND_USER, token=token, scheme="Bearer")),
        metadata=client.metadata(stack.operator()), timeout=5)


async def test_a_token_about_to_expire_is_refreshed_before_use(stack: Stack) -> None:
    origin = stack.sandboxes.base_urls["servicenow"]["acme"]
    async with stack.http.post(f"{origin}/__sandbox/tokens", json={"tenant": "acme", "user": BOB}) as resp:
        issued = await resp.json()
    await _put_token(stack, "servicenow", BOB, issued["access_token"], refresh=issued["refresh_token"],
                     expires_in=30)
    principal = stack.user(BOB)
    await stack.invoke(principal, "servicenow.list_incidents", {})
    (row,) = await stack.audit_of(principal)
    assert row.outcome == "ok" and "retried_after_401" not in row.detail  # refreshed first, never refused
    calls = stack.sandbox("servicenow").counters.calls
    assert sum(n for k, n in calls.items() if "oauth_token" in k) == 1
    links = await stack.stub.ListAccountLinks(registry_service_pb2.ListAccountLinksRequest(),
                                              metadata=client.metadata(stack.user(BOB)), timeout=5)
    expiry = {link.connector: link.expire_time.seconds for link in links.links}["servicenow"]
    assert expiry > time.time() + 600


async def test_operator_unlink_names_tenant_and_user(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.stub.UnlinkAccount(registry_service_pb2.UnlinkAccountRequest(connector="jira"),
                                       metadata=client.metadata(stack.operator()), timeout=5)
    assert {f for f, _ in details_of(info.value).field_violations} == {"tenant_id", "user"}
    await stack.stub.UnlinkAccount(registry_service_pb2.UnlinkAccountRequest(connector="jira", tenant_id="globex",
                                                                             user=JUDY),
                                   metadata=client.metadata(stack.operator()), timeout=5)
    details = await stack.refused(JUDY, "jira.search_issues", {})
    assert details.reason == "ACCOUNT_NOT_LINKED"
    (row,) = [e for e in await stack.audit("globex", user=JUDY) if e.kind == "unlink"][:1]
    assert row.acting_identity == "ops@agentmesh"


# --- dead-letter replays -------------------------------------------------------------------------------------------
async def test_operator_invokes_only_as_a_replay_for_one_user_and_is_audited(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.stub.Invoke(registry_service_pb2.InvokeRequest(tool="okta.get_user"),
                                metadata=client.metadata(stack.operator()), timeout=5)
    assert details_of(info.value).reason == "POLICY_DENIED"
    unscoped = stack.operator(tenant="acme", run_id="run-1")
    details = await stack.refused(unscoped, "okta.get_user", {})
    assert details.metadata["rule"] == "operator replay"
    replay = stack.operator(tenant="acme", run_id="run-7", on_behalf_of=ALICE)
    # The user's own permissions apply (from the directory): alice may not reset bob's password.
    details = await stack.refused(replay, "okta.reset_password", {"user": BOB})
    assert details.reason == "POLICY_DENIED"
    (row,) = await stack.audit_of(replay)
    assert (row.user, row.acting_identity, row.run_id, row.detail["operator"]) == (
        ALICE, "ops@agentmesh", "run-7", "ops@agentmesh")


# --- the audit log in the database ---------------------------------------------------------------------------------
TABLES = ("tenants", "connectors", "people", "secrets", "links", "idempotency", "audit")


async def test_audit_is_append_only_and_isolated_by_the_database(stack: Stack) -> None:
    await stack.invoke(ALICE, "okta.get_user", {})
    await stack.invoke(JUDY, "okta.get_user", {})
    app = await asyncpg.connect(stack.app_dsn)
    try:
        for table in TABLES:  # no tenant set: no rows at all
            assert await app.fetchval(f"SELECT count(*) FROM registry.{table}") == 0  # noqa: S608
        async with app.transaction():
            await app.execute("SELECT set_config('agentmesh.tenant', 'globex', true)")
            assert await app.fetchval("SELECT count(*) FROM registry.audit WHERE tenant_id = 'acme'") == 0
            assert await app.fetchval("SELECT count(*) FROM registry.audit") > 0
            assert await app.fetchval("SELECT count(*) FROM registry.secrets WHERE tenant_id = 'acme'") == 0
        for statement in ("UPDATE registry.audit SET outcome = 'ok'", "DELETE FROM registry.audit",
                          "TRUNCATE registry.audit", "DROP TABLE registry.audit"):
            async with app.transaction():
                await app.execute("SELECT set_config('agentmesh.tenant', 'acme', true)")
                with pytest.raises(asyncpg.PostgresError) as info:
                    await app.execute(statement)
                assert info.value.sqlstate in ("42501",), info.value  # insufficient_privilege
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with app.transaction():  # a row for another tenant cannot even be written
                await app.execute("SELECT set_config('agentmesh.tenant', 'acme', true)")
                await app.execute("INSERT INTO registry.audit (tenant_id, kind) VALUES ('globex', 'request')")
        role = await app.fetchrow("SELECT rolbypassrls, rolsuper FROM pg_roles WHERE rolname = current_user")
        assert not role["rolbypassrls"] and not role["rolsuper"]
    finally:
        await app.close()
    admin = await asyncpg.connect(stack.admin_dsn)
    try:
        rows = await admin.fetch("""SELECT c.relname, c.relforcerowsecurity, c.relrowsecurity,
                                           pg_get_userbyid(c.relowner) AS owner
                                    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                    WHERE n.nspname = 'registry' AND c.relkind IN ('r', 'p')""")
        flags = {r["relname"]: (r["relrowsecurity"], r["relforcerowsecurity"], r["owner"]) for r in rows}
        for table in TABLES:
            assert flags[table][:2] == (True, True) and flags[table][2] != "agentmesh_app"
        partitions = [r[0] for r in await admin.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'registry.audit'::regclass")]
        this_month = time.strftime("audit_%Y_%m", time.gmtime())
        assert this_month in partitions and len(partitions) >= 5  # this month, three ahead, and the default
        assert await admin.fetchval(f"SELECT count(*) FROM registry.{this_month}") > 0  # noqa: S608
        assert all(flags[p][:2] == (True, True) for p in partitions)
    finally:
        await admin.close()


async def test_upkeep_purges_expired_records_and_audit_past_retention(stack: Stack) -> None:
    admin = await asyncpg.connect(stack.admin_dsn)
    try:
        await admin.execute("""INSERT INTO registry.audit (tenant_id, kind, create_time, request_id) VALUES
                               ('acme', 'request', now() - interval '500 days', 'ancient'),
                               ('acme', 'request', now() - interval '300 days', 'old-but-kept')""")
        await admin.execute("""INSERT INTO registry.idempotency (tenant_id, key, fingerprint, tool, state,
                                                                 lease_until, expire_time, create_time)
                               VALUES ('acme', 'expired-key', 'f', 'servicenow.create_incident', 'done',
                                       now() - interval '3 days', now() - interval '1 day',
                                       now() - interval '3 days')""")
        assert stack.registry.watcher is not None
        await stack.registry.watcher.maintain()
        kept = {r[0] for r in await admin.fetch("SELECT request_id FROM registry.audit "
                                                "WHERE request_id IN ('ancient', 'old-but-kept')")}
        assert kept == {"old-but-kept"}  # acme keeps 400 days
        assert await admin.fetchval("SELECT count(*) FROM registry.idempotency WHERE key = 'expired-key'") == 0
    finally:
        await admin.close()


async def test_audit_listing_pages_newest_first_and_filters(stack: Stack) -> None:
    principal = stack.user(CAROL)
    for _ in range(3):
        await stack.invoke(principal, "okta.get_user", {})
    operator = client.metadata(stack.operator())
    since = timestamp_pb2.Timestamp()
    since.FromSeconds(int(time.time()) - 3600)
    first = await stack.stub.ListAuditEvents(registry_service_pb2.ListAuditEventsRequest(
        tenant_id="acme", user=CAROL, page_size=2, since=since), metadata=operator, timeout=5)
    assert len(first.events) == 2 and first.next_page_token
    rest = await stack.stub.ListAuditEvents(registry_service_pb2.ListAuditEventsRequest(
        tenant_id="acme", user=CAROL, page_size=1000, page_token=first.next_page_token, since=since),
        metadata=operator, timeout=5)
    events = [*first.events, *rest.events]
    assert all(e.user == CAROL for e in events)
    times = [e.create_time.ToNanoseconds() for e in events]
    assert times == sorted(times, reverse=True) and len({e.id for e in events}) == len(events)
    row = next(e for e in events if e.request_id == principal.request_id)
    assert (row.tool, row.effect, row.outcome, row.code) == ("okta.get_user", common_pb2.EFFECT_READ, "ok", "OK")
    assert row.arguments["user"] == CAROL and row.latency.ToNanoseconds() > 0 and row.run_id
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.stub.ListAuditEvents(registry_service_pb2.ListAuditEventsRequest(
            tenant_id="acme", page_token="garbage"), metadata=operator, timeout=5)
    assert details_of(info.value).field_violations[0][0] == "page_token"


async def test_credentials_never_reach_audit_rows_logs_or_the_database_in_clear(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    await stack.invoke(ALICE, "servicenow.create_incident", {"short_description": "token leak check"})
    await stack.refused(ALICE, "okta.reset_password", {"user": BOB})
    tokens = {t for sb in stack.sandboxes.sandboxes.values()
              for t in (*sb.tokens._access, *sb.tokens._refresh)}
    assert tokens
    admin = await asyncpg.connect(stack.admin_dsn)
    try:
        audit = "\n".join(str(dict(r)) for r in await admin.fetch("SELECT * FROM registry.audit"))
        stored = b"".join(r[0] for r in await admin.fetch("SELECT ciphertext FROM registry.secrets"))
        links = "\n".join(str(dict(r)) for r in await admin.fetch("SELECT * FROM registry.links"))
    finally:
        await admin.close()
    logs = caplog.text
    for token in tokens:
        assert token not in audit and token not in logs and token not in links
        assert token.encode() not in stored


# --- manifests and health ------------------------------------------------------------------------------------------
class EchoVendor:
    """A connector whose manifest version a test chooses (the shipped connectors' versions are constants)."""

    def __init__(self, version: str, actions: tuple[str, ...]) -> None:
        self.manifest: dict[str, Any] = {
            "connector": "echo", "version": version, "display_name": "Echo",
            "actions": [{"name": name, "description": f"Echoes ({name}).", "effect": "READ", "scopes": ["echo"],
                         "examples": ["echo a", "echo b", "echo c"],
                         "arguments_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
                         "result_schema": {"type": "object"}} for name in actions],
        }

    async def invoke(self, ctx: CallContext) -> ActionResult:
        return ActionResult({"text": ctx.arguments.get("text", "")}, "echoed")

    async def close(self) -> None:
        return None


async def test_new_connector_versions_and_health_are_picked_up(stack: Stack, mesh_config: MeshConfig) -> None:
    operator = client.metadata(stack.operator())
    policy = struct_pb2.Struct()
    policy.update({"connectors": ["echo"], "rules": [{"effect": "allow", "groups": ["Everyone"],
                                                      "tools": ["echo.*"]}]})
    await stack.stub.UpsertTenant(registry_service_pb2.UpsertTenantRequest(
        tenant=registry_pb2.Tenant(tenant_id="hooli", policy=policy)), metadata=operator, timeout=5)
    first = await create_connector_server(mesh_config, EchoVendor("1", ("say",)))
    port = first.port
    registered = await stack.stub.RegisterConnector(registry_service_pb2.RegisterConnectorRequest(
        registration=registry_pb2.ConnectorRegistration(tenant_id="hooli", connector="echo",
                                                        endpoint=f"127.0.0.1:{port}")), metadata=operator, timeout=5)
    assert registered.registration.manifest_version == "1"
    user = stack.minter.mint_user("hooli", "gavin@hooli.example", ["Everyone"])
    await stack.stub.PutCredential(registry_service_pb2.PutCredentialRequest(
        tenant_id="hooli", connector="echo", user="gavin@hooli.example",
        credential=connector_pb2.Credential(kind=connector_pb2.CREDENTIAL_KIND_USER, token="echo-token")),
        metadata=operator, timeout=5)
    assert {(t.name, t.version) for t in (await _tools(stack, user)).tools} == {("echo.say", "1")}
    await first.stop(0)
    second = await create_connector_server(mesh_config.model_copy(update={"port": port}),
                                           EchoVendor("2", ("say", "shout")))
    try:
        assert stack.registry.watcher is not None
        assert await stack.registry.watcher.check_all() >= 1
        assert {(t.name, t.version) for t in (await _tools(stack, user)).tools} == {("echo.say", "2"),
                                                                                    ("echo.shout", "2")}
        answer = await stack.invoke(user, "echo.shout", {"text": "hi"})
        assert answer.result["text"] == "hi"
    finally:
        await second.stop(0)
    await stack.registry.watcher.check_all()
    listed = await stack.stub.ListConnectors(registry_service_pb2.ListConnectorsRequest(tenant_id="hooli"),
                                             metadata=operator, timeout=5)
    assert [(r.connector, r.healthy) for r in listed.registrations] == [("echo", False)]
    details = await stack.refused(user, "echo.say", {"text": "hi"})
    assert details.code == grpc.StatusCode.UNAVAILABLE
    await stack.stub.DeleteConnector(registry_service_pb2.DeleteConnectorRequest(tenant_id="hooli", connector="echo"),
                                     metadata=operator, timeout=5)
    assert not (await _tools(stack, user)).tools
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.stub.DeleteConnector(registry_service_pb2.DeleteConnectorRequest(tenant_id="hooli",
                                                                                     connector="echo"),
                                         metadata=operator, timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_registering_an_endpoint_that_is_not_that_connector_is_refused(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.stub.RegisterConnector(registry_service_pb2.RegisterConnectorRequest(
            registration=registry_pb2.ConnectorRegistration(
                tenant_id="acme", connector="jira", endpoint=stack.endpoints["services"]["connector-okta"])),
            metadata=client.metadata(stack.operator()), timeout=5)
    assert details_of(info.value).field_violations[0][0] == "registration.endpoint"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.stub.RegisterConnector(registry_service_pb2.RegisterConnectorRequest(
            registration=registry_pb2.ConnectorRegistration(tenant_id="acme", connector="jira",
                                                            endpoint="127.0.0.1:1")),
            metadata=client.metadata(stack.operator()), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.stub.RegisterConnector(registry_service_pb2.RegisterConnectorRequest(
            registration=registry_pb2.ConnectorRegistration(tenant_id="Acme!", connector="", endpoint="nowhere",
                                                            oauth=registry_pb2.OAuthClient(token_url="ftp://x"))),
            metadata=client.metadata(stack.operator()), timeout=5)
    assert {f for f, _ in details_of(info.value).field_violations} == {
        "registration.tenant_id", "registration.connector", "registration.endpoint", "registration.oauth.token_url",
        "registration.oauth"}


async def test_tenant_policy_is_validated_with_field_paths(stack: Stack) -> None:
    policy = struct_pb2.Struct()
    policy.update({"rules": [{"effect": "permit", "groups": ["Everyone"], "tools": ["*"]},
                             {"effect": "allow", "groups": [], "tools": ["x"], "subject": "others"}]})
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.stub.UpsertTenant(registry_service_pb2.UpsertTenantRequest(
            tenant=registry_pb2.Tenant(tenant_id="acme", policy=policy)),
            metadata=client.metadata(stack.operator()), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in details_of(info.value).field_violations} == {
        "tenant.policy.rules[0].effect", "tenant.policy.rules[1].groups", "tenant.policy.rules[1].subject"}
    tenant = await stack.stub.GetTenant(registry_service_pb2.GetTenantRequest(tenant_id="acme"),
                                        metadata=client.metadata(stack.operator()), timeout=5)
    assert len(tenant.tenant.policy["rules"]) == 7  # unchanged


async def _cli(stack: Stack, state: Path, *argv: str) -> int:
    import argparse

    from connectors.registry.cli import register

    parser = argparse.ArgumentParser(prog="agentmesh")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([*argv[:2], "--state-dir", str(state), *argv[2:]] if argv[0] == "tenant"
                             else [argv[0], "--state-dir", str(state), *argv[1:]])
    result: int = await args.func(args)
    return result


async def test_cli_reads_tenants_links_and_the_audit_log(stack: Stack, keyring: KeyRing, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "endpoints.json").write_text(json.dumps({**stack.endpoints, "keys_dir": str(keyring.folder)}))
    await stack.invoke(ERIN, "okta.get_user", {"user": "Frank"})
    capsys.readouterr()
    assert await _cli(stack, tmp_path, "tenant", "list") == 0
    listed = capsys.readouterr().out
    assert "acme" in listed and "globex" in listed
    assert await _cli(stack, tmp_path, "tenant", "show", "acme") == 0
    shown = capsys.readouterr().out
    assert "rule 5: deny  Contractors -> salesforce.*, okta.list_apps" in shown
    assert "okta" in shown and "healthy" in shown and "service credential" in shown
    assert await _cli(stack, tmp_path, "audit", "--tenant", "acme", "--since", "1h", "--user", ERIN, "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows and all(r["user"] == ERIN for r in rows)
    assert any(r.get("tool") == "okta.get_user" and r["arguments"]["user"] == FRANK for r in rows)
    assert await _cli(stack, tmp_path, "audit", "--tenant", "acme", "--since", "10m") == 0
    assert "okta.get_user" in capsys.readouterr().out
    assert await _cli(stack, tmp_path, "tenant", "link-url", "--tenant", "acme", "--user", BOB,
                      "--connector", "okta") == 0
    assert capsys.readouterr().out.startswith(stack.sandboxes.base_urls["okta"]["acme"] + "/oauth2/v1/authorize?")
    assert await _cli(stack, tmp_path, "tenant", "unlink", "--tenant", "globex", "--user", IVAN,
                      "--connector", "okta") == 0
    assert (await stack.refused(IVAN, "okta.get_user", {})).reason == "ACCOUNT_NOT_LINKED"
    assert await _cli(stack, tmp_path, "audit", "--tenant", "Not A Tenant") == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err
    assert await _cli(stack, tmp_path, "audit", "--tenant", "acme", "--since", "yesterday") == 2


async def test_seeding_again_changes_no_configuration_and_renews_tokens(stack: Stack) -> None:
    operator = client.metadata(stack.operator())

    async def snapshot() -> tuple[Any, ...]:
        tenants = [await stack.stub.GetTenant(registry_service_pb2.GetTenantRequest(tenant_id=t),
                                              metadata=operator, timeout=5) for t in ("acme", "globex")]
        registrations = [await stack.stub.ListConnectors(registry_service_pb2.ListConnectorsRequest(tenant_id=t),
                                                         metadata=operator, timeout=5) for t in ("acme", "globex")]
        people = [await stack.stub.ListPeople(registry_service_pb2.ListPeopleRequest(),
                                              metadata=client.metadata(stack.user(u)), timeout=5)
                  for u in (ALICE, JUDY)]
        links = [sorted((link.connector, link.linked) for link in (await stack.stub.ListAccountLinks(
            registry_service_pb2.ListAccountLinksRequest(), metadata=client.metadata(stack.user(u)),
            timeout=5)).links) for u in GROUPS]
        return tuple(tenants), tuple(registrations), tuple(people), links

    await seed_demo(stack.endpoints, stack.minter)  # restores what earlier tests unlinked
    before = await snapshot()
    assert all(linked for user_links in before[3] for _, linked in user_links)
    # A restarted sandbox forgets the tokens it issued; seeding again makes the demo users' calls work again.
    stack.sandbox("jira").tokens = type(stack.sandbox("jira").tokens)()
    details = await stack.refused(ALICE, "jira.search_issues", {})
    assert details.reason == "VENDOR_UNAUTHENTICATED"
    await seed_demo(stack.endpoints, stack.minter)
    assert await snapshot() == before
    await stack.invoke(ALICE, "jira.search_issues", {})


async def test_zz_every_invoke_of_the_session_has_exactly_one_audit_row(stack: Stack) -> None:
    """Runs last in this module: every Invoke made above, allowed, denied or failed, left exactly one row."""
    await stack.invoke(ALICE, "okta.get_user", {})
    await stack.refused(ALICE, "okta.reset_password", {"user": BOB})
    await stack.refused(ALICE, "servicenow.get_incident", {"number": "INC9999999"})
    admin = await asyncpg.connect(stack.admin_dsn)
    try:
        rows = await admin.fetch("SELECT tenant_id, request_id, count(*) AS n FROM registry.audit "
                                 "WHERE kind = 'tool_call' GROUP BY tenant_id, request_id")
    finally:
        await admin.close()
    counts = {(r["tenant_id"], r["request_id"]): r["n"] for r in rows}
    made = Counter(stack.invoked)
    assert {call: counts.get(call, 0) for call in made} == dict(made)
