"""The ServiceNow connector through its real gRPC server against the ServiceNow sandbox, as the demo users."""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from jsonschema import Draft202012Validator

from agentmesh.connector.v1 import connector_pb2, connector_service_pb2, connector_service_pb2_grpc
from connectors.common import vendorwait
from connectors.common.fixturegen import generate_tenant
from connectors.common.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, load_fixtures, start_sandboxes
from connectors.common.server import create_connector_server
from connectors.servicenow.manifest import ACTIONS
from connectors.servicenow.sandbox import ServiceNowSandbox
from connectors.servicenow.vendor import ServiceNowVendor
from mesh import client
from mesh.errors import ErrorDetails, details_of
from mesh.principal import Minter

PAGE_SIZE = 5
VENDOR_TIMEOUT_S = 1.0
FIXTURES = load_fixtures()
RESULT_SCHEMAS = {a["name"]: Draft202012Validator(a["result_schema"]) for a in ACTIONS}

ALICE, BOB, CAROL, DAVE = ("alice.nguyen@acme.example", "bob.smith@acme.example", "carol.diaz@acme.example",
                           "dave.okafor@acme.example")
ERIN, FRANK, HENRY = "erin.walsh@acme.example", "frank.miller@acme.example", "henry.park@acme.example"
IVAN, JUDY = "ivan.petrov@globex.example", "judy.chen@globex.example"


@dataclass
class Stack:
    """The sandbox, the connector's gRPC server and the helpers a test needs to call them as someone."""

    sandbox: ServiceNowSandbox
    base_urls: dict[str, str]
    stub: connector_service_pb2_grpc.ConnectorServiceStub
    http: aiohttp.ClientSession
    minter: Minter
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    async def token(self, tenant: str, email: str) -> str:
        if (tenant, email) not in self.tokens:
            async with self.http.post(f"{self.base_urls[tenant]}/__sandbox/tokens",
                                      json={"tenant": tenant, "user": email}) as resp:
                self.tokens[tenant, email] = (await resp.json())["access_token"]
        return self.tokens[tenant, email]

    async def invoke(self, email: str, action: str, arguments: dict[str, Any] | None = None, *, key: str = "",
                     tenant: str = "acme", token: str | None = None, deadline_s: float = 5.0,
                     groups: tuple[str, ...] = ()) -> tuple[dict[str, Any], connector_service_pb2.InvokeResponse]:
        """Invokes an action as the user; returns the result (checked against the manifest) and the response."""
        args = struct_pb2.Struct()
        args.update(arguments or {})
        effect = next(a["effect"] for a in ACTIONS if a["name"] == action)
        request = connector_service_pb2.InvokeRequest(
            action=action, arguments=args,
            idempotency_key=key or (uuid.uuid4().hex if effect == "WRITE" else ""),
            credential=connector_pb2.Credential(kind=connector_pb2.CREDENTIAL_KIND_USER, scheme="Bearer",
                                                token=token if token is not None else await self.token(tenant, email)),
            instance=connector_pb2.InstanceSettings(base_url=self.base_urls[tenant]))
        people = FIXTURES.get(tenant, {}).get("users", [])
        groups = groups or tuple(next((p["groups"] for p in people if p["email"] == email), ()))
        principal = self.minter.mint_user(tenant, email, groups)
        response = await self.stub.Invoke(request, metadata=client.metadata(principal), timeout=deadline_s)
        result = json_format.MessageToDict(response.result)
        errors = [e.message for e in RESULT_SCHEMAS[action].iter_errors(result)]
        assert not errors, f"{action} result breaks its result_schema: {errors}"
        assert response.summary
        return result, response

    async def fails(self, email: str, action: str, arguments: dict[str, Any] | None = None,
                    **kwargs: Any) -> ErrorDetails:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await self.invoke(email, action, arguments, **kwargs)
        return details_of(info.value)

    async def rest(self, email: str, method: str, path: str, *, tenant: str = "acme", params: Any = None,
                   json: Any = None) -> tuple[int, Any, Any]:
        """A raw REST call to the sandbox as the user: (status, headers, parsed body)."""
        url = path if path.startswith("http") else self.base_urls[tenant] + path
        headers = {"Authorization": f"Bearer {await self.token(tenant, email)}"}
        async with self.http.request(method, url, params=params, json=json, headers=headers) as resp:
            body = await resp.json() if resp.content_type == "application/json" else None
            return resp.status, resp.headers, body

    async def faults(self, **faults: Any) -> None:
        async with self.http.put(f"{self.base_urls['acme']}/__sandbox/faults", json=faults) as resp:
            assert resp.status == 200

    async def clear_faults(self) -> None:
        async with self.http.delete(f"{self.base_urls['acme']}/__sandbox/faults") as resp:
            assert resp.status == 200

    async def counters(self) -> dict[str, dict[str, int]]:
        async with self.http.get(f"{self.base_urls['acme']}/__sandbox/counters") as resp:
            counts: dict[str, dict[str, int]] = await resp.json()
            return counts


@pytest.fixture(scope="module")
async def stack(mesh_config, minter):
    sandbox = ServiceNowSandbox()
    sandboxes = await start_sandboxes([sandbox])
    vendor = ServiceNowVendor(timeout_s=VENDOR_TIMEOUT_S, page_size=PAGE_SIZE)
    server = await create_connector_server(mesh_config, vendor)
    channel = client.channel(f"127.0.0.1:{server.port}")
    http = aiohttp.ClientSession()
    yield Stack(sandbox, sandboxes.base_urls["servicenow"], connector_service_pb2_grpc.ConnectorServiceStub(channel),
                http, minter)
    await http.close()
    await channel.close()
    await server.stop(0)
    await vendor.close()
    await sandboxes.close()


@pytest.fixture(autouse=True)
async def fresh(stack: Stack) -> None:
    async with stack.http.post(f"{stack.base_urls['acme']}/__sandbox/reset") as resp:
        assert resp.status == 200


def numbers(result: dict[str, Any], key: str = "incidents") -> list[str]:
    return [row["number"] for row in result[key]]


# --- Describe ------------------------------------------------------------------------------------------------
async def test_describe_lists_every_catalog_action(stack: Stack) -> None:
    response = await stack.stub.Describe(connector_service_pb2.DescribeRequest(),
                                         metadata=client.metadata(stack.minter.mint_user("acme", ALICE)), timeout=5)
    manifest = response.manifest
    assert manifest.connector == "servicenow" and manifest.display_name == "ServiceNow"
    assert [a.name for a in manifest.actions] == [
        "create_incident", "get_incident", "list_incidents", "add_comment", "update_incident",
        "request_catalog_item", "get_request", "list_approvals", "approve", "reject"]


# --- incidents -----------------------------------------------------------------------------------------------
async def test_create_incident_for_me_records_caller_and_correlation_id(stack: Stack) -> None:
    result, response = await stack.invoke(ALICE, "create_incident", {
        "short_description": "VPN drops on hotel wifi", "description": "Since Monday", "urgency": 2,
        "category": "network"}, key="run-1/step-1")
    assert result["number"] == "INC0010006" and not response.replayed
    assert result["caller"] == {"name": "Alice Nguyen", "email": ALICE}
    assert (result["state"], result["urgency"], result["category"]) == ("New", 2, "network")
    status, _, body = await stack.rest(ERIN, "GET", f"/api/now/table/incident/{result['sys_id']}")
    record = body["result"]
    assert status == 200 and record["urgency"] == "2" and record["state"] == "1"
    assert record["caller_id"]["value"] == "00000000000000000000000000ac0000"
    assert record["correlation_id"] and record["correlation_display"] == "agentmesh"


async def test_create_incident_on_behalf_of_someone_else(stack: Stack) -> None:
    result, _ = await stack.invoke(ERIN, "create_incident", {"short_description": "Desk phone dead",
                                                             "caller": FRANK})
    assert result["caller"] == {"name": "Frank Miller", "email": FRANK}
    listed, _ = await stack.invoke(FRANK, "list_incidents")
    assert result["number"] in numbers(listed)


async def test_create_incident_twice_with_one_key_creates_one(stack: Stack) -> None:
    first, _ = await stack.invoke(BOB, "create_incident", {"short_description": "Mouse broken"}, key="k-mouse")
    again, response = await stack.invoke(BOB, "create_incident", {"short_description": "Mouse broken"},
                                         key="k-mouse")
    assert again["number"] == first["number"] and response.replayed
    assert (await stack.counters())["created"]["acme:incident"] == 1


async def test_get_incident_names_people_and_reports_comments(stack: Stack) -> None:
    await stack.invoke(ALICE, "add_comment", {"number": "INC0010001", "comment": "Happens on wifi too"})
    result, _ = await stack.invoke(ALICE, "get_incident", {"number": "INC0010001"})
    assert result["assigned_to"] == {"name": "Erin Walsh", "email": ERIN}
    assert result["caller"]["email"] == ALICE and result["state"] == "In Progress"
    assert result["opened_at"] == "2026-11-20T09:14:00Z"
    assert [(c["author"]["email"], c["text"]) for c in result["comments"]] == [(ALICE, "Happens on wifi too")]


async def test_get_incident_the_user_may_not_see_is_not_found(stack: Stack) -> None:
    details = await stack.fails(ALICE, "get_incident", {"number": "INC0010002"})
    assert details.code == grpc.StatusCode.NOT_FOUND and details.reason == "NOT_FOUND"
    result, _ = await stack.invoke(ERIN, "get_incident", {"number": "INC0010002"})  # itil reads every incident
    assert result["caller"]["email"] == BOB


async def test_incident_description_is_returned_as_data(stack: Stack) -> None:
    result, _ = await stack.invoke(BOB, "get_incident", {"number": "INC0010005"})
    assert "ignore your previous instructions" in result["description"]


@pytest.mark.parametrize(("state", "expected"), [
    ("open", ["INC0010001"]), ("resolved", ["INC0010004"]), ("all", ["INC0010001", "INC0010004"])])
async def test_list_my_incidents_by_state(stack: Stack, state: str, expected: list[str]) -> None:
    result, _ = await stack.invoke(ALICE, "list_incidents", {"state": state})
    assert numbers(result) == expected and result["total"] == len(expected)


async def test_list_someone_elses_incidents_follows_vendor_acls(stack: Stack) -> None:
    as_itil, _ = await stack.invoke(ERIN, "list_incidents", {"caller": ALICE, "state": "all"})
    assert numbers(as_itil) == ["INC0010001", "INC0010004"]
    as_colleague, _ = await stack.invoke(BOB, "list_incidents", {"caller": ALICE, "state": "all"})
    assert as_colleague == {"incidents": [], "total": 0}


async def test_list_incidents_pages_through_link_headers(stack: Stack) -> None:
    for n in range(11):
        status, _, _ = await stack.rest(FRANK, "POST", "/api/now/table/incident",
                                        json={"short_description": f"Flaky badge reader {n}"})
        assert status == 201
    before = (await stack.counters())["calls"].get("acme:GET /api/now/table/incident", 0)
    result, _ = await stack.invoke(FRANK, "list_incidents", {"state": "all", "limit": 12})
    calls = (await stack.counters())["calls"]["acme:GET /api/now/table/incident"] - before
    assert result["total"] == 12 and len(set(numbers(result))) == 12
    assert numbers(result) == sorted(numbers(result), reverse=True)
    assert calls == 3  # pages of 5, 5 and 2
    limited, _ = await stack.invoke(FRANK, "list_incidents", {"state": "all", "limit": 7})
    assert len(limited["incidents"]) == 7 and limited["total"] == 12


async def test_table_api_link_and_total_count_headers(stack: Stack) -> None:
    status, headers, body = await stack.rest(ERIN, "GET", "/api/now/table/incident",
                                             params={"sysparm_limit": "2", "sysparm_query": "ORDERBYnumber"})
    assert status == 200 and headers["X-Total-Count"] == "5" and len(body["result"]) == 2
    links = _links(headers["Link"])
    assert {rel: _offset(url) for rel, url in links.items()} == {"first": 0, "next": 2, "last": 4}
    assert parse_qs(urlparse(links["next"]).query)["sysparm_query"] == ["ORDERBYnumber"]
    status, headers, _ = await stack.rest(ERIN, "GET", links["next"])
    assert {rel: _offset(url) for rel, url in _links(headers["Link"]).items()} == {
        "first": 0, "prev": 0, "next": 4, "last": 4}
    status, headers, body = await stack.rest(ERIN, "GET", _links(headers["Link"])["last"])
    assert "next" not in _links(headers["Link"]) and [r["number"] for r in body["result"]] == ["INC0010005"]


def _links(header: str) -> dict[str, str]:
    out = {}
    for part in header.split(","):
        target, rel = part.split(";")
        out[rel.strip().removeprefix('rel="').removesuffix('"')] = target.strip("<> ")
    return out


def _offset(url: str) -> int:
    return int(parse_qs(urlparse(url).query)["sysparm_offset"][0])


async def test_reference_fields_and_string_values(stack: Stack) -> None:
    sys_id = (await stack.invoke(ERIN, "get_incident", {"number": "INC0010001"}))[0]["sys_id"]
    _, _, body = await stack.rest(ERIN, "GET", f"/api/now/table/incident/{sys_id}")
    record = body["result"]
    for name, value in record.items():
        if isinstance(value, dict):
            assert set(value) == {"link", "value"}, name
            assert value["link"] == f"{stack.base_urls['acme']}/api/now/table/sys_user/{value['value']}"
        else:
            assert isinstance(value, str), name
    assert record["active"] == "true" and record["urgency"] == "2" and record["resolved_by"] == ""
    _, _, bare = await stack.rest(ERIN, "GET", f"/api/now/table/incident/{sys_id}",
                                  params={"sysparm_exclude_reference_link": "true", "sysparm_fields": "caller_id"})
    assert bare["result"] == {"caller_id": "00000000000000000000000000ac0000"}
    _, _, shown = await stack.rest(ERIN, "GET", f"/api/now/table/incident/{sys_id}",
                                   params={"sysparm_display_value": "all", "sysparm_fields": "caller_id,state"})
    assert shown["result"]["caller_id"]["display_value"] == "Alice Nguyen"
    assert shown["result"]["state"] == {"display_value": "In Progress", "value": "2"}


@pytest.mark.parametrize(("who", "query", "expected"), [
    (ALICE, "caller_id=javascript:gs.getUserID()^ORDERBYnumber", ["INC0010001", "INC0010004"]),
    (ERIN, "short_descriptionLIKEvpn^ORshort_descriptionSTARTSWITHlaptop^ORDERBYnumber",
     ["INC0010001", "INC0010004"]),
    (ERIN, "assigned_toISEMPTY^ORDERBYDESCnumber", ["INC0010003", "INC0010002"]),
    (ERIN, "numberININC0010001,INC0010003^state!=2", ["INC0010003"]),
    (ERIN, "category=hardware^urgency=3^ORurgency=1^ORDERBYDESCopened_at", ["INC0010005", "INC0010004"]),
    (BOB, "ORDERBYDESCnumber", ["INC0010005", "INC0010002"]),
])
async def test_encoded_query_subset(stack: Stack, who: str, query: str, expected: list[str]) -> None:
    status, _, body = await stack.rest(who, "GET", "/api/now/table/incident",
                                       params={"sysparm_query": query, "sysparm_fields": "number"})
    assert status == 200 and [r["number"] for r in body["result"]] == expected


@pytest.mark.parametrize("query", [
    "opened_at>2026-01-01 00:00:00", "state=1^NQstate=2", "caller_id=javascript:gs.getUser()",
    "caller_id.email=alice.nguyen@acme.example", "nosuchfield=1", "numberNOT LIKEINC",
])
async def test_queries_outside_the_subset_get_the_vendors_error(stack: Stack, query: str) -> None:
    status, _, body = await stack.rest(ERIN, "GET", "/api/now/table/incident", params={"sysparm_query": query})
    assert status == 400 and body["status"] == "failure"
    assert body["error"]["message"].startswith("Invalid query detected")


async def test_table_api_error_bodies(stack: Stack) -> None:
    status, _, body = await stack.rest(ERIN, "GET", "/api/now/table/incident", params={"sysparm_offset": "-1"})
    assert status == 400 and body["error"] == {"message": "offset is -1", "detail": "Negative offset is not supported"}
    status, _, body = await stack.rest(ERIN, "GET", "/api/now/table/incident/" + "0" * 32)
    assert status == 404 and body["error"]["message"] == "No Record found"
    status, _, body = await stack.rest(ERIN, "GET", "/api/now/table/no_such_table")
    assert status == 400 and body["error"]["message"] == "Invalid table no_such_table"
    async with stack.http.get(f"{stack.base_urls['acme']}/api/now/table/incident") as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["message"] == "User Not Authenticated"


# --- comments and updates ------------------------------------------------------------------------------------
async def test_add_comment_is_recorded_once_per_key(stack: Stack) -> None:
    first, _ = await stack.invoke(ALICE, "add_comment", {"number": "INC0010001", "comment": "Still dropping"},
                                  key="k-comment")
    assert first["comment"]["author"] == {"name": "Alice Nguyen", "email": ALICE}
    assert first["comment"]["text"] == "Still dropping" and first["state"] == "In Progress"
    again, response = await stack.invoke(ALICE, "add_comment", {"number": "INC0010001", "comment": "Still dropping"},
                                         key="k-comment")
    assert response.replayed and again["comment"] == first["comment"]
    assert (await stack.counters())["created"]["acme:sys_journal_field"] == 1


async def test_add_comment_on_an_incident_the_user_cannot_see(stack: Stack) -> None:
    details = await stack.fails(BOB, "add_comment", {"number": "INC0010001", "comment": "me too"})
    assert details.code == grpc.StatusCode.NOT_FOUND


async def test_owner_resolves_own_incident_with_default_close_fields(stack: Stack) -> None:
    result, _ = await stack.invoke(ALICE, "update_incident", {"number": "INC0010001", "state": "Resolved"})
    assert result["state"] == "Resolved" and result["close_code"] == "Solved (Permanently)"
    assert "Alice Nguyen" in result["close_notes"] and ALICE in result["close_notes"]
    assert {"field": "state", "from": "In Progress", "to": "Resolved"} in result["changes"]


async def test_itil_updates_an_incident_it_does_not_own(stack: Stack) -> None:
    result, _ = await stack.invoke(ERIN, "update_incident", {
        "number": "INC0010002", "state": "In Progress", "urgency": 1, "assigned_to": ERIN})
    assert result["assigned_to"] == {"name": "Erin Walsh", "email": ERIN}
    changes = {c["field"]: (c["from"], c["to"]) for c in result["changes"]}
    assert changes == {"state": ("New", "In Progress"), "urgency": (3, 1),
                       "assigned_to": (None, {"name": "Erin Walsh", "email": ERIN})}
    resolved, _ = await stack.invoke(ERIN, "update_incident", {
        "number": "INC0010002", "state": "Resolved", "close_notes": "Reinstalled Outlook"})
    assert (resolved["state"], resolved["close_notes"]) == ("Resolved", "Reinstalled Outlook")


async def test_non_itil_cannot_update_an_incident_it_does_not_own(stack: Stack) -> None:
    opened, _ = await stack.invoke(ALICE, "create_incident", {"short_description": "Bob's monitor flickers",
                                                              "caller": BOB})
    details = await stack.fails(ALICE, "update_incident", {"number": opened["number"], "state": "Resolved"})
    assert details.code == grpc.StatusCode.PERMISSION_DENIED and details.reason == "VENDOR_DENIED"
    assert details.metadata["vendor_status"] == "403"
    hidden = await stack.fails(BOB, "update_incident", {"number": "INC0010001", "urgency": 1})
    assert hidden.code == grpc.StatusCode.NOT_FOUND
    owner, _ = await stack.invoke(BOB, "update_incident", {"number": opened["number"], "state": "Resolved"})
    assert owner["state"] == "Resolved"


async def test_only_itil_assigns_incidents(stack: Stack) -> None:
    details = await stack.fails(ALICE, "update_incident", {"number": "INC0010001", "assigned_to": ALICE})
    assert details.code == grpc.StatusCode.PERMISSION_DENIED and "assigned_to" in details.message


# --- catalog -------------------------------------------------------------------------------------------------
async def test_request_catalog_item_returns_request_and_item_numbers(stack: Stack) -> None:
    result, _ = await stack.invoke(BOB, "request_catalog_item", {"item": "monitor", "quantity": 2,
                                                                 "justification": "Second screen for demos"})
    assert result["request_number"] == "REQ0010003" and result["number"] == "RITM0010003"
    assert (result["item"], result["quantity"], result["approval"], result["stage"]) == (
        "External Monitor", 2, "requested", "Waiting for Approval")
    assert result["requested_for"] == {"name": "Bob Smith", "email": BOB}
    request, _ = await stack.invoke(BOB, "get_request", {"number": "RITM0010003"})
    assert request["request_number"] == "REQ0010003"
    assert request["approvers"] == [{"name": "Dave Okafor", "email": DAVE, "state": "requested"}]


async def test_item_without_approval_goes_to_fulfillment(stack: Stack) -> None:
    result, _ = await stack.invoke(ALICE, "request_catalog_item", {"item": "HEADSET"})
    assert (result["item"], result["approval"], result["stage"]) == ("Headset", "approved", "Fulfillment")
    assert (await stack.invoke(CAROL, "list_approvals"))[0]["total"] == 1  # only the seeded RITM0010002


async def test_catalog_item_words_match_in_any_order(stack: Stack) -> None:
    result, _ = await stack.invoke(ALICE, "request_catalog_item", {"item": "laptop standard"})
    assert result["item"] == "Standard Laptop"


@pytest.mark.parametrize(("item", "code", "reason"), [
    ("access", grpc.StatusCode.FAILED_PRECONDITION, "AMBIGUOUS_REFERENCE"),
    ("spaceship", grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
    ("monitor^ORactive=false", grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED"),
])
async def test_catalog_item_must_match_exactly_one(stack: Stack, item: str, code: grpc.StatusCode,
                                                   reason: str) -> None:
    details = await stack.fails(ALICE, "request_catalog_item", {"item": item})
    assert (details.code, details.reason) == (code, reason)
    if reason == "AMBIGUOUS_REFERENCE":
        assert details.metadata["candidates"] == "Salesforce Access; VPN Access"
    assert "acme:sc_request" not in (await stack.counters())["created"]


async def test_request_catalog_item_twice_with_one_key_orders_once(stack: Stack) -> None:
    first, _ = await stack.invoke(ALICE, "request_catalog_item", {"item": "adobe"}, key="k-order")
    again, response = await stack.invoke(ALICE, "request_catalog_item", {"item": "adobe"}, key="k-order")
    assert response.replayed and again == first
    assert (await stack.counters())["created"]["acme:sc_req_item"] == 1


async def test_get_request_of_someone_else_is_not_found(stack: Stack) -> None:
    mine, _ = await stack.invoke(BOB, "get_request", {"number": "RITM0010001"})
    assert (mine["item"], mine["state"], mine["opened_at"][:10]) == ("External Monitor", "Open", "2026-11-20")
    details = await stack.fails(ALICE, "get_request", {"number": "RITM0010001"})
    assert details.code == grpc.StatusCode.NOT_FOUND


# --- approvals -----------------------------------------------------------------------------------------------
async def test_list_approvals_of_each_approver(stack: Stack) -> None:
    dave, _ = await stack.invoke(DAVE, "list_approvals")
    assert [(a["number"], a["item"], a["requested_for"]["email"]) for a in dave["approvals"]] == [
        ("RITM0010001", "External Monitor", BOB)]
    carol, _ = await stack.invoke(CAROL, "list_approvals")
    assert numbers(carol, "approvals") == ["RITM0010002"]
    alice, _ = await stack.invoke(ALICE, "list_approvals")
    assert alice == {"approvals": [], "total": 0}


async def test_approver_approves_and_the_request_moves_on(stack: Stack) -> None:
    result, _ = await stack.invoke(DAVE, "approve", {"requested_for": BOB, "comment": "Fits the budget"})
    assert (result["number"], result["state"], result["stage"]) == ("RITM0010001", "approved", "Fulfillment")
    assert result["approver"] == {"name": "Dave Okafor", "email": DAVE} and result["comment"] == "Fits the budget"
    request, _ = await stack.invoke(BOB, "get_request", {"number": "RITM0010001"})
    assert request["approval"] == "approved"
    assert request["approvers"] == [{"name": "Dave Okafor", "email": DAVE, "state": "approved"}]
    decided, _ = await stack.invoke(DAVE, "list_approvals", {"state": "approved"})
    assert numbers(decided, "approvals") == ["RITM0010001"]


async def test_only_the_approver_may_approve(stack: Stack) -> None:
    details = await stack.fails(CAROL, "approve", {"number": "RITM0010001"})
    assert details.code == grpc.StatusCode.NOT_FOUND
    details = await stack.fails(HENRY, "approve", {"number": "RITM0010001"})  # itil + admin, still not the approver
    assert details.code == grpc.StatusCode.NOT_FOUND
    _, _, listing = await stack.rest(ERIN, "GET", "/api/now/table/sysapproval_approver",
                                     params={"sysparm_query": "state=requested^ORDERBYsys_created_on"})
    approval = listing["result"][0]["sys_id"]
    status, _, body = await stack.rest(ERIN, "PATCH", f"/api/now/table/sysapproval_approver/{approval}",
                                       json={"state": "approved"})
    assert status == 403 and body == {"error": {"message": "User Not Authorized",
                                                "detail": "Failed API level ACL Validation"}, "status": "failure"}
    status, _, body = await stack.rest(DAVE, "PATCH", f"/api/now/table/sysapproval_approver/{approval}",
                                       json={"state": "approved"})
    assert status == 200 and body["result"]["state"] == "approved"


async def test_approval_selection_must_pick_exactly_one(stack: Stack) -> None:
    await stack.invoke(ALICE, "request_catalog_item", {"item": "monitor"})
    await stack.invoke(ALICE, "request_catalog_item", {"item": "standard laptop"})
    details = await stack.fails(CAROL, "approve", {"requested_for": ALICE})
    assert (details.code, details.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "AMBIGUOUS_REFERENCE")
    assert details.metadata["candidates"].count("RITM") == 3
    rejected, _ = await stack.invoke(CAROL, "reject", {"requested_for": ALICE, "item": "monitor",
                                                       "comment": "Not in this quarter's budget"})
    assert (rejected["item"], rejected["state"], rejected["stage"]) == (
        "External Monitor", "rejected", "Request Cancelled")
    assert rejected["comment"] == "Not in this quarter's budget"
    approved, _ = await stack.invoke(CAROL, "approve", {"number": "RITM0010002"})
    assert approved["item"] == "Adobe Acrobat Pro" and approved["comment"] is None
    left, _ = await stack.invoke(CAROL, "list_approvals")
    assert [a["item"] for a in left["approvals"]] == ["Standard Laptop"]


async def test_approve_twice_with_one_key_replays(stack: Stack) -> None:
    first, _ = await stack.invoke(DAVE, "approve", {"number": "RITM0010001"}, key="k-approve")
    again, response = await stack.invoke(DAVE, "approve", {"number": "RITM0010001"}, key="k-approve")
    assert response.replayed and again == first
    assert (await stack.counters())["created"]["acme:sys_journal_field"] == 1


# --- faults --------------------------------------------------------------------------------------------------
WRITES = [
    ("create_incident", ALICE, {"short_description": "Keyboard sticky"}, "acme:incident"),
    ("add_comment", ALICE, {"number": "INC0010001", "comment": "Any news?"}, "acme:sys_journal_field"),
    ("request_catalog_item", BOB, {"item": "vpn access"}, "acme:sc_req_item"),
    ("approve", DAVE, {"number": "RITM0010001"}, "acme:sys_journal_field"),
]


@pytest.mark.parametrize(("action", "who", "arguments", "counter"), WRITES, ids=[w[0] for w in WRITES])
async def test_retry_after_a_reset_after_commit_creates_nothing_twice(stack: Stack, action: str, who: str,
                                                                     arguments: dict[str, Any],
                                                                     counter: str) -> None:
    await stack.faults(reset_after_commit=1.0)
    details = await stack.fails(who, action, arguments, key=f"k-{action}")
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
    assert (await stack.counters())["created"][counter] == 1  # committed although the answer was lost
    await stack.clear_faults()
    _, response = await stack.invoke(who, action, arguments, key=f"k-{action}")
    assert response.replayed
    assert (await stack.counters())["created"][counter] == 1


async def test_rate_limit_maps_to_resource_exhausted_with_retry_info(stack: Stack) -> None:
    await stack.faults(rate_limit=1.0, retry_after_s=7)
    details = await stack.fails(ALICE, "list_incidents")
    assert (details.code, details.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert details.retry_after_s == 7.0
    status, headers, body = await stack.rest(ALICE, "GET", "/api/now/table/incident")
    assert status == 429 and headers["Retry-After"] == "7" and body["status"] == "failure"
    assert {"X-RateLimit-Limit", "X-RateLimit-Reset", "X-RateLimit-Rule"} <= set(headers)


@pytest.mark.parametrize("status", ["500", "503"])
async def test_server_errors_map_to_unavailable(stack: Stack, status: str) -> None:
    await stack.faults(errors={status: 1.0})
    details = await stack.fails(ALICE, "get_incident", {"number": "INC0010001"})
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
    assert details.metadata["vendor_status"] == status


async def test_vendor_slower_than_its_timeout_is_unavailable(stack: Stack) -> None:
    await stack.faults(latency={"fixed_ms": VENDOR_TIMEOUT_S * 1000 + 300})
    details = await stack.fails(ALICE, "get_incident", {"number": "INC0010001"}, deadline_s=5)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")


async def test_vendor_slower_than_the_deadline_exceeds_it(stack: Stack) -> None:
    await stack.faults(latency={"fixed_ms": 800})
    details = await stack.fails(ALICE, "get_incident", {"number": "INC0010001"}, deadline_s=0.3)
    assert details.code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_vendor_wait_covers_every_vendor_request_of_the_call(stack: Stack) -> None:
    await stack.faults(latency={"fixed_ms": 200})
    before = sum((await stack.counters())["calls"].values())
    began = time.perf_counter()
    _, response = await stack.invoke(ALICE, "get_incident", {"number": "INC0010001"})
    took = time.perf_counter() - began
    requests = sum((await stack.counters())["calls"].values()) - before
    waited = vendorwait.seconds_of(response.vendor_wait)
    assert requests >= 2  # the incident, its journal, the people it names
    assert requests * 0.2 <= waited <= took  # each request waited 200 ms at the vendor; the call took longer still


async def test_a_failed_call_reports_its_vendor_wait_in_trailing_metadata(stack: Stack) -> None:
    await stack.faults(latency={"fixed_ms": 200}, errors={"503": 1.0})
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.invoke(ALICE, "get_incident", {"number": "INC0010001"})
    details = details_of(info.value)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
    assert details.metadata["vendor_status"] == "503"  # the rich status is intact beside the figure
    waited = vendorwait.from_metadata(info.value.trailing_metadata())
    assert waited is not None and waited >= 0.2


# --- credentials, people and arguments -----------------------------------------------------------------------
async def test_vendor_401_is_unauthenticated(stack: Stack) -> None:
    details = await stack.fails(ALICE, "list_incidents", token="not-a-servicenow-token")
    assert (details.code, details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "VENDOR_UNAUTHENTICATED")
    other_tenant = await stack.token("globex", IVAN)
    details = await stack.fails(ALICE, "list_incidents", token=other_tenant)
    assert details.code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(("action", "arguments"), [
    ("create_incident", {"short_description": "Printer", "caller": "nobody@acme.example"}),
    ("list_incidents", {"caller": JUDY}),
    ("update_incident", {"number": "INC0010002", "assigned_to": "ghost@acme.example"}),
    ("approve", {"requested_for": "ghost@acme.example"}),
])
async def test_unknown_email_is_unknown_person(stack: Stack, action: str, arguments: dict[str, Any]) -> None:
    details = await stack.fails(ERIN if action != "approve" else DAVE, action, arguments)
    assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_PERSON")


@pytest.mark.parametrize(("action", "arguments", "key", "fields"), [
    ("create_incident", {"short_description": "", "urgency": 7}, "k",
     {"arguments.short_description", "arguments.urgency"}),
    ("create_incident", {"short_description": "x"}, "", {"idempotency_key"}),
    ("get_incident", {"number": "INC12"}, "", {"arguments.number"}),
    ("list_incidents", {"limit": 0, "state": "closed"}, "", {"arguments.limit", "arguments.state"}),
    ("update_incident", {"number": "INC0010001"}, "k", {"arguments"}),
    ("update_incident", {"number": "INC0010001", "state": "Canceled"}, "k", {"arguments.state"}),
    ("request_catalog_item", {"item": "headset", "quantity": 0}, "k", {"arguments.quantity"}),
    ("approve", {"comment": "ok"}, "k", {"arguments"}),
    ("reject", {"number": "REQ0010001"}, "k", {"arguments.number"}),
    ("get_request", {"number": "RITM1", "extra": True}, "", {"arguments.number", "arguments.extra"}),
])
async def test_bad_arguments_are_invalid_with_field_violations(stack: Stack, action: str, arguments: dict[str, Any],
                                                               key: str, fields: set[str]) -> None:
    args = struct_pb2.Struct()
    args.update(arguments)
    request = connector_service_pb2.InvokeRequest(
        action=action, arguments=args, idempotency_key=key,
        credential=connector_pb2.Credential(kind=connector_pb2.CREDENTIAL_KIND_USER, scheme="Bearer",
                                            token=await stack.token("acme", ALICE)),
        instance=connector_pb2.InstanceSettings(base_url=stack.base_urls["acme"]))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.stub.Invoke(request, metadata=client.metadata(stack.minter.mint_user("acme", ALICE)), timeout=5)
    details = details_of(info.value)
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
    assert {f for f, _ in details.field_violations} == fields
    assert not (await stack.counters())["calls"]


# --- tenants -------------------------------------------------------------------------------------------------
async def test_tenants_are_isolated(stack: Stack) -> None:
    assert stack.base_urls["acme"] != stack.base_urls["globex"]
    result, _ = await stack.invoke(IVAN, "list_incidents", {"caller": JUDY}, tenant="globex")
    assert numbers(result) == ["INC0020001"]
    details = await stack.fails(IVAN, "get_incident", {"number": "INC0010001"}, tenant="globex")
    assert details.code == grpc.StatusCode.NOT_FOUND
    created, _ = await stack.invoke(JUDY, "create_incident", {"short_description": "Build agent down"},
                                    tenant="globex")
    assert created["number"] == "INC0020002"
    assert (await stack.counters())["created"] == {"globex:incident": 1}


async def test_oauth_authorization_code_and_refresh(stack: Stack) -> None:
    base = stack.base_urls["acme"]
    async with stack.http.get(f"{base}/oauth_auth.do", allow_redirects=False, params={
            "response_type": "code", "client_id": SANDBOX_CLIENT_ID, "redirect_uri": "http://localhost/cb",
            "login_hint": CAROL, "state": "s1"}) as resp:
        assert resp.status == 302
        code = parse_qs(urlparse(resp.headers["Location"]).query)["code"][0]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": "http://localhost/cb",
            "client_id": SANDBOX_CLIENT_ID, "client_secret": SANDBOX_CLIENT_SECRET}
    async with stack.http.post(f"{base}/oauth_token.do", data=form) as resp:
        tokens = await resp.json()
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "useraccount"
    result, _ = await stack.invoke(CAROL, "list_approvals", token=tokens["access_token"])
    assert numbers(result, "approvals") == ["RITM0010002"]
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
            "client_id": SANDBOX_CLIENT_ID, "client_secret": SANDBOX_CLIENT_SECRET}
    async with stack.http.post(f"{base}/oauth_token.do", data=form) as resp:
        refreshed = await resp.json()
    result, _ = await stack.invoke(CAROL, "list_approvals", token=refreshed["access_token"])
    assert result["total"] == 1
    details = await stack.fails(CAROL, "list_approvals", token=tokens["access_token"])  # rotated away
    assert details.code == grpc.StatusCode.UNAUTHENTICATED


# --- permissions come from roles, ownership and managers, not from who the demo users are --------------------
@pytest.mark.parametrize("seed", [random.randrange(1 << 30)])
async def test_permissions_hold_on_a_generated_tenant(stack: Stack, seed: int) -> None:
    data = generate_tenant(seed)
    tenant, sn = data["tenant"]["id"], data["servicenow"]
    roles = {p["email"]: set(p["servicenow_roles"]) for p in data["users"]}
    seeded = sn["requested_items"][0]
    requester, approver = seeded["requested_for"], seeded["approver"]
    agent = next(e for e, r in roles.items() if "itil" in r and e != approver)
    bystander, incident = next((e, i) for e, r in roles.items() if not r
                               for i in sn["incidents"] if i["caller"] != e)
    owner, item = incident["caller"], next(i["name"] for i in sn["catalog_items"] if i["approval"] == "manager")
    sandbox = ServiceNowSandbox({tenant: data})
    running = await start_sandboxes([sandbox])
    generated = Stack(sandbox, running.base_urls["servicenow"], stack.stub, stack.http, stack.minter)
    try:
        hidden = await generated.fails(bystander, "get_incident", {"number": incident["number"]}, tenant=tenant)
        assert hidden.code == grpc.StatusCode.NOT_FOUND
        on_behalf, _ = await generated.invoke(bystander, "create_incident", {
            "short_description": "Projector", "caller": owner}, tenant=tenant)
        denied = await generated.fails(bystander, "update_incident", {
            "number": on_behalf["number"], "state": "Resolved"}, tenant=tenant)
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED
        by_agent, _ = await generated.invoke(agent, "update_incident", {
            "number": incident["number"], "assigned_to": agent, "state": "In Progress"}, tenant=tenant)
        assert by_agent["assigned_to"]["email"] == agent
        by_owner, _ = await generated.invoke(owner, "update_incident", {
            "number": incident["number"], "state": "Resolved"}, tenant=tenant)
        assert by_owner["state"] == "Resolved"

        for outsider in {agent, bystander} - {approver}:
            refused = await generated.fails(outsider, "approve", {"number": seeded["number"]}, tenant=tenant)
            assert refused.code == grpc.StatusCode.NOT_FOUND
        pending, _ = await generated.invoke(approver, "list_approvals", tenant=tenant)
        assert seeded["number"] in numbers(pending, "approvals")
        approved, _ = await generated.invoke(approver, "approve", {"number": seeded["number"]}, tenant=tenant)
        assert approved["state"] == "approved" and approved["approver"]["email"] == approver
        ordered, _ = await generated.invoke(requester, "request_catalog_item", {"item": item.lower()}, tenant=tenant)
        assert ordered["approval"] == "requested"
        request, _ = await generated.invoke(requester, "get_request", {"number": ordered["number"]}, tenant=tenant)
        assert [a["email"] for a in request["approvers"]] == [approver]  # the requester's manager
    finally:
        await running.close()
