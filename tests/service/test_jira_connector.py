"""The Jira connector over real gRPC against the Jira sandbox: every action, permissions, pagination, faults."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from jsonschema import Draft202012Validator, FormatChecker

from agentmesh.connector.v1 import connector_pb2, connector_service_pb2, connector_service_pb2_grpc
from connectors.common.fixturegen import fixtures_with_generated
from connectors.common.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, load_fixtures, start_sandboxes
from connectors.common.server import create_connector_server
from connectors.jira.manifest import ACTIONS
from connectors.jira.sandbox import JiraSandbox
from connectors.jira.vendor import IDEMPOTENCY_PROPERTY, JiraVendor
from mesh import client
from mesh.errors import ErrorDetails, details_of
from mesh.principal import Minter

FIXTURES = load_fixtures()
CLOUD = {tenant: data["jira"]["cloud_id"] for tenant, data in FIXTURES.items()}
ACCOUNT = {(tenant, u["email"]): u["jira_account_id"] for tenant, data in FIXTURES.items() for u in data["users"]}
RESULT_SCHEMAS = {a["name"]: Draft202012Validator(a["result_schema"], format_checker=FormatChecker())
                  for a in ACTIONS}
API = "/rest/api/3"
SEARCH_ROUTE = "GET /ex/jira/{cloud_id}/rest/api/3/search/jql"

ALICE = "alice.nguyen@acme.example"
BOB = "bob.smith@acme.example"
CAROL = "carol.diaz@acme.example"
ERIN = "erin.walsh@acme.example"
FRANK = "frank.miller@acme.example"
JUDY = "judy.chen@globex.example"


@dataclass
class Jira:
    """The running sandbox and connector, with helpers that call them as the demo users would."""

    sandbox: JiraSandbox
    base_urls: dict[str, str]
    admin: str
    stub: connector_service_pb2_grpc.ConnectorServiceStub
    http: aiohttp.ClientSession
    minter: Minter
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    async def token(self, tenant: str, user: str) -> str:
        if (tenant, user) not in self.tokens:
            async with self.http.post(f"{self.admin}/__sandbox/tokens", json={"tenant": tenant, "user": user}) as r:
                assert r.status == 200, await r.text()
                self.tokens[(tenant, user)] = (await r.json())["access_token"]
        return self.tokens[(tenant, user)]

    async def invoke(self, tenant: str, user: str, action: str, arguments: dict[str, Any], *, key: str | None = None,
                     token: str | None = None, deadline_s: float = 5.0,
                     base_url: str | None = None) -> tuple[dict[str, Any], connector_service_pb2.InvokeResponse]:
        args = struct_pb2.Struct()
        args.update(arguments)
        effect = next(a["effect"] for a in ACTIONS if a["name"] == action) if action in RESULT_SCHEMAS else "READ"
        request = connector_service_pb2.InvokeRequest(
            action=action, arguments=args,
            idempotency_key=key if key is not None else (uuid.uuid4().hex if effect == "WRITE" else ""),
            credential=connector_pb2.Credential(kind=connector_pb2.CREDENTIAL_KIND_USER, scheme="Bearer",
                                                token=token if token is not None else await self.token(tenant, user)),
            instance=connector_pb2.InstanceSettings(base_url=base_url or self.base_urls[tenant],
                                                    cloud_id=CLOUD.get(tenant, "")))
        principal = self.minter.mint_user(tenant, user, ["Everyone"])
        response = await self.stub.Invoke(request, metadata=client.metadata(principal), timeout=deadline_s)
        result = json_format.MessageToDict(response.result)
        errors = list(RESULT_SCHEMAS[action].iter_errors(result))
        assert not errors, [e.message for e in errors]
        return result, response

    async def fail(self, tenant: str, user: str, action: str, arguments: dict[str, Any], **kw: Any) -> ErrorDetails:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await self.invoke(tenant, user, action, arguments, **kw)
        return details_of(info.value)

    async def rest(self, method: str, tenant: str, user: str, path: str, **kw: Any) -> tuple[int, Any]:
        """A direct call to the sandbox's REST API as a user."""
        headers = {"Authorization": f"Bearer {await self.token(tenant, user)}"}
        async with self.http.request(method, f"{self.base_urls[tenant]}{API}{path}", headers=headers, **kw) as r:
            return r.status, (await r.json() if r.content_type == "application/json" else await r.text())

    async def faults(self, **faults: Any) -> None:
        async with self.http.put(f"{self.admin}/__sandbox/faults", json=faults) as r:
            assert r.status == 200

    async def counters(self) -> dict[str, dict[str, int]]:
        async with self.http.get(f"{self.admin}/__sandbox/counters") as r:
            counters: dict[str, dict[str, int]] = await r.json()
            return counters


@pytest.fixture(scope="module")
async def stack(mesh_config, minter) -> AsyncIterator[Jira]:
    sandbox = JiraSandbox(FIXTURES)
    running = await start_sandboxes([sandbox])
    vendor = JiraVendor(timeout_s=5.0)
    server = await create_connector_server(mesh_config, vendor)
    channel = client.channel(f"127.0.0.1:{server.port}")
    async with aiohttp.ClientSession() as http:
        yield Jira(sandbox, running.base_urls["jira"], running.admin_urls["jira"],
                   connector_service_pb2_grpc.ConnectorServiceStub(channel), http, minter)
    await channel.close()
    await server.stop(0)
    await vendor.close()
    await running.close()


@pytest.fixture
async def jira(stack: Jira) -> Jira:
    async with stack.http.post(f"{stack.admin}/__sandbox/reset") as r:
        assert r.status == 200
    return stack


def _fields(details: ErrorDetails) -> dict[str, str]:
    return dict(details.field_violations)


# --- contract and account linking ------------------------------------------------------------------------
async def test_describe_serves_every_catalog_action(jira: Jira, minter: Minter) -> None:
    response = await jira.stub.Describe(connector_service_pb2.DescribeRequest(),
                                        metadata=client.metadata(minter.mint_user("acme", ALICE)), timeout=5)
    assert response.manifest.connector == "jira"
    assert {a.name for a in response.manifest.actions} == {"create_issue", "get_issue", "search_issues",
                                                           "add_comment", "transition_issue", "assign_issue"}


async def test_oauth_linking_gateway_urls_and_scopes(jira: Jira) -> None:
    acme, globex = urlsplit(jira.base_urls["acme"]), urlsplit(jira.base_urls["globex"])
    assert acme.netloc == globex.netloc, "one app serves every site, as api.atlassian.com does"
    assert acme.path == f"/ex/jira/{CLOUD['acme']}" and globex.path == f"/ex/jira/{CLOUD['globex']}"

    redirect = "http://127.0.0.1/callback"
    async with jira.http.get(f"{jira.admin}/authorize", allow_redirects=False, params={
            "audience": "api.atlassian.com", "client_id": SANDBOX_CLIENT_ID, "response_type": "code",
            "redirect_uri": redirect, "state": "s1", "login_hint": ALICE,
            "scope": "read:jira-work read:jira-user offline_access"}) as r:
        assert r.status == 302
        query = parse_qs(urlsplit(r.headers["Location"]).query)
    assert query["state"] == ["s1"]
    form = {"grant_type": "authorization_code", "client_id": SANDBOX_CLIENT_ID,
            "client_secret": SANDBOX_CLIENT_SECRET, "code": query["code"][0], "redirect_uri": redirect}
    async with jira.http.post(f"{jira.admin}/oauth/token", data=form) as r:
        grant = await r.json()
    token = grant["access_token"]
    async with jira.http.get(f"{jira.admin}/oauth/token/accessible-resources",
                             headers={"Authorization": f"Bearer {token}"}) as r:
        sites = await r.json()
    assert [(s["id"], s["url"]) for s in sites] == [(CLOUD["acme"], "https://acme.atlassian.net")]

    result, _ = await jira.invoke("acme", ALICE, "get_issue", {"key": "ENG-101"}, token=token)
    assert result["key"] == "ENG-101"
    denied = await jira.fail("acme", ALICE, "add_comment", {"key": "ENG-101", "comment": "hi"}, token=token)
    assert (denied.code, denied.reason) == (grpc.StatusCode.UNAUTHENTICATED, "VENDOR_UNAUTHENTICATED")
    assert "scope does not match" in denied.message

    refresh = {"grant_type": "refresh_token", "client_id": SANDBOX_CLIENT_ID,
               "client_secret": SANDBOX_CLIENT_SECRET, "refresh_token": grant["refresh_token"]}
    async with jira.http.post(f"{jira.admin}/oauth/token", data=refresh) as r:
        renewed = (await r.json())["access_token"]
    result, _ = await jira.invoke("acme", ALICE, "get_issue", {"key": "ENG-102"}, token=renewed)
    assert result["key"] == "ENG-102"
    stale = await jira.fail("acme", ALICE, "get_issue", {"key": "ENG-102"}, token=token)
    assert stale.code == grpc.StatusCode.UNAUTHENTICATED


# --- get_issue and visibility ------------------------------------------------------------------------------
async def test_get_issue_names_people_beside_ids(jira: Jira) -> None:
    result, response = await jira.invoke("acme", ALICE, "get_issue", {"key": "ENG-101"})
    assert result["summary"] == "Payment service p99 latency regression"
    assert (result["status"], result["priority"], result["issue_type"]) == ("In Progress", "High", "Bug")
    assert result["assignee"] == {"name": "Alice Nguyen", "email": ALICE}
    assert result["reporter"] == {"name": "Carol Diaz", "email": CAROL}
    assert result["project"] == {"key": "ENG", "name": "Engineering Platform"}
    assert result["description"] is None
    assert result["url"] == "https://acme.atlassian.net/browse/ENG-101"
    assert result["created"].endswith("+00:00")
    assert "ENG-101" in response.summary and "Alice Nguyen" in response.summary


@pytest.mark.parametrize(("tenant", "user", "key", "visible"), [
    ("acme", BOB, "ENG-101", False),     # Sales: not in ENG's browse groups
    ("acme", BOB, "WEB-7", True),        # WEB is browsable by Everyone
    ("acme", ALICE, "OPS-21", False),    # Engineering: not in OPS's browse groups
    ("acme", ERIN, "OPS-21", True),      # IT
    ("acme", CAROL, "OPS-21", True),     # Managers browse OPS
    ("acme", FRANK, "ENG-103", True),    # Contractors browse ENG
    ("acme", ALICE, "ENG-999", False),   # does not exist: the same answer as not visible
    ("globex", JUDY, "ENG-101", False),  # another tenant's issue
    ("globex", JUDY, "GLX-1", True),
])
async def test_browse_groups_decide_what_a_user_sees(jira: Jira, tenant: str, user: str, key: str,
                                                     visible: bool) -> None:
    if visible:
        result, _ = await jira.invoke(tenant, user, "get_issue", {"key": key})
        assert result["key"] == key
    else:
        details = await jira.fail(tenant, user, "get_issue", {"key": key})
        assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
        assert "does not exist or you do not have permission to see it" in details.message


# --- search_issues -------------------------------------------------------------------------------------------
async def test_search_defaults_to_unresolved_issues_and_combines_filters(jira: Jira) -> None:
    mine, _ = await jira.invoke("acme", ALICE, "search_issues", {"assignee": ALICE})
    assert [i["key"] for i in mine["issues"]] == ["ENG-102", "ENG-101"]
    assert mine["total"] == 2
    assert "assignee = currentUser()" in mine["jql"] and "statusCategory != Done" in mine["jql"]

    theirs, _ = await jira.invoke("acme", ERIN, "search_issues", {"assignee": ALICE, "project": "ENG"})
    assert {i["key"] for i in theirs["issues"]} == {"ENG-101", "ENG-102"}
    assert f'assignee = "{ACCOUNT[("acme", ALICE)]}"' in theirs["jql"]

    carol, _ = await jira.invoke("acme", CAROL, "search_issues", {"assignee": CAROL})
    assert carol["issues"] == [] and carol["total"] == 0
    done, _ = await jira.invoke("acme", CAROL, "search_issues", {"assignee": CAROL, "status": "Done"})
    assert [(i["key"], i["assignee"]["name"]) for i in done["issues"]] == [("WEB-7", "Carol Diaz")]

    text, _ = await jira.invoke("acme", ALICE, "search_issues", {"text": "latency REGRESSION"})
    assert [i["key"] for i in text["issues"]] == ["ENG-101"]
    assert 'text ~ "latency REGRESSION"' in text["jql"]

    combined, _ = await jira.invoke("acme", ALICE, "search_issues", {
        "jql": "priority IN (High, Low) OR summary ~ flaky ORDER BY key ASC", "project": "ENG"})
    assert [i["key"] for i in combined["issues"]] == ["ENG-101", "ENG-103"]
    assert combined["jql"].endswith("ORDER BY key ASC")

    bob = await jira.fail("acme", BOB, "search_issues", {"project": "ENG"})
    assert bob.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "The value 'ENG' does not exist for the field 'project'." in _fields(bob)["arguments.project"]


@pytest.mark.parametrize(("jql", "keys"), [
    ('reporter = currentUser() AND statusCategory = "To Do"', ["ENG-102"]),
    ('project = ENG AND status != "To Do" ORDER BY priority DESC', ["ENG-101"]),
    ('summary ~ "checkout flaky" OR key = WEB-7 ORDER BY key', ["ENG-103", "WEB-7"]),
    ("assignee IS EMPTY AND project IN (ENG, WEB)", ["ENG-103"]),
    ("statusCategory = Done", ["WEB-7"]),
])
async def test_jql_subset_through_the_connector(jira: Jira, jql: str, keys: list[str]) -> None:
    result, _ = await jira.invoke("acme", ALICE, "search_issues", {"jql": jql})
    assert [i["key"] for i in result["issues"]] == keys


@pytest.mark.parametrize(("jql", "message"), [
    ("ORDER BY created DESC", "Unbounded JQL queries are not allowed here"),
    ("project = ENG AND", "Expecting a field name but got ')'"),
    ("created > -7d", "The operator '>' is not supported"),
    ("projectx = ENG", "Field 'projectx' does not exist"),
    ("assignee = nobody()", "Unable to find JQL function 'nobody()'"),
    ('status = "Blocked"', "The value 'Blocked' does not exist for the field 'status'"),
    ('summary = "exact"', "The operator '=' is not supported by the 'summary' field"),
])
async def test_bad_jql_gets_jiras_own_refusal(jira: Jira, jql: str, message: str) -> None:
    details = await jira.fail("acme", ALICE, "search_issues", {"jql": jql})
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in _fields(details)["arguments.jql"]


async def test_search_follows_next_page_token_beyond_a_page(jira: Jira) -> None:
    for n in range(60):
        status, _ = await jira.rest("POST", "acme", BOB, "/issue", json={"fields": {
            "project": {"key": "WEB"}, "summary": f"Copy fix {n}", "issuetype": {"name": "Task"}}})
        assert status == 201
    before = (await jira.counters())["calls"].get(f"acme:{SEARCH_ROUTE}", 0)
    result, _ = await jira.invoke("acme", BOB, "search_issues", {"project": "WEB", "limit": 100})
    keys = [i["key"] for i in result["issues"]]
    assert len(keys) == len(set(keys)) == 60 and result["total"] == 60
    assert keys[0] == "WEB-67" and keys[-1] == "WEB-8", "newest first; the Done WEB-7 is left out"
    assert (await jira.counters())["calls"][f"acme:{SEARCH_ROUTE}"] - before == 2

    capped, _ = await jira.invoke("acme", BOB, "search_issues", {"project": "WEB", "limit": 55})
    assert len(capped["issues"]) == 55 and capped["total"] == 60


# --- create_issue --------------------------------------------------------------------------------------------
async def test_create_issue_sends_adf_and_resolves_the_assignee(jira: Jira) -> None:
    key = uuid.uuid4().hex
    result, response = await jira.invoke("acme", ALICE, "create_issue", {
        "project": "ENG", "summary": "Android upload crash", "issue_type": "Bug", "priority": "High",
        "description": "Steps: upload a photo\non Android 14\n\nExpected: no crash", "assignee": CAROL}, key=key)
    assert result["key"] == "ENG-104" and not response.replayed
    assert (result["status"], result["priority"], result["issue_type"]) == ("To Do", "High", "Bug")
    assert result["assignee"] == {"name": "Carol Diaz", "email": CAROL}
    assert result["reporter"] == {"name": "Alice Nguyen", "email": ALICE}
    assert result["url"] == "https://acme.atlassian.net/browse/ENG-104"

    status, raw = await jira.rest("GET", "acme", ALICE, "/issue/ENG-104")
    description = raw["fields"]["description"]
    assert (description["type"], description["version"]) == ("doc", 1)
    assert [b["type"] for b in description["content"]] == ["paragraph", "paragraph"]
    assert raw["fields"]["assignee"]["accountId"] == ACCOUNT[("acme", CAROL)]
    status, prop = await jira.rest("GET", "acme", ALICE, f"/issue/ENG-104/properties/{IDEMPOTENCY_PROPERTY}")
    assert status == 200 and prop["value"] == {"key": key}

    read, _ = await jira.invoke("acme", ALICE, "get_issue", {"key": "ENG-104"})
    assert read["description"] == "Steps: upload a photo\non Android 14\nExpected: no crash"


@pytest.mark.parametrize(("tenant", "user", "arguments", "code", "reason", "field"), [
    ("acme", CAROL, {"project": "OPS", "summary": "s"}, "PERMISSION_DENIED", "VENDOR_DENIED", None),
    ("acme", BOB, {"project": "ENG", "summary": "s"}, "INVALID_ARGUMENT", "VALIDATION_FAILED", "arguments.project"),
    ("acme", ALICE, {"project": "ENG", "summary": "s", "assignee": BOB}, "INVALID_ARGUMENT", "VALIDATION_FAILED",
     "arguments.assignee"),
    ("acme", ALICE, {"project": "ENG", "summary": "s", "assignee": "nobody@acme.example"}, "NOT_FOUND",
     "UNKNOWN_PERSON", None),
    ("acme", ALICE, {"project": "ENG", "summary": "s", "priority": "Urgent"}, "INVALID_ARGUMENT",
     "VALIDATION_FAILED", "arguments.priority"),
    ("globex", JUDY, {"project": "GLX", "summary": "s", "issue_type": "Story"}, "INVALID_ARGUMENT",
     "VALIDATION_FAILED", "arguments.issue_type"),
])
async def test_create_issue_refusals(jira: Jira, tenant: str, user: str, arguments: dict[str, Any], code: str,
                                     reason: str, field: str | None) -> None:
    details = await jira.fail(tenant, user, "create_issue", arguments)
    assert (details.code.name, details.reason) == (code, reason)
    if field:
        assert field in _fields(details)
    assert not (await jira.counters())["created"]


async def test_create_issue_allowed_by_create_groups(jira: Jira) -> None:
    for user, project in ((ERIN, "OPS"), (FRANK, "ENG"), (BOB, "WEB")):
        result, _ = await jira.invoke("acme", user, "create_issue", {"project": project, "summary": "Created"})
        assert result["project"]["key"] == project
    judy, _ = await jira.invoke("globex", JUDY, "create_issue", {"project": "GLX", "summary": "Globex task"})
    assert judy["key"] == "GLX-2"
    assert (await jira.counters())["created"] == {"acme:issue": 3, "globex:issue": 1}


async def test_create_issue_repeated_with_its_key_creates_once(jira: Jira) -> None:
    arguments = {"project": "WEB", "summary": "Dark mode toggle", "issue_type": "Story"}
    first, _ = await jira.invoke("acme", BOB, "create_issue", arguments, key="run-1:s1")
    again, response = await jira.invoke("acme", BOB, "create_issue", arguments, key="run-1:s1")
    assert response.replayed and again == first
    other, response = await jira.invoke("acme", BOB, "create_issue", arguments, key="run-1:s2")
    assert not response.replayed and other["key"] != first["key"]
    assert (await jira.counters())["created"] == {"acme:issue": 2}


async def test_reset_after_commit_then_retry_creates_nothing_twice(jira: Jira) -> None:
    await jira.faults(reset_after_commit=1.0, tenant="acme")
    lost = await jira.fail("acme", ALICE, "create_issue", {"project": "ENG", "summary": "Lost answer"}, key="k-i")
    assert (lost.code, lost.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
    lost = await jira.fail("acme", ALICE, "add_comment", {"key": "ENG-101", "comment": "Lost too"}, key="k-c")
    assert lost.code == grpc.StatusCode.UNAVAILABLE
    assert (await jira.counters())["created"] == {"acme:issue": 1, "acme:comment": 1}, "both writes committed"

    await jira.faults()
    issue, response = await jira.invoke("acme", ALICE, "create_issue", {"project": "ENG", "summary": "Lost answer"},
                                        key="k-i")
    assert response.replayed and issue["key"] == "ENG-104"
    comment, response = await jira.invoke("acme", ALICE, "add_comment", {"key": "ENG-101", "comment": "Lost too"},
                                          key="k-c")
    assert response.replayed and comment["comment"]["text"] == "Lost too"
    assert (await jira.counters())["created"] == {"acme:issue": 1, "acme:comment": 1}
    found, _ = await jira.invoke("acme", ALICE, "search_issues", {"text": "lost answer"})
    assert [i["key"] for i in found["issues"]] == ["ENG-104"]


async def test_create_issue_needs_the_idempotency_property_indexed(jira: Jira) -> None:
    jira.sandbox.sites["acme"].indexed_properties = set()
    details = await jira.fail("acme", ALICE, "create_issue", {"project": "ENG", "summary": "Not indexed"})
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"index the {IDEMPOTENCY_PROPERTY} issue property" in _fields(details)["instance"]
    assert not (await jira.counters())["created"], "no create without a way to find it again"


# --- add_comment -----------------------------------------------------------------------------------------------
async def test_add_comment_as_the_user_in_adf(jira: Jira) -> None:
    result, response = await jira.invoke("acme", ALICE, "add_comment",
                                         {"key": "ENG-101", "comment": "Repro attached.\nSee the thread."}, key="c1")
    assert result["key"] == "ENG-101" and result["summary"] == "Payment service p99 latency regression"
    assert result["comment"]["author"] == {"name": "Alice Nguyen", "email": ALICE}
    assert result["comment"]["text"] == "Repro attached.\nSee the thread."
    status, raw = await jira.rest("GET", "acme", ALICE, "/issue/ENG-101/comment")
    assert raw["total"] == 1 and raw["comments"][0]["body"]["type"] == "doc"
    assert raw["comments"][0]["body"]["content"][0]["content"][1] == {"type": "hardBreak"}

    again, response = await jira.invoke("acme", ALICE, "add_comment",
                                        {"key": "ENG-101", "comment": "Repro attached.\nSee the thread."}, key="c1")
    assert response.replayed and again == result
    managers, _ = await jira.invoke("acme", CAROL, "add_comment", {"key": "OPS-21", "comment": "Status?"})
    assert managers["comment"]["author"]["name"] == "Carol Diaz"
    assert (await jira.counters())["created"] == {"acme:comment": 2}

    hidden = await jira.fail("acme", BOB, "add_comment", {"key": "ENG-101", "comment": "hello"})
    assert hidden.code == grpc.StatusCode.NOT_FOUND


# --- transition_issue ----------------------------------------------------------------------------------------------
async def test_transition_issue_by_target_status_name(jira: Jira) -> None:
    moved, response = await jira.invoke("acme", ALICE, "transition_issue", {"key": "ENG-102", "status": "in progress"})
    assert (moved["previous_status"], moved["status"]) == ("To Do", "In Progress")
    assert "from To Do to In Progress" in response.summary
    status, raw = await jira.rest("GET", "acme", ALICE, "/issue/ENG-102", params={"fields": "status"})
    assert raw["fields"]["status"]["statusCategory"]["key"] == "indeterminate"

    words, _ = await jira.invoke("acme", ALICE, "transition_issue", {"key": "ENG-103", "status": "review"})
    assert words["status"] == "In Review"
    same, _ = await jira.invoke("acme", ALICE, "transition_issue", {"key": "ENG-103", "status": "In Review"})
    assert same["previous_status"] == same["status"] == "In Review"
    done, _ = await jira.invoke("acme", ERIN, "transition_issue", {"key": "OPS-21", "status": "Done"})
    assert done["status"] == "Done"


@pytest.mark.parametrize(("tenant", "user", "key", "status", "code", "reason"), [
    ("acme", ALICE, "ENG-101", "Blocked", "INVALID_ARGUMENT", "VALIDATION_FAILED"),
    ("acme", ALICE, "ENG-101", "in", "FAILED_PRECONDITION", "AMBIGUOUS_REFERENCE"),
    ("acme", CAROL, "OPS-21", "Done", "PERMISSION_DENIED", "VENDOR_DENIED"),    # browses OPS, may not work it
    ("acme", ERIN, "ENG-101", "Done", "PERMISSION_DENIED", "VENDOR_DENIED"),    # IT browses ENG only
    ("acme", BOB, "ENG-101", "Done", "NOT_FOUND", "NOT_FOUND"),
    ("globex", JUDY, "GLX-1", "In Review", "INVALID_ARGUMENT", "VALIDATION_FAILED"),  # no such status there
])
async def test_transition_refusals(jira: Jira, tenant: str, user: str, key: str, status: str, code: str,
                                   reason: str) -> None:
    details = await jira.fail(tenant, user, "transition_issue", {"key": key, "status": status})
    assert (details.code.name, details.reason) == (code, reason)
    if reason == "VALIDATION_FAILED":
        assert "arguments.status" in _fields(details)
    if reason == "AMBIGUOUS_REFERENCE":
        assert details.metadata["candidates"] == "In Progress, In Review"


# --- assign_issue ----------------------------------------------------------------------------------------------------
async def test_assign_issue_by_account_id(jira: Jira) -> None:
    first, response = await jira.invoke("acme", ALICE, "assign_issue", {"key": "ENG-103", "assignee": FRANK})
    assert first["assignee"] == {"name": "Frank Miller", "email": FRANK} and first["previous_assignee"] is None
    assert "was unassigned" in response.summary
    second, _ = await jira.invoke("acme", ALICE, "assign_issue", {"key": "ENG-103", "assignee": CAROL})
    assert second["previous_assignee"] == {"name": "Frank Miller", "email": FRANK}
    status, raw = await jira.rest("GET", "acme", ALICE, "/issue/ENG-103", params={"fields": "assignee"})
    assert raw["fields"]["assignee"]["accountId"] == ACCOUNT[("acme", CAROL)]


@pytest.mark.parametrize(("user", "key", "assignee", "code", "reason"), [
    (ERIN, "OPS-21", ALICE, "INVALID_ARGUMENT", "VALIDATION_FAILED"),   # Alice cannot browse OPS: not assignable
    (CAROL, "OPS-21", ERIN, "PERMISSION_DENIED", "VENDOR_DENIED"),      # Carol browses OPS but may not assign
    (BOB, "ENG-101", BOB, "NOT_FOUND", "NOT_FOUND"),
    (ALICE, "ENG-101", "ghost@acme.example", "NOT_FOUND", "UNKNOWN_PERSON"),
])
async def test_assign_refusals(jira: Jira, user: str, key: str, assignee: str, code: str, reason: str) -> None:
    details = await jira.fail("acme", user, "assign_issue", {"key": key, "assignee": assignee})
    assert (details.code.name, details.reason) == (code, reason)
    if reason == "VALIDATION_FAILED":
        assert "cannot be assigned issues" in _fields(details)["arguments.assignee"]


# --- faults, credentials, validation, tenants ----------------------------------------------------------------------
async def test_rate_limit_is_resource_exhausted_with_retry_info(jira: Jira) -> None:
    await jira.faults(rate_limit=1.0, retry_after_s=7)
    details = await jira.fail("acme", ALICE, "get_issue", {"key": "ENG-101"})
    assert (details.code, details.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert details.retry_after_s == 7.0
    assert details.metadata["vendor_status"] == "429"


@pytest.mark.parametrize("status", ["500", "503"])
async def test_server_errors_are_unavailable(jira: Jira, status: str) -> None:
    await jira.faults(errors={status: 1.0})
    details = await jira.fail("acme", ALICE, "search_issues", {"project": "ENG"})
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
    assert details.metadata["vendor_status"] == status


async def test_latency_beyond_the_deadline_is_unavailable(jira: Jira) -> None:
    await jira.faults(latency={"fixed_ms": 1500})
    details = await jira.fail("acme", ALICE, "get_issue", {"key": "ENG-101"}, deadline_s=0.6)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
    assert "timed out" in details.message


async def test_faults_can_target_one_tenant(jira: Jira) -> None:
    await jira.faults(rate_limit=1.0, tenant="globex")
    result, _ = await jira.invoke("acme", ALICE, "get_issue", {"key": "ENG-101"})
    assert result["key"] == "ENG-101"
    details = await jira.fail("globex", JUDY, "get_issue", {"key": "GLX-1"})
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_vendor_401_is_unauthenticated(jira: Jira) -> None:
    bogus = await jira.fail("acme", ALICE, "get_issue", {"key": "ENG-101"}, token="not-a-token")
    assert (bogus.code, bogus.reason) == (grpc.StatusCode.UNAUTHENTICATED, "VENDOR_UNAUTHENTICATED")
    foreign = await jira.fail("acme", ALICE, "get_issue", {"key": "GLX-1"}, base_url=jira.base_urls["globex"])
    assert foreign.code == grpc.StatusCode.UNAUTHENTICATED, "an acme token is refused on the globex site"


@pytest.mark.parametrize(("action", "arguments", "key", "field"), [
    ("get_issue", {"key": "eng-101"}, None, "arguments.key"),
    ("get_issue", {}, None, "arguments.key"),
    ("create_issue", {"project": "ENG"}, None, "arguments.summary"),
    ("create_issue", {"project": "ENG", "summary": "s", "issue_type": "Epic"}, None, "arguments.issue_type"),
    ("search_issues", {"limit": 0}, None, "arguments.limit"),
    ("search_issues", {"sprint": "42"}, None, "arguments.sprint"),
    ("transition_issue", {"key": "ENG-101"}, None, "arguments.status"),
    ("add_comment", {"key": "ENG-101", "comment": "x"}, "", "idempotency_key"),
])
async def test_bad_arguments_are_refused_before_jira_is_called(jira: Jira, action: str, arguments: dict[str, Any],
                                                               key: str | None, field: str) -> None:
    details = await jira.fail("acme", ALICE, action, arguments, key=key)
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
    assert field in _fields(details)
    assert not (await jira.counters())["calls"]


async def test_tenants_are_isolated(jira: Jira) -> None:
    globex, _ = await jira.invoke("globex", JUDY, "search_issues", {"text": "roadmap"})
    assert [i["key"] for i in globex["issues"]] == ["GLX-1"]
    acme, _ = await jira.invoke("acme", ALICE, "search_issues", {"text": "Globex"})
    assert acme["issues"] == []
    unknown = await jira.fail("globex", JUDY, "assign_issue", {"key": "GLX-1", "assignee": ALICE})
    assert unknown.reason == "UNKNOWN_PERSON", "acme's people are not globex's"


# --- permissions derive from groups: a generated tenant --------------------------------------------------------------
async def test_permissions_derive_from_groups_on_a_generated_tenant(stack: Jira) -> None:
    seed = random.randrange(1 << 30)
    fixtures = fixtures_with_generated(seed)
    tenant = next(t for t in fixtures if t not in FIXTURES)
    fixture = fixtures[tenant]
    running = await start_sandboxes([JiraSandbox(fixtures)])
    try:
        gen = Jira(running.sandboxes["jira"], running.base_urls["jira"], running.admin_urls["jira"], stack.stub,
                   stack.http, stack.minter)
        projects = {p["key"]: p for p in fixture["jira"]["projects"]}
        outcomes: set[str] = set()
        for user in fixture["users"]:
            groups = set(user["groups"])
            for issue in fixture["jira"]["issues"]:
                project = projects[issue["key"].split("-")[0]]
                if groups & set(project["browse_groups"]):
                    result, _ = await gen.invoke(tenant, user["email"], "get_issue", {"key": issue["key"]})
                    assert result["summary"] == issue["summary"]
                    outcomes.add("sees")
                else:
                    details = await gen.fail(tenant, user["email"], "get_issue", {"key": issue["key"]})
                    assert details.code == grpc.StatusCode.NOT_FOUND, (seed, user, issue)
                    outcomes.add("does not see")
            for key, project in projects.items():
                arguments = {"project": key, "summary": "Permission probe"}
                if groups & set(project["create_groups"]):
                    result, _ = await gen.invoke(tenant, user["email"], "create_issue", arguments)
                    assert result["reporter"]["email"] == user["email"]
                    outcomes.add("creates")
                elif groups & set(project["browse_groups"]):
                    details = await gen.fail(tenant, user["email"], "create_issue", arguments)
                    assert details.code == grpc.StatusCode.PERMISSION_DENIED, (seed, user, project)
                    outcomes.add("may not create")
                else:
                    details = await gen.fail(tenant, user["email"], "create_issue", arguments)
                    assert "arguments.project" in _fields(details), (seed, user, project)
                    outcomes.add("cannot name the project")
        assert outcomes == {"sees", "does not see", "creates", "may not create", "cannot name the project"}, seed
        leak = await gen.fail(tenant, fixture["users"][0]["email"], "get_issue", {"key": "ENG-101"})
        assert leak.code == grpc.StatusCode.NOT_FOUND, "the demo tenants' issues stay out of the generated site"
    finally:
        await running.close()
