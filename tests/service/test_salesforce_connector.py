"""The Salesforce connector over real gRPC against the Salesforce sandbox: actions, sharing, SOQL, paging, faults."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
import grpc
import jsonschema
import pytest
from google.protobuf import json_format, struct_pb2

from agentmesh.connector.v1 import connector_pb2, connector_service_pb2, connector_service_pb2_grpc
from connectors.common.fixturegen import generate_tenant
from connectors.common.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, load_fixtures, start_sandboxes
from connectors.common.server import create_connector_server
from connectors.salesforce import manifest
from connectors.salesforce.client import DAILY_LIMIT_RETRY_AFTER_S, IDEMPOTENCY_FIELD, soql_select, soql_string
from connectors.salesforce.sandbox import DEFAULT_DAILY_API_LIMIT, SalesforceSandbox
from connectors.salesforce.vendor import SalesforceVendor
from mesh import client
from mesh.errors import ErrorDetails, details_of
from mesh.principal import Minter

BOB = "bob.smith@acme.example"  # Sales Rep: owns Initech, Umbrella, Wayne
DAVE = "dave.okafor@acme.example"  # Sales Director: owns Stark, sees every Sales record
ALICE = "alice.nguyen@acme.example"  # no Salesforce user
FRANK = "frank.miller@acme.example"  # contractor, no Salesforce user
RESULT_SCHEMAS = {a["name"]: a["result_schema"] for a in manifest.ACTIONS}
EFFECTS = {a["name"]: a["effect"] for a in manifest.ACTIONS}
API = "/services/data/v60.0"


def _generated_tenant(seed: int) -> dict[str, Any]:
    """The shared generator's random tenant, with one Sales Rep moved to another department and given a deal: the
    director must stop seeing that rep's records (sharing follows departments, not names or emails)."""
    data = generate_tenant(seed)
    rng = random.Random(seed)
    users = data["users"]
    director = next(u for u in users if u["salesforce_profile"] == "Sales Director")
    rep = rng.choice([u for u in users if u["salesforce_profile"] == "Sales Rep"])
    rep["department"] = next(u["department"] for u in users if u["department"] != director["department"])
    rng.choice(data["salesforce"]["opportunities"])["owner"] = rep["email"]
    return data


@dataclass
class Stack:
    """The sandbox, the connector's gRPC server and the calls a test makes to them."""

    sandbox: SalesforceSandbox
    base_urls: dict[str, str]
    stub: connector_service_pb2_grpc.ConnectorServiceStub
    http: aiohttp.ClientSession
    minter: Minter
    generated: dict[str, Any]
    tokens: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def person(self, tenant: str, email: str) -> dict[str, Any]:
        return next(p for p in self.sandbox.fixtures[tenant]["users"] if p["email"] == email)

    async def token_response(self, user: str, tenant: str = "acme") -> dict[str, Any]:
        if (tenant, user) not in self.tokens:
            async with self.http.post(self.base_urls[tenant] + "/__sandbox/tokens",
                                      json={"tenant": tenant, "user": user}) as resp:
                assert resp.status == 200
                self.tokens[tenant, user] = await resp.json()
        return self.tokens[tenant, user]

    async def invoke(self, user: str, action: str, args: dict[str, Any], *, key: str | None = None,
                     tenant: str = "acme", token: str | None = None,
                     deadline_s: float = 5.0) -> tuple[dict[str, Any], str, bool]:
        if token is None:
            token = (await self.token_response(user, tenant))["access_token"]
        arguments = struct_pb2.Struct()
        arguments.update(args)
        if key is None:
            key = f"test-{uuid.uuid4()}" if EFFECTS[action] == "WRITE" else ""
        request = connector_service_pb2.InvokeRequest(
            action=action, arguments=arguments, idempotency_key=key,
            credential=connector_pb2.Credential(kind=connector_pb2.CREDENTIAL_KIND_USER, token=token, scheme="Bearer"),
            instance=connector_pb2.InstanceSettings(instance_url=self.base_urls[tenant], api_version="v60.0"))
        principal = self.minter.mint_user(tenant, user, self.person(tenant, user)["groups"])
        response = await self.stub.Invoke(request, metadata=client.metadata(principal), timeout=deadline_s)
        result = json_format.MessageToDict(response.result)
        jsonschema.validate(result, RESULT_SCHEMAS[action])
        return result, response.summary, response.replayed

    async def fail(self, user: str, action: str, args: dict[str, Any], **kwargs: Any) -> ErrorDetails:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await self.invoke(user, action, args, **kwargs)
        return details_of(info.value)

    async def rest(self, method: str, path: str, user: str = BOB, tenant: str = "acme",
                   **kwargs: Any) -> tuple[int, Any, Any]:
        token = (await self.token_response(user, tenant))["access_token"]
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        async with self.http.request(method, self.base_urls[tenant] + path, headers=headers, **kwargs) as resp:
            body = await resp.json() if resp.content_type == "application/json" else None
            return resp.status, resp.headers, body

    async def faults(self, **faults: Any) -> None:
        async with self.http.put(self.base_urls["acme"] + "/__sandbox/faults", json=faults) as resp:
            assert resp.status == 200

    async def counters(self) -> dict[str, dict[str, int]]:
        async with self.http.get(self.base_urls["acme"] + "/__sandbox/counters") as resp:
            return await resp.json()


@pytest.fixture(scope="module")
async def stack(mesh_config, minter):
    generated = _generated_tenant(random.randrange(1 << 30))
    fixtures = {**load_fixtures(), generated["tenant"]["id"]: generated}
    sandbox = SalesforceSandbox(fixtures)
    sandboxes = await start_sandboxes([sandbox])
    vendor = SalesforceVendor()
    server = await create_connector_server(mesh_config, vendor)
    channel = client.channel(f"127.0.0.1:{server.port}")
    http = aiohttp.ClientSession()
    yield Stack(sandbox, sandboxes.base_urls["salesforce"], connector_service_pb2_grpc.ConnectorServiceStub(channel),
                http, minter, generated)
    await http.close()
    await channel.close()
    await server.stop(0)
    await vendor.close()
    await sandboxes.close()


@pytest.fixture(autouse=True)
async def fresh(stack: Stack):
    """Every test starts from the fixtures (every tenant's), without faults and with zeroed counters."""
    async with stack.http.post(stack.base_urls["acme"] + "/__sandbox/reset") as resp:
        assert resp.status == 200
    stack.sandbox.daily_api_limit = DEFAULT_DAILY_API_LIMIT
    yield


def _names(rows: list[dict[str, Any]]) -> list[str]:
    return [r["name"] for r in rows]


# --- the sandbox as a vendor: origins, OAuth, headers ---------------------------------------------------------------
async def test_each_tenant_has_its_own_origin_and_the_token_carries_instance_url(stack: Stack) -> None:
    acme, generated = stack.base_urls["acme"], stack.base_urls[stack.generated["tenant"]["id"]]
    assert "globex" not in stack.base_urls  # globex has no Salesforce
    for base in (acme, generated):
        assert urlparse(base).path == "" and urlparse(base).port
    assert urlparse(acme).port != urlparse(generated).port
    token = await stack.token_response(BOB)
    assert token["instance_url"] == acme
    assert token["id"].endswith("/005ACME00000001AAA") and token["token_type"] == "Bearer"


async def test_oauth_authorization_code_and_refresh_return_instance_url(stack: Stack) -> None:
    base = stack.base_urls["acme"]
    redirect = "http://127.0.0.1/callback"
    async with stack.http.get(base + "/services/oauth2/authorize", allow_redirects=False, params={
            "response_type": "code", "client_id": SANDBOX_CLIENT_ID, "redirect_uri": redirect,
            "login_hint": DAVE, "state": "xyz"}) as resp:
        assert resp.status == 302
        query = parse_qs(urlparse(resp.headers["Location"]).query)
    assert query["state"] == ["xyz"]
    form = {"grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": redirect,
            "client_id": SANDBOX_CLIENT_ID, "client_secret": SANDBOX_CLIENT_SECRET}
    async with stack.http.post(base + "/services/oauth2/token", data=form) as resp:
        issued = await resp.json()
    assert issued["instance_url"] == base and issued["refresh_token"]
    form = {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"], "client_id": SANDBOX_CLIENT_ID,
            "client_secret": SANDBOX_CLIENT_SECRET}
    async with stack.http.post(base + "/services/oauth2/token", data=form) as resp:
        refreshed = await resp.json()
    assert refreshed["instance_url"] == base and refreshed["access_token"] != issued["access_token"]
    result, _, _ = await stack.invoke(DAVE, "list_opportunities", {"owner": "me"}, token=refreshed["access_token"])
    assert _names(result["opportunities"]) == ["Stark Pilot"]


async def test_every_api_response_carries_sforce_limit_info(stack: Stack) -> None:
    statuses, limits = [], []
    for path in (f"{API}/query?q=SELECT+Id+FROM+Account", f"{API}/query?q=SELECT+Nope",
                 f"{API}/sobjects/Opportunity/006ACME00000003AAA", f"{API}/sobjects/Opportunity/006ACME00000001AAA"):
        status, headers, _ = await stack.rest("GET", path)
        statuses.append(status)
        limits.append(headers["Sforce-Limit-Info"])
    assert statuses == [200, 400, 404, 200]  # Stark Pilot is Dave's: a rep gets 404, as for a missing record
    assert limits == [f"api-usage={n}/{DEFAULT_DAILY_API_LIMIT}" for n in (1, 2, 3, 4)]
    async with stack.http.get(stack.base_urls["acme"] + "/services/data/") as resp:
        assert "Sforce-Limit-Info" not in resp.headers
        assert {"label": "Spring '24", "url": "/services/data/v60.0", "version": "60.0"} in await resp.json()


async def test_error_bodies_are_json_arrays(stack: Stack) -> None:
    status, _, body = await stack.rest("GET", f"{API}/sobjects/Nope/001ACME00000001AAA")
    assert (status, body) == (404, [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}])
    status, _, body = await stack.rest("POST", f"{API}/sobjects/Opportunity", json={"Name": "No stage"})
    assert status == 400 and body[0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert set(body[0]["fields"]) == {"StageName", "CloseDate"}
    async with stack.http.get(stack.base_urls["acme"] + f"{API}/query", params={"q": "SELECT Id FROM Account"},
                              headers={"Authorization": "Bearer nope"}) as resp:
        assert resp.status == 401
        assert await resp.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


# --- READ actions and sharing ---------------------------------------------------------------------------------------
async def test_find_account_matches_every_word_within_sharing(stack: Stack) -> None:
    result, summary, _ = await stack.invoke(BOB, "find_account", {"name": "initech"})
    assert result == {"total": 1, "accounts": [{"id": "001ACME00000001AAA", "name": "Initech", "industry": "Technology",
                                                "owner": {"name": "Bob Smith", "email": BOB}}]}
    assert "Initech" in summary
    result, _, _ = await stack.invoke(BOB, "find_account", {"name": "Industries Stark"})
    assert result["total"] == 0  # Dave's account: a rep does not see it
    result, _, _ = await stack.invoke(DAVE, "find_account", {"name": "industries stark"})
    assert _names(result["accounts"]) == ["Stark Industries"]
    assert result["accounts"][0]["owner"] == {"name": "Dave Okafor", "email": DAVE}


async def test_rep_lists_own_open_opportunities_soonest_first(stack: Stack) -> None:
    result, summary, _ = await stack.invoke(BOB, "list_opportunities", {"owner": "me"})
    assert _names(result["opportunities"]) == ["Initech Renewal 2027", "Umbrella Expansion",
                                               "Wayne Enterprise License"]
    assert result["total"] == 3 and summary.startswith("Bob Smith has 3 open opportunities")
    first = result["opportunities"][0]
    assert first == {"id": "006ACME00000001AAA", "name": "Initech Renewal 2027", "account": "Initech",
                     "amount": 48000, "stage": "Negotiation/Review", "close_date": "2026-12-15",
                     "owner": {"name": "Bob Smith", "email": BOB}}
    result, _, _ = await stack.invoke(BOB, "list_opportunities", {"owner": BOB, "min_amount": 100000})
    assert _names(result["opportunities"]) == ["Umbrella Expansion", "Wayne Enterprise License"]
    result, _, _ = await stack.invoke(BOB, "list_opportunities", {"owner": DAVE})
    assert result == {"opportunities": [], "total": 0}  # Dave's records are not shared with a rep


async def test_director_sees_every_sales_record(stack: Stack) -> None:
    result, _, _ = await stack.invoke(DAVE, "list_opportunities", {"owner": BOB})
    assert result["total"] == 3
    result, _, _ = await stack.invoke(DAVE, "list_opportunities", {})  # owner defaults to "me"
    assert _names(result["opportunities"]) == ["Stark Pilot"]
    result, _, _ = await stack.invoke(DAVE, "query", {"soql": "SELECT Name FROM Opportunity ORDER BY Name"})
    assert result["total"] == 4


async def test_list_opportunities_filters(stack: Stack) -> None:
    by_stage, _, _ = await stack.invoke(BOB, "list_opportunities", {"stage": "Prospecting"})
    assert _names(by_stage["opportunities"]) == ["Wayne Enterprise License"]
    by_account, _, _ = await stack.invoke(BOB, "list_opportunities", {"account": "umbrella"})
    assert _names(by_account["opportunities"]) == ["Umbrella Expansion"]
    by_account_id, _, _ = await stack.invoke(BOB, "list_opportunities", {"account": "001ACME00000004AAA"})
    assert _names(by_account_id["opportunities"]) == ["Wayne Enterprise License"]
    before, _, _ = await stack.invoke(BOB, "list_opportunities", {"closing_before": "2027-01-31"})
    assert _names(before["opportunities"]) == ["Initech Renewal 2027"]
    await stack.invoke(BOB, "update_opportunity", {"opportunity": "Initech Renewal", "stage": "Closed Won"})
    open_only, _, _ = await stack.invoke(BOB, "list_opportunities", {})
    assert "Initech Renewal 2027" not in _names(open_only["opportunities"])
    everything, _, _ = await stack.invoke(BOB, "list_opportunities", {"include_closed": True})
    assert everything["total"] == 3


async def test_get_opportunity_by_words_or_id(stack: Stack) -> None:
    result, summary, _ = await stack.invoke(BOB, "get_opportunity", {"opportunity": "renewal INITECH"})
    assert result["id"] == "006ACME00000001AAA" and result["probability"] == 90
    assert (result["is_closed"], result["is_won"], result["next_step"]) == (False, False, None)
    assert result["url"] == f"{stack.base_urls['acme']}/lightning/r/Opportunity/006ACME00000001AAA/view"
    assert "Initech Renewal 2027" in summary
    by_id, _, _ = await stack.invoke(BOB, "get_opportunity", {"opportunity": "006ACME00000002AAA"})
    assert by_id["name"] == "Umbrella Expansion" and by_id["account"] == "Umbrella Corp"
    for reference in ("Stark Pilot", "006ACME00000003AAA", "no such deal"):
        details = await stack.fail(BOB, "get_opportunity", {"opportunity": reference})
        assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND"), reference
    dave_view, _, _ = await stack.invoke(DAVE, "get_opportunity", {"opportunity": "stark"})
    assert dave_view["owner"] == {"name": "Dave Okafor", "email": DAVE}


async def test_users_without_a_salesforce_user_get_403(stack: Stack) -> None:
    for user in (ALICE, FRANK):
        details = await stack.fail(user, "find_account", {"name": "Initech"})
        assert (details.code, details.reason) == (grpc.StatusCode.PERMISSION_DENIED, "VENDOR_DENIED")
        assert details.metadata["vendor_status"] == "403"
    status, _, body = await stack.rest("GET", f"{API}/query?q=SELECT+Id+FROM+Account", user=ALICE)
    assert status == 403 and body[0]["errorCode"] == "INSUFFICIENT_ACCESS"


async def test_unknown_email_is_unknown_person(stack: Stack) -> None:
    for owner in ("nobody@acme.example", ALICE):  # Alice is in the directory but has no Salesforce user
        details = await stack.fail(BOB, "list_opportunities", {"owner": owner})
        assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_PERSON")


async def test_vendor_401_is_unauthenticated(stack: Stack) -> None:
    details = await stack.fail(BOB, "find_account", {"name": "Initech"}, token="not-a-token")
    assert (details.code, details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "VENDOR_UNAUTHENTICATED")
    assert details.metadata["vendor_code"] == "INVALID_SESSION_ID"
    generated = stack.generated["tenant"]["id"]
    someone = next(u["email"] for u in stack.generated["users"] if u["salesforce_user_id"])
    other_tenant = (await stack.token_response(someone, generated))["access_token"]
    details = await stack.fail(BOB, "find_account", {"name": "Initech"}, token=other_tenant)
    assert details.code == grpc.StatusCode.UNAUTHENTICATED  # another org's token is no session here


# --- WRITE actions --------------------------------------------------------------------------------------------------
async def test_update_opportunity_reports_changes_and_is_idempotent(stack: Stack) -> None:
    args = {"opportunity": "Initech renewal", "stage": "Closed Won", "next_step": "Send the countersigned order"}
    result, summary, _ = await stack.invoke(BOB, "update_opportunity", args)
    assert result["changes"] == [{"field": "stage", "from": "Negotiation/Review", "to": "Closed Won"},
                                 {"field": "next_step", "from": None, "to": "Send the countersigned order"}]
    assert (result["stage"], result["is_closed"], result["is_won"], result["probability"]) == (
        "Closed Won", True, True, 100)
    assert "Negotiation/Review → Closed Won" in summary
    again, _, _ = await stack.invoke(BOB, "update_opportunity", args)
    assert again["changes"] == [] and again["stage"] == "Closed Won"
    moved, _, _ = await stack.invoke(DAVE, "update_opportunity", {"opportunity": "Umbrella Expansion",
                                                                  "close_date": "2027-02-28", "amount": 125000.5})
    assert (moved["close_date"], moved["amount"]) == ("2027-02-28", 125000.5)  # a director edits a rep's deal


async def test_update_opportunity_refusals(stack: Stack) -> None:
    details = await stack.fail(BOB, "update_opportunity", {"opportunity": "006ACME00000003AAA", "amount": 1})
    assert details.code == grpc.StatusCode.NOT_FOUND
    details = await stack.fail(BOB, "update_opportunity", {"opportunity": "Initech", "stage": "Won-ish"})
    assert (details.code, details.metadata["vendor_code"]) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                               "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST")
    assert [f for f, _ in details.field_violations] == ["arguments.stage"]
    details = await stack.fail(BOB, "update_opportunity", {"opportunity": "Initech", "close_date": "next friday"})
    assert [f for f, _ in details.field_violations] == ["arguments.close_date"]


async def test_create_case_then_replay_with_the_same_key(stack: Stack) -> None:
    args = {"account": "initech", "subject": "Double charged on the November invoice", "priority": "High",
            "description": "Two identical charges on 2026-11-03."}
    result, summary, replayed = await stack.invoke(BOB, "create_case", args, key="run-1:s1")
    assert not replayed
    assert {k: result[k] for k in ("case_number", "status", "priority", "account", "account_id", "owner")} == {
        "case_number": "00001002", "status": "New", "priority": "High", "account": "Initech",
        "account_id": "001ACME00000001AAA", "owner": {"name": "Bob Smith", "email": BOB}}
    assert "00001002" in summary
    again, _, replayed = await stack.invoke(BOB, "create_case", args, key="run-1:s1")
    assert replayed and again == result
    assert (await stack.counters())["created"] == {"acme:Case": 1}
    details = await stack.fail(BOB, "create_case", {"account": "Stark", "subject": "x"})
    assert details.code == grpc.StatusCode.NOT_FOUND  # a rep cannot see Dave's account
    dave_case, _, _ = await stack.invoke(DAVE, "create_case", {"account": "001ACME00000003AAA", "subject": "Pilot"})
    assert dave_case["account"] == "Stark Industries" and dave_case["priority"] == "Medium"


async def test_create_task_on_an_account_or_an_opportunity(stack: Stack) -> None:
    result, summary, _ = await stack.invoke(BOB, "create_task", {"subject": "Send the revised quote",
                                                                 "related_to": "renewal initech",
                                                                 "due_date": "2027-03-01"})
    assert result["related_to"] == {"id": "006ACME00000001AAA", "name": "Initech Renewal 2027", "type": "Opportunity"}
    assert (result["status"], result["due_date"], result["owner"]["email"]) == ("Not Started", "2027-03-01", BOB)
    assert "Initech Renewal 2027" in summary
    by_id, _, _ = await stack.invoke(BOB, "create_task", {"subject": "Call", "related_to": "001ACME00000002AAA"})
    assert by_id["related_to"]["type"] == "Account" and by_id["due_date"] is None
    details = await stack.fail(BOB, "create_task", {"subject": "Call", "related_to": "Initech"})
    assert (details.code, details.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "AMBIGUOUS_REFERENCE")
    assert "Initech (Account" in details.metadata["candidates"]
    assert "Initech Renewal 2027 (Opportunity" in details.metadata["candidates"]
    details = await stack.fail(BOB, "create_task", {"subject": "Call", "related_to": "Wayne", "due_date": "soon"})
    assert [f for f, _ in details.field_violations] == ["arguments.due_date"]


async def test_bad_arguments_are_field_violations(stack: Stack) -> None:
    details = await stack.fail(BOB, "create_case", {"priority": "High", "colour": "red"})
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT and details.reason == "VALIDATION_FAILED"
    assert {f for f, _ in details.field_violations} == {"arguments.account", "arguments.subject", "arguments.colour"}
    details = await stack.fail(BOB, "update_opportunity", {"opportunity": "Initech"})
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT  # nothing to change
    details = await stack.fail(BOB, "create_task", {"subject": "x", "related_to": "Initech"}, key="")
    assert [f for f, _ in details.field_violations] == ["idempotency_key"]
    details = await stack.fail(BOB, "query", {"soql": "DELETE FROM Account"})
    assert [f for f, _ in details.field_violations] == ["arguments.soql"]


# --- SOQL -----------------------------------------------------------------------------------------------------------
async def test_soql_subset(stack: Stack) -> None:
    soql = ("SELECT Name, Amount, Account.Name, Owner.Name FROM Opportunity WHERE (StageName = 'Prospecting' "
            "OR Amount > 100000) AND CloseDate < 2027-06-01 ORDER BY Amount DESC LIMIT 2")
    result, _, _ = await stack.invoke(DAVE, "query", {"soql": soql})
    assert result == {"total": 2, "records": [
        {"Name": "Wayne Enterprise License", "Amount": 310000, "Account": {"Name": "Wayne Enterprises"},
         "Owner": {"Name": "Bob Smith"}},
        {"Name": "Umbrella Expansion", "Amount": 120000, "Account": {"Name": "Umbrella Corp"},
         "Owner": {"Name": "Bob Smith"}}]}
    cases = {
        "SELECT Name FROM Account WHERE Industry IN ('Finance', 'Healthcare') ORDER BY Name": [
            "Umbrella Corp", "Wayne Enterprises"],
        "SELECT Name FROM Account WHERE Name LIKE 'w_yne%' OR Name LIKE '%ARK%'": ["Stark Industries",
                                                                                   "Wayne Enterprises"],
        "SELECT Name FROM Account WHERE Industry != 'Technology' AND Name != 'Umbrella Corp' ORDER BY Name DESC": [
            "Wayne Enterprises", "Stark Industries"],
        "SELECT Name FROM Opportunity WHERE Amount < 30000 OR Owner.Name = 'dave okafor'": ["Stark Pilot"],
        "SELECT Name FROM Account WHERE CreatedDate > 2026-10-31T00:00:00Z AND Name LIKE 'S%'": ["Stark Industries"],
    }
    for soql, expected in cases.items():
        result, _, _ = await stack.invoke(DAVE, "query", {"soql": soql})
        assert sorted(r["Name"] for r in result["records"]) == sorted(expected), soql
        if "ORDER BY" in soql:
            assert [r["Name"] for r in result["records"]] == expected, soql
    mine, _, _ = await stack.invoke(BOB, "query", {"soql": "SELECT Name FROM Opportunity"})
    assert mine["total"] == 3  # sharing applies to queries too


@pytest.mark.parametrize(("soql", "code"), [
    ("SELECT Name FROM Opportunity GROUP BY Name", "MALFORMED_QUERY"),
    ("SELECT Name FROM Account WHERE Name = 'a' AND Industry = 'b' OR Name = 'c'", "MALFORMED_QUERY"),
    ("SELECT Name FROM Account WHERE Name = 'unterminated", "MALFORMED_QUERY"),
    ("SELECT Name FROM Account OFFSET 5", "MALFORMED_QUERY"),
    ("SELECT Name, Nmae FROM Account", "INVALID_FIELD"),
    ("SELECT Name FROM Opportunity WHERE CloseDate = '2027-01-01'", "INVALID_FIELD"),
    ("SELECT Id FROM Widget__c", "INVALID_TYPE"),
])
async def test_outside_the_subset_is_the_vendors_bad_query(stack: Stack, soql: str, code: str) -> None:
    details = await stack.fail(DAVE, "query", {"soql": soql})
    assert (details.code, details.metadata["vendor_code"]) == (grpc.StatusCode.INVALID_ARGUMENT, code)
    assert [f for f, _ in details.field_violations] == ["arguments.soql"]


async def test_names_with_quotes_or_backslashes_cannot_change_the_query(stack: Stack) -> None:
    status, _, created = await stack.rest("POST", f"{API}/sobjects/Account",
                                          json={"Name": "O'Reilly \\ Sons 100%_off", "Industry": "Media"})
    assert status == 201 and created["success"]
    result, _, _ = await stack.invoke(BOB, "find_account", {"name": "o'reilly \\ sons"})
    assert _names(result["accounts"]) == ["O'Reilly \\ Sons 100%_off"]
    result, _, _ = await stack.invoke(BOB, "find_account", {"name": "100%_off"})
    assert result["total"] == 1
    for attempt in ("x' OR Name != '", "%' OR Name LIKE '%", "\\' OR Name != '\\", "Initech\\", "_nitech%"):
        result, _, _ = await stack.invoke(BOB, "find_account", {"name": attempt})
        assert result["total"] == 0, attempt  # a query widened by the attempt would list Bob's accounts
    details = await stack.fail(BOB, "get_opportunity", {"opportunity": "' OR Name != '"})
    assert details.code == grpc.StatusCode.NOT_FOUND


async def test_upsert_by_external_id(stack: Stack) -> None:
    path = f"{API}/sobjects/Case/{IDEMPOTENCY_FIELD}/key%2Fwith%20slash"
    case = {"Subject": "Upserted", "AccountId": "001ACME00000002AAA"}
    status, _, first = await stack.rest("PATCH", path, json=case)
    assert (status, first["created"], first["success"]) == (201, True, True)
    status, _, again = await stack.rest("PATCH", path, json={**case, "Priority": "High"})
    assert (status, again) == (200, {"id": first["id"], "success": True, "errors": [], "created": False})
    status, _, record = await stack.rest("GET", path)
    assert (status, record["Id"], record["Priority"], record[IDEMPOTENCY_FIELD]) == (
        200, first["id"], "High", "key/with slash")
    status, _, _ = await stack.rest("PATCH", f"{API}/sobjects/Case/{IDEMPOTENCY_FIELD}/other?updateOnly=true",
                                    json=case)
    assert status == 404
    status, _, body = await stack.rest("PATCH", f"{API}/sobjects/Account/{IDEMPOTENCY_FIELD}/k", json={"Name": "x"})
    assert (status, body[0]["errorCode"]) == (404, "NOT_FOUND")  # not an external ID field of Account
    assert (await stack.counters())["created"] == {"acme:Case": 1}


# --- paging ---------------------------------------------------------------------------------------------------------
async def _create_opportunities(stack: Stack, count: int) -> None:
    semaphore = asyncio.Semaphore(20)

    async def one(i: int) -> None:
        async with semaphore:
            status, _, _ = await stack.rest("POST", f"{API}/sobjects/Opportunity", json={
                "Name": f"Bulk deal {i:03d}", "StageName": "Qualification", "CloseDate": "2027-06-30",
                "Amount": 1000 + i, "AccountId": "001ACME00000001AAA"})
            assert status == 201

    await asyncio.gather(*(one(i) for i in range(count)))


async def test_next_records_url_with_batch_size(stack: Stack) -> None:
    await _create_opportunities(stack, 250)
    status, _, page = await stack.rest("GET", f"{API}/query", params={"q": "SELECT Id, Name FROM Opportunity"},
                                       headers={"Sforce-Query-Options": "batchSize=50"})  # below the minimum of 200
    assert status == 200 and (page["totalSize"], page["done"], len(page["records"])) == (253, False, 200)
    assert page["nextRecordsUrl"].startswith(f"{API}/query/01g") and page["nextRecordsUrl"].endswith("-200")
    status, _, last = await stack.rest("GET", page["nextRecordsUrl"])
    assert (status, last["done"], len(last["records"]), last.get("nextRecordsUrl")) == (200, True, 53, None)
    ids = {r["Id"] for r in page["records"] + last["records"]}
    assert len(ids) == 253
    status, _, _ = await stack.rest("GET", page["nextRecordsUrl"], user=DAVE)  # a cursor is its user's alone
    assert status == 400


async def test_actions_page_across_more_records_than_a_batch(stack: Stack) -> None:
    await _create_opportunities(stack, 250)
    result, _, _ = await stack.invoke(BOB, "list_opportunities", {"owner": "me"})
    assert result["total"] == 253 and len(result["opportunities"]) == 253
    assert len({o["id"] for o in result["opportunities"]}) == 253
    names = _names(result["opportunities"])
    assert names[:3] == ["Initech Renewal 2027", "Umbrella Expansion", "Wayne Enterprise License"]
    assert names[3:] == sorted(names[3:]) and names[-1] == "Bulk deal 249"  # close date, then name
    counters = await stack.counters()
    assert counters["calls"]["acme:GET /services/data/v{version}/query/{locator}"] >= 1


# --- faults ---------------------------------------------------------------------------------------------------------
async def test_vendor_timeout_is_unavailable_within_the_deadline(stack: Stack) -> None:
    await stack.faults(latency={"fixed_ms": 1500})
    details = await stack.fail(BOB, "find_account", {"name": "Initech"}, deadline_s=0.6)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")


async def test_request_limit_exceeded_is_resource_exhausted(stack: Stack) -> None:
    await stack.faults(rate_limit=1.0)
    status, headers, body = await stack.rest("GET", f"{API}/query?q=SELECT+Id+FROM+Account")
    assert (status, body[0]["errorCode"], "Retry-After" in headers) == (403, "REQUEST_LIMIT_EXCEEDED", False)
    details = await stack.fail(BOB, "find_account", {"name": "Initech"})
    assert (details.code, details.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert (details.metadata["vendor_status"], details.metadata["vendor_code"]) == ("403", "REQUEST_LIMIT_EXCEEDED")
    assert details.retry_after_s == 1  # a concurrency limit passes quickly; Salesforce says nothing more


async def test_the_orgs_daily_limit_is_enforced(stack: Stack) -> None:
    await stack.invoke(BOB, "find_account", {"name": "Initech"})
    stack.sandbox.daily_api_limit = stack.sandbox.api_usage["acme"]
    status, headers, body = await stack.rest("GET", f"{API}/query?q=SELECT+Id+FROM+Account")
    assert (status, body[0]["errorCode"]) == (403, "REQUEST_LIMIT_EXCEEDED")
    assert headers["Sforce-Limit-Info"] == f"api-usage={stack.sandbox.daily_api_limit}/{stack.sandbox.daily_api_limit}"
    details = await stack.fail(BOB, "find_account", {"name": "Initech"})
    assert (details.code, details.retry_after_s) == (grpc.StatusCode.RESOURCE_EXHAUSTED, DAILY_LIMIT_RETRY_AFTER_S)


@pytest.mark.parametrize("status", ["500", "503"])
async def test_server_errors_are_unavailable(stack: Stack, status: str) -> None:
    await stack.faults(errors={status: 1.0})
    details = await stack.fail(DAVE, "get_opportunity", {"opportunity": "Stark"})
    assert (details.code, details.reason, details.metadata["vendor_status"]) == (
        grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", status)


@pytest.mark.parametrize(("action", "args", "sobject"), [
    ("create_case", {"account": "Umbrella", "subject": "Portal login fails"}, "Case"),
    ("create_task", {"subject": "Schedule the QBR", "related_to": "Umbrella Corp"}, "Task"),
])
async def test_reset_after_commit_then_retry_creates_nothing_twice(stack: Stack, action: str, args: dict[str, Any],
                                                                   sobject: str) -> None:
    key = f"run-{uuid.uuid4()}:s2"
    await stack.faults(reset_after_commit=1.0)
    details = await stack.fail(BOB, action, args, key=key)
    assert details.code == grpc.StatusCode.UNAVAILABLE
    assert (await stack.counters())["created"] == {f"acme:{sobject}": 1}  # committed before the connection dropped
    await stack.faults()
    result, _, replayed = await stack.invoke(BOB, action, args, key=key)
    assert replayed and result["subject"] == args["subject"]
    assert (await stack.counters())["created"] == {f"acme:{sobject}": 1}
    status, _, page = await stack.rest("GET", f"{API}/query", params={
        "q": soql_select("Id", sobject, [f"{IDEMPOTENCY_FIELD} = {soql_string(key)}"])})
    assert status == 200 and page["totalSize"] == 1 and page["records"][0]["Id"] == result["id"]


# --- sharing on a generated tenant ----------------------------------------------------------------------------------
async def test_sharing_derives_from_profiles_departments_and_ownership(stack: Stack) -> None:
    data = stack.generated
    tenant = data["tenant"]["id"]
    people = {u["email"]: u for u in data["users"]}

    def visible(person: dict[str, Any], kind: str) -> set[str]:
        director = person["salesforce_profile"] == "Sales Director"
        return {r["id"] for r in data["salesforce"][kind] if r["owner"] == person["email"]
                or (director and people[r["owner"]]["department"] == person["department"])}

    for person in data["users"]:
        if not person["salesforce_user_id"]:
            details = await stack.fail(person["email"], "query", {"soql": "SELECT Id FROM Opportunity"},
                                       tenant=tenant)
            assert details.code == grpc.StatusCode.PERMISSION_DENIED, person
            continue
        for kind, sobject in (("opportunities", "Opportunity"), ("accounts", "Account")):
            result, _, _ = await stack.invoke(person["email"], "query", {"soql": soql_select("Id", sobject)},
                                              tenant=tenant)
            assert {r["Id"] for r in result["records"]} == visible(person, kind), (person, data)
    director = next(u for u in data["users"] if u["salesforce_profile"] == "Sales Director")
    elsewhere = [o for o in data["salesforce"]["opportunities"]
                 if people[o["owner"]]["department"] != director["department"]]
    assert elsewhere and not visible(director, "opportunities") & {o["id"] for o in elsewhere}
    acme_token = (await stack.token_response(BOB))["access_token"]
    details = await stack.fail(director["email"], "query", {"soql": "SELECT Id FROM Account"}, tenant=tenant,
                               token=acme_token)
    assert details.code == grpc.StatusCode.UNAUTHENTICATED  # tenants are isolated
