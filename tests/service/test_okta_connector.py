"""The Okta connector through its gRPC server against the Okta sandbox: actions, permissions, paging, faults."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from jsonschema import Draft202012Validator

from agentmesh.connector.v1 import connector_pb2, connector_service_pb2, connector_service_pb2_grpc
from connectors.common.fixturegen import fixtures_with_generated
from connectors.common.sandbox import start_sandboxes
from connectors.common.server import create_connector_server
from connectors.okta.manifest import ACTIONS
from connectors.okta.sandbox import OktaSandbox
from connectors.okta.vendor import OktaVendor
from mesh import client
from mesh.errors import ErrorDetails, details_of
from mesh.principal import Minter

SEED = 20261126
PAGE = 5  # the connector's page size here: acme's 11 groups already take three pages
FIXTURES = fixtures_with_generated(SEED)
GENERATED = next(t for t in FIXTURES if t not in ("acme", "globex"))
EFFECTS = {a["name"]: a["effect"] for a in ACTIONS}
RESULTS = {a["name"]: Draft202012Validator(a["result_schema"]) for a in ACTIONS}
USER = connector_pb2.CREDENTIAL_KIND_USER
SERVICE = connector_pb2.CREDENTIAL_KIND_SERVICE
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=5)

ALICE, BOB, CAROL = "alice.nguyen@acme.example", "bob.smith@acme.example", "carol.diaz@acme.example"
ERIN, FRANK, HENRY = "erin.walsh@acme.example", "frank.miller@acme.example", "henry.park@acme.example"


def person(tenant: str, email: str) -> dict[str, Any]:
    return next(u for u in FIXTURES[tenant]["users"] if u["email"] == email)


@dataclass
class Env:
    """The running sandbox and connector, and the calls a test makes on them."""

    sandbox: OktaSandbox
    base_urls: dict[str, str]
    stub: connector_service_pb2_grpc.ConnectorServiceStub
    http: aiohttp.ClientSession
    minter: Minter
    tokens: dict[tuple[str, str, tuple[str, ...]], str] = field(default_factory=dict)

    async def token(self, tenant: str, user: str | None = None, scopes: tuple[str, ...] = ()) -> str:
        """A sandbox access token for a user, or the tenant's service (API) token when user is None."""
        cache = (tenant, user or "", scopes)
        if cache not in self.tokens:
            body: dict[str, Any] = {"tenant": tenant, "service": True} if user is None else {
                "tenant": tenant, "user": user, "scopes": list(scopes)}
            async with self.http.post(f"{self.base_urls[tenant]}/__sandbox/tokens", json=body) as resp:
                self.tokens[cache] = (await resp.json())["access_token"]
        return self.tokens[cache]

    async def invoke(self, action: str, arguments: dict[str, Any] | None = None, *, user: str = ALICE,
                     tenant: str = "acme", key: str | None = None, token: str | None = None, kind: int = USER,
                     scheme: str = "Bearer", deadline_s: float = 5.0) -> tuple[dict[str, Any], str, bool]:
        """Calls the connector as `user` (principal and, by default, their own token); checks the result schema."""
        groups = person(tenant, user)["groups"] if any(u["email"] == user for u in FIXTURES[tenant]["users"]) else []
        principal = self.minter.mint_user(tenant, user, groups)
        args = struct_pb2.Struct()
        args.update(arguments or {})
        if key is None:
            key = uuid.uuid4().hex if EFFECTS.get(action) == "WRITE" else ""
        request = connector_service_pb2.InvokeRequest(
            action=action, arguments=args, idempotency_key=key,
            credential=connector_pb2.Credential(kind=kind, scheme=scheme,  # type: ignore[arg-type]
                                                token=token if token is not None else await self.token(tenant, user)),
            instance=connector_pb2.InstanceSettings(base_url=self.base_urls[tenant]))
        response = await self.stub.Invoke(request, metadata=client.metadata(principal), timeout=deadline_s)
        result = json_format.MessageToDict(response.result)
        errors = [e.message for e in RESULTS[action].iter_errors(result)]
        assert not errors, errors
        assert response.summary
        return result, response.summary, response.replayed

    async def api(self, tenant: str, method: str, path: str, body: Any = None,
                  token: str | None = None) -> tuple[int, Any, aiohttp.ClientResponse]:
        """A raw call on the sandbox's Okta API (the service token by default), as any Okta client would."""
        scheme = "SSWS" if token is None else "Bearer"
        headers = {"Authorization": f"{scheme} {token or await self.token(tenant)}"}
        async with self.http.request(method, f"{self.base_urls[tenant]}{path}", json=body, headers=headers) as resp:
            data = await resp.json(content_type=None) if await resp.read() else None
            return resp.status, data, resp

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, f"{self.base_urls['acme']}/__sandbox{path}", json=body) as resp:
            return await resp.json()

    async def user_status(self, tenant: str, email: str) -> str:
        status, body, _ = await self.api(tenant, "GET", f"/api/v1/users/{email}")
        assert status == 200
        return str(body["status"])

    async def group_names(self, tenant: str, email: str) -> set[str]:
        uid = person(tenant, email)["okta_id"]
        status, body, _ = await self.api(tenant, "GET", f"/api/v1/users/{uid}/groups")
        assert status == 200
        return {g["profile"]["name"] for g in body}


async def fails(call: Awaitable[Any]) -> ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return details_of(info.value)


@pytest.fixture(scope="module")
async def env(mesh_config, minter):
    sandbox = OktaSandbox(FIXTURES)
    running = await start_sandboxes([sandbox])
    vendor = OktaVendor(page_size=PAGE)
    server = await create_connector_server(mesh_config, vendor)
    channel = client.channel(f"127.0.0.1:{server.port}")
    http = aiohttp.ClientSession(timeout=HTTP_TIMEOUT)
    yield Env(sandbox, running.base_urls["okta"], connector_service_pb2_grpc.ConnectorServiceStub(channel), http,
              minter)
    await http.close()
    await channel.close()
    await server.stop(0)
    await vendor.close()
    await running.close()


@pytest.fixture(autouse=True)
async def fresh(env):
    await env.admin("POST", "/reset")
    yield


# --- Describe and reads ---------------------------------------------------------------------------------

async def test_describe_serves_every_okta_action(env) -> None:
    response = await env.stub.Describe(connector_service_pb2.DescribeRequest(), timeout=5,
                                       metadata=client.metadata(env.minter.mint_user("acme", ALICE)))
    assert response.manifest.connector == "okta"
    assert [a.name for a in response.manifest.actions] == [a["name"] for a in ACTIONS]


DEMO_USERS = [(t, u["email"]) for t in ("acme", "globex") for u in FIXTURES[t]["users"]]


@pytest.mark.parametrize(("tenant", "email"), DEMO_USERS)
async def test_anyone_reads_a_profile_with_its_manager(env, tenant, email) -> None:
    fixture = person(tenant, email)
    reader = next(u["email"] for u in FIXTURES[tenant]["users"] if u["email"] != email)
    result, summary, _ = await env.invoke("get_user", {"user": email}, user=reader, tenant=tenant)
    assert result["id"] == fixture["okta_id"]
    assert result["name"] == f"{fixture['first_name']} {fixture['last_name']}"
    assert (result["status"], result["title"], result["department"]) == (
        fixture["okta_status"], fixture["title"], fixture["department"])
    if fixture["manager"]:
        boss = person(tenant, fixture["manager"])
        assert result["manager"] == {"name": f"{boss['first_name']} {boss['last_name']}", "email": boss["email"]}
        assert boss["first_name"] in summary
    else:
        assert result["manager"] is None


async def test_me_is_the_requester(env) -> None:
    result, _, _ = await env.invoke("get_user", {}, user=CAROL)
    assert result["email"] == CAROL
    assert result["manager"]["email"] == "grace.lee@acme.example"


async def test_manager_from_profile_manager_when_there_is_no_manager_id(env) -> None:
    profile = env.sandbox.orgs["acme"].users[person("acme", ALICE)["okta_id"]]["profile"]
    profile["managerId"] = None
    assert profile["manager"] == "Carol Diaz"
    result, _, _ = await env.invoke("get_user", {"user": ALICE}, user=BOB)
    assert result["manager"] == {"name": "Carol Diaz", "email": CAROL}


@pytest.mark.parametrize(("tenant", "email"), DEMO_USERS)
async def test_list_groups_reads_memberships(env, tenant, email) -> None:
    reader = FIXTURES[tenant]["users"][0]["email"]
    result, _, _ = await env.invoke("list_groups", {"user": email}, user=reader, tenant=tenant)
    assert {g["name"] for g in result["groups"]} == set(person(tenant, email)["groups"])
    assert result["total"] == len(result["groups"])
    ids = {g["name"]: g["id"] for g in FIXTURES[tenant]["okta"]["groups"]}
    assert all(ids[g["name"]] == g["id"] for g in result["groups"])


@pytest.mark.parametrize("email", [u["email"] for u in FIXTURES["acme"]["users"]])
async def test_list_apps_follow_group_assignments(env, email) -> None:
    groups = set(person("acme", email)["groups"])
    expected = {a["label"] for a in FIXTURES["acme"]["okta"]["apps"] if groups & set(a["groups"])}
    result, _, _ = await env.invoke("list_apps", {"user": email}, user=email)
    assert {a["label"] for a in result["apps"]} == expected
    assert all(a["id"].startswith("0oa") and a["url"].startswith(env.base_urls["acme"]) for a in result["apps"])


# --- lifecycle permissions ------------------------------------------------------------------------------

async def test_reset_own_password_emails_a_link(env) -> None:
    result, _, replayed = await env.invoke("reset_password", {"user": ALICE}, user=ALICE)
    assert result == {"user": {"name": "Alice Nguyen", "email": ALICE}, "status": "RECOVERY",
                      "email_sent_to": ALICE}
    assert not replayed
    assert await env.user_status("acme", ALICE) == "RECOVERY"
    assert (await env.admin("GET", "/counters"))["created"] == {"acme:password_reset_email": 1}


async def test_only_admin_groups_reset_someone_elses_password(env) -> None:
    err = await fails(env.invoke("reset_password", {"user": BOB}, user=ALICE))
    assert (err.code, err.reason, err.metadata["vendor_code"]) == (
        grpc.StatusCode.PERMISSION_DENIED, "VENDOR_DENIED", "E0000006")
    assert await env.user_status("acme", BOB) == "ACTIVE"
    result, _, _ = await env.invoke("reset_password", {"user": BOB}, user=ERIN)
    assert result["status"] == "RECOVERY"
    assert (await env.admin("GET", "/counters"))["created"] == {"acme:password_reset_email": 1}


async def test_locked_out_user_unlocks_themselves_with_the_service_credential(env) -> None:
    result, summary, _ = await env.invoke("unlock_user", {"user": FRANK}, user=FRANK, kind=SERVICE, scheme="SSWS",
                                          token=await env.token("acme"))
    assert (result["previous_status"], result["status"]) == ("LOCKED_OUT", "ACTIVE")
    assert "Frank Miller" in summary
    assert await env.user_status("acme", FRANK) == "ACTIVE"


async def test_locked_out_user_resets_their_password_with_the_service_credential(env) -> None:
    result, _, _ = await env.invoke("reset_password", {}, user=FRANK, kind=SERVICE, scheme="SSWS",
                                    token=await env.token("acme"))
    assert (result["status"], result["email_sent_to"]) == ("RECOVERY", FRANK)
    assert await env.user_status("acme", FRANK) == "RECOVERY"


@pytest.mark.parametrize(("action", "arguments"), [
    ("reset_password", {"user": BOB}),
    ("unlock_user", {"user": FRANK}),
    ("get_user", {"user": ALICE}),
    ("reset_factors", {"user": ALICE}),
    ("add_user_to_group", {"group": "IT-Admins", "user": ALICE}),
])
async def test_service_credential_runs_only_self_service_on_oneself(env, action, arguments) -> None:
    err = await fails(env.invoke(action, arguments, user=ALICE, kind=SERVICE, scheme="SSWS",
                                 token=await env.token("acme")))
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED")
    assert (await env.admin("GET", "/counters"))["calls"] == {}


async def test_unlock_needs_a_locked_out_user(env) -> None:
    err = await fails(env.invoke("unlock_user", {"user": ALICE}, user=ERIN))
    assert (err.code, err.metadata["vendor_code"]) == (grpc.StatusCode.PERMISSION_DENIED, "E0000032")
    assert "not locked out" in err.message


async def test_only_admin_groups_unlock_someone_else(env) -> None:
    err = await fails(env.invoke("unlock_user", {"user": FRANK}, user=ALICE))
    assert err.reason == "VENDOR_DENIED"
    assert await env.user_status("acme", FRANK) == "LOCKED_OUT"
    result, _, _ = await env.invoke("unlock_user", {"user": FRANK}, user=HENRY)
    assert (result["previous_status"], result["status"]) == ("LOCKED_OUT", "ACTIVE")


async def test_factor_resets_work_on_locked_out_users_for_admins_and_on_oneself(env) -> None:
    frank = person("acme", FRANK)["okta_id"]
    _, before, _ = await env.api("acme", "GET", f"/api/v1/users/{frank}/factors")
    assert before
    result, _, _ = await env.invoke("reset_factors", {"user": FRANK}, user=HENRY)
    assert result == {"user": {"name": "Frank Miller", "email": FRANK}, "status": "LOCKED_OUT"}
    _, after, _ = await env.api("acme", "GET", f"/api/v1/users/{frank}/factors")
    assert after == []
    err = await fails(env.invoke("reset_factors", {"user": BOB}, user=ALICE))
    assert err.reason == "VENDOR_DENIED"
    result, _, _ = await env.invoke("reset_factors", {}, user=ALICE)
    assert result["status"] == "ACTIVE"


# --- group membership -----------------------------------------------------------------------------------

async def test_admin_changes_membership_and_app_assignments_follow(env) -> None:
    added, summary, _ = await env.invoke("add_user_to_group", {"group": "users SALESFORCE", "user": ALICE},
                                         user=ERIN)
    assert added["group"]["name"] == "Salesforce-Users"
    assert (added["member"], added["changed"]) == (True, True)
    assert summary.startswith("Added Alice Nguyen")
    apps, _, _ = await env.invoke("list_apps", {}, user=ALICE)
    assert "Salesforce" in {a["label"] for a in apps["apps"]}
    again, _, _ = await env.invoke("add_user_to_group", {"group": "Salesforce-Users", "user": ALICE}, user=ERIN)
    assert (again["member"], again["changed"]) == (True, False)
    removed, _, _ = await env.invoke("remove_user_from_group", {"group": "salesforce", "user": ALICE}, user=ERIN)
    assert (removed["member"], removed["changed"]) == (False, True)
    gone, _, _ = await env.invoke("remove_user_from_group", {"group": "salesforce", "user": ALICE}, user=ERIN)
    assert (gone["member"], gone["changed"]) == (False, False)
    assert "Salesforce-Users" not in await env.group_names("acme", ALICE)
    assert (await env.admin("GET", "/counters"))["created"] == {"acme:group_membership": 1}


async def test_group_by_id_and_an_exact_name_before_partial_matches(env) -> None:
    sales = next(g["id"] for g in FIXTURES["acme"]["okta"]["groups"] if g["name"] == "Sales")
    result, _, _ = await env.invoke("add_user_to_group", {"group": sales, "user": ALICE}, user=HENRY)
    assert result["group"] == {"id": sales, "name": "Sales"}
    result, _, _ = await env.invoke("add_user_to_group", {"group": "it", "user": ALICE}, user=HENRY)
    assert result["group"]["name"] == "IT"


async def test_group_words_matching_several_or_none(env) -> None:
    err = await fails(env.invoke("add_user_to_group", {"group": "users"}, user=ERIN))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "AMBIGUOUS_REFERENCE")
    assert json.loads(err.metadata["candidates"]) == ["Jira-Users", "Salesforce-Users", "VPN-Users"]
    err = await fails(env.invoke("add_user_to_group", {"group": "Finance Readers"}, user=ERIN))
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


async def test_non_admins_cannot_change_membership_even_their_own(env) -> None:
    err = await fails(env.invoke("add_user_to_group", {"group": "IT-Admins", "user": BOB}, user=BOB))
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "VENDOR_DENIED")
    err = await fails(env.invoke("add_user_to_group", {"group": "VPN-Users", "user": BOB}, user=ALICE))
    assert err.reason == "VENDOR_DENIED"
    assert await env.group_names("acme", BOB) == set(person("acme", BOB)["groups"])


async def test_the_built_in_everyone_group_is_okta_managed(env) -> None:
    err = await fails(env.invoke("remove_user_from_group", {"group": "Everyone", "user": ALICE}, user=ERIN))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in err.field_violations] == ["arguments.group"]


async def test_missing_oauth_scope_is_permission_denied(env) -> None:
    token = await env.token("acme", ERIN, ("okta.users.read", "okta.groups.read"))
    err = await fails(env.invoke("add_user_to_group", {"group": "Sales", "user": ALICE}, user=ERIN, token=token))
    assert (err.code, err.metadata["required_scope"]) == (grpc.StatusCode.PERMISSION_DENIED, "okta.groups.manage")


# --- idempotency and faults -----------------------------------------------------------------------------

async def test_a_repeated_key_replays_the_first_result(env) -> None:
    first, _, _ = await env.invoke("reset_password", {"user": BOB}, user=ERIN, key="k-replay")
    second, _, replayed = await env.invoke("reset_password", {"user": BOB}, user=ERIN, key="k-replay")
    assert (second, replayed) == (first, True)
    counters = await env.admin("GET", "/counters")
    assert counters["created"] == {"acme:password_reset_email": 1}
    assert counters["calls"]["acme:POST /api/v1/users/{id}/lifecycle/reset_password"] == 1


async def test_a_key_reused_with_other_arguments_is_refused(env) -> None:
    await env.invoke("reset_factors", {"user": BOB}, user=ERIN, key="k-reused")
    err = await fails(env.invoke("reset_factors", {"user": ALICE}, user=ERIN, key="k-reused"))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")


async def test_reset_after_commit_then_retry_emails_once(env) -> None:
    await env.admin("PUT", "/faults", {"reset_after_commit": 1.0})
    err = await fails(env.invoke("reset_password", {"user": BOB}, user=ERIN, key="k-lost-reset"))
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
    await env.admin("DELETE", "/faults")
    result, _, replayed = await env.invoke("reset_password", {"user": BOB}, user=ERIN, key="k-lost-reset")
    assert (result["status"], replayed) == ("RECOVERY", True)
    counters = await env.admin("GET", "/counters")
    assert counters["created"] == {"acme:password_reset_email": 1}
    assert counters["calls"]["acme:POST /api/v1/users/{id}/lifecycle/reset_password"] == 1


async def test_reset_after_commit_then_retry_reports_the_unlock_it_made(env) -> None:
    await env.admin("PUT", "/faults", {"reset_after_commit": 1.0})
    err = await fails(env.invoke("unlock_user", {"user": FRANK}, user=HENRY, key="k-lost-unlock"))
    assert err.code == grpc.StatusCode.UNAVAILABLE
    await env.admin("DELETE", "/faults")
    result, _, replayed = await env.invoke("unlock_user", {"user": FRANK}, user=HENRY, key="k-lost-unlock")
    assert (result["previous_status"], result["status"], replayed) == ("LOCKED_OUT", "ACTIVE", True)
    calls = (await env.admin("GET", "/counters"))["calls"]
    assert calls["acme:POST /api/v1/users/{id}/lifecycle/unlock"] == 1


async def test_reset_after_commit_then_retry_adds_the_member_once(env) -> None:
    await env.admin("PUT", "/faults", {"reset_after_commit": 1.0})
    err = await fails(env.invoke("add_user_to_group", {"group": "VPN-Users", "user": BOB}, user=ERIN,
                                 key="k-lost-add"))
    assert err.code == grpc.StatusCode.UNAVAILABLE
    await env.admin("DELETE", "/faults")
    result, _, _ = await env.invoke("add_user_to_group", {"group": "VPN-Users", "user": BOB}, user=ERIN,
                                    key="k-lost-add")
    assert (result["member"], result["changed"]) == (True, True)
    assert (await env.admin("GET", "/counters"))["created"] == {"acme:group_membership": 1}


async def test_okta_slower_than_the_deadline_is_unavailable(env) -> None:
    await env.admin("PUT", "/faults", {"latency": {"fixed_ms": 2000}})
    err = await fails(env.invoke("get_user", {"user": BOB}, user=ALICE, deadline_s=1.5))
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
    assert "timed out" in err.message


async def test_rate_limit_is_resource_exhausted_with_retry_info(env) -> None:
    await env.admin("PUT", "/faults", {"rate_limit": 1.0, "retry_after_s": 7})
    status, body, resp = await env.api("acme", "GET", "/api/v1/users/me", token=await env.token("acme", ALICE))
    assert (status, body["errorCode"], resp.headers["X-Rate-Limit-Remaining"]) == (429, "E0000047", "0")
    assert "Retry-After" not in resp.headers
    err = await fails(env.invoke("get_user", {"user": BOB}, user=ALICE))
    assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert err.retry_after_s is not None and 6 <= err.retry_after_s <= 8


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_unavailable(env, status) -> None:
    await env.admin("PUT", "/faults", {"errors": {str(status): 1.0}})
    err = await fails(env.invoke("list_groups", {"user": BOB}, user=ALICE))
    assert (err.code, err.reason, err.metadata["vendor_status"]) == (
        grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", str(status))


# --- arguments, credentials, tenants --------------------------------------------------------------------

@pytest.mark.parametrize(("action", "arguments", "key", "fields"), [
    ("add_user_to_group", {"user": ALICE}, "k", {"arguments.group"}),
    ("get_user", {"user": ""}, "", {"arguments.user"}),
    ("list_apps", {"user": ALICE, "verbose": True}, "", {"arguments.verbose"}),
    ("reset_password", {"user": ALICE}, "", {"idempotency_key"}),
    ("get_user", {"user": "Alice Nguyen"}, "", {"arguments.user"}),
])
async def test_bad_arguments_are_invalid_argument(env, action, arguments, key, fields) -> None:
    err = await fails(env.invoke(action, arguments, user=ALICE, key=key))
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
    assert {f for f, _ in err.field_violations} == fields
    assert (await env.admin("GET", "/counters"))["calls"] == {}


async def test_a_token_okta_refuses_is_unauthenticated(env) -> None:
    err = await fails(env.invoke("get_user", {"user": BOB}, user=ALICE, token="not-a-token"))
    assert (err.code, err.reason, err.metadata["vendor_code"]) == (
        grpc.StatusCode.UNAUTHENTICATED, "VENDOR_UNAUTHENTICATED", "E0000011")
    user_token_as_api_token = await env.token("acme", ALICE)
    err = await fails(env.invoke("get_user", {"user": BOB}, user=ALICE, token=user_token_as_api_token,
                                 scheme="SSWS"))
    assert err.code == grpc.StatusCode.UNAUTHENTICATED


async def test_an_unknown_email_is_unknown_person(env) -> None:
    err = await fails(env.invoke("get_user", {"user": "nobody@acme.example"}, user=ALICE))
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_PERSON")


async def test_tenants_are_isolated(env) -> None:
    assert env.base_urls["acme"] != env.base_urls["globex"]
    err = await fails(env.invoke("get_user", {"user": "ivan.petrov@globex.example"}, user=ALICE))
    assert err.reason == "UNKNOWN_PERSON"
    globex_token = await env.token("globex", "ivan.petrov@globex.example")
    err = await fails(env.invoke("get_user", {"user": BOB}, user=ALICE, token=globex_token))
    assert err.reason == "VENDOR_UNAUTHENTICATED"
    result, _, _ = await env.invoke("list_groups", {}, user="ivan.petrov@globex.example", tenant="globex")
    assert "Sales" not in {g["name"] for g in result["groups"]}


async def test_account_linking_through_oauth_code_and_refresh(env) -> None:
    base = env.base_urls["acme"]
    params = {"response_type": "code", "client_id": "agentmesh", "redirect_uri": "http://localhost/cb",
              "login_hint": CAROL, "scope": "okta.users.read okta.groups.read", "state": "s1"}
    async with env.http.get(f"{base}/oauth2/v1/authorize", params=params, allow_redirects=False) as resp:
        assert resp.status == 302
        code = resp.headers["Location"].split("code=")[1].split("&")[0]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": "http://localhost/cb",
            "client_id": "agentmesh", "client_secret": "agentmesh-sandbox-secret"}
    async with env.http.post(f"{base}/oauth2/v1/token", data=form) as resp:
        tokens = await resp.json()
    result, _, _ = await env.invoke("list_groups", {}, user=CAROL, token=tokens["access_token"])
    assert "Managers" in {g["name"] for g in result["groups"]}
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": "agentmesh",
            "client_secret": "agentmesh-sandbox-secret"}
    async with env.http.post(f"{base}/oauth2/v1/token", data=form) as resp:
        refreshed = await resp.json()
    result, _, _ = await env.invoke("get_user", {}, user=CAROL, token=refreshed["access_token"])
    assert result["email"] == CAROL


# --- the vendor API itself: paging, query language ------------------------------------------------------

async def test_paging_follows_next_links_across_many_groups(env) -> None:
    for n in range(1, 13):
        status, _, _ = await env.api("acme", "POST", "/api/v1/groups",
                                     {"profile": {"name": f"Project Falcon {n:02d}", "description": "pilot"}})
        assert status == 200
    status, page, resp = await env.api("acme", "GET", "/api/v1/groups?limit=10")
    links = resp.headers.getall("Link")
    assert (status, len(page), len(links)) == (200, 10, 2)
    assert links[0].endswith('rel="self"') and links[1].endswith('rel="next"')
    assert links[1].startswith(f"<{env.base_urls['acme']}/api/v1/groups?")
    result, _, _ = await env.invoke("add_user_to_group", {"group": "falcon 12", "user": ALICE}, user=ERIN)
    assert result["group"]["name"] == "Project Falcon 12"
    for n in range(1, 12):
        gid = next(g["id"] for g in env.sandbox.orgs["acme"].groups.values()
                   if g["profile"]["name"] == f"Project Falcon {n:02d}")
        status, _, _ = await env.api("acme", "PUT", f"/api/v1/groups/{gid}/users/{person('acme', ALICE)['okta_id']}")
        assert status == 204
    groups, _, _ = await env.invoke("list_groups", {}, user=ALICE)
    assert groups["total"] == len(person("acme", ALICE)["groups"]) + 12
    calls = (await env.admin("GET", "/counters"))["calls"]
    assert calls["acme:GET /api/v1/groups"] >= (11 + 12) // PAGE + 1
    assert calls["acme:GET /api/v1/users/{id}/groups"] >= (4 + 12) // PAGE + 1


@pytest.mark.parametrize(("query", "code"), [
    ('search=profile.email co "acme"', "E0000031"),
    ('filter=lastUpdated gt "2026-01-01T00:00:00.000Z"', "E0000031"),
    ('search=profile.email eq "a@b.c" or', "E0000031"),
    ('search=status eq "ACTIVE"&filter=status eq "ACTIVE"', "E0000033"),
])
async def test_queries_outside_the_subset_get_oktas_error(env, query, code) -> None:
    status, body, _ = await env.api("acme", "GET", f"/api/v1/users?{query}")
    assert (status, body["errorCode"]) == (400, code)


async def test_the_query_subset_answers_like_okta(env) -> None:
    _, body, _ = await env.api("acme", "GET", '/api/v1/users?search=profile.lastName sw "d" or profile.lastName sw "l"'
                                              "&sortBy=profile.lastName&sortOrder=desc")
    assert [u["profile"]["lastName"] for u in body] == ["Lee", "Diaz"]
    _, body, _ = await env.api("acme", "GET", '/api/v1/users?filter=status eq "LOCKED_OUT"')
    assert [u["id"] for u in body] == [person("acme", FRANK)["okta_id"]]
    _, body, resp = await env.api("acme", "GET", "/api/v1/users?q=h")
    assert {u["profile"]["firstName"] for u in body} == {"Henry"}
    assert len(resp.headers.getall("Link")) == 1
    _, body, _ = await env.api("acme", "GET", '/api/v1/groups?search=profile.name sw "it" and type eq "OKTA_GROUP"')
    assert {g["profile"]["name"] for g in body} == {"IT", "IT-Admins"}


async def test_a_quote_in_a_searched_email_cannot_widen_the_search(env) -> None:
    err = await fails(env.invoke("get_user", {"user": 'x"or"1@acme.example'}, user=ALICE))
    assert err.reason == "UNKNOWN_PERSON"
    status, body, _ = await env.api("acme", "GET", '/api/v1/users?search=status eq "LOCKED_OUT"')
    assert (status, [u["profile"]["email"] for u in body]) == (200, [FRANK])


# --- a generated tenant: permissions come from groups, not names ----------------------------------------

async def test_generated_tenant_permissions_derive_from_admin_group_membership(env) -> None:
    data = FIXTURES[GENERATED]
    admin_groups = set(data["okta"]["admin_groups"])
    admins = [u["email"] for u in data["users"] if admin_groups & set(u["groups"])]
    locked = next(u["email"] for u in data["users"] if u["okta_status"] == "LOCKED_OUT")
    others = [u["email"] for u in data["users"] if u["email"] not in admins and u["email"] != locked]
    newcomer, colleague = others[0], others[1]

    result, _, _ = await env.invoke("get_user", {"user": locked}, user=newcomer, tenant=GENERATED)
    assert result["status"] == "LOCKED_OUT"
    err = await fails(env.invoke("reset_password", {"user": colleague}, user=newcomer, tenant=GENERATED))
    assert err.reason == "VENDOR_DENIED"
    err = await fails(env.invoke("unlock_user", {"user": locked}, user=newcomer, tenant=GENERATED))
    assert err.reason == "VENDOR_DENIED"

    result, _, _ = await env.invoke("unlock_user", {"user": locked}, user=admins[0], tenant=GENERATED)
    assert result["status"] == "ACTIVE"
    admin_group = sorted(admin_groups)[0]
    result, _, _ = await env.invoke("add_user_to_group", {"group": admin_group, "user": newcomer}, user=admins[0],
                                    tenant=GENERATED)
    assert result["changed"]
    result, _, _ = await env.invoke("reset_password", {"user": colleague}, user=newcomer, tenant=GENERATED)
    assert result["status"] == "RECOVERY"
