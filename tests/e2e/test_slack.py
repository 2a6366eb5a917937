"""The Slack app through its bolt endpoint (signed deliveries) and Socket Mode, against a fake Slack."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from agentmesh.registry.v1 import registry_service_pb2, registry_service_pb2_grpc
from connectors.cli import reset_all
from connectors.registry.seed import seed_demo
from gateway.channels.fake_slack import Call, event_callback, signed_headers
from gateway.channels.slack_blocks import ANSWER_BLOCK
from mesh import client as mesh_client
from tests.e2e.conftest import SIGNING_SECRET, Mesh, slack_team

ACME = slack_team("acme")
ALICE, ERIN, GRACE = "UACME0000", "UACME0004", "UACME0006"
HTTP = aiohttp.ClientTimeout(total=10)


@pytest.fixture(autouse=True)
async def fixture_state(mesh: Mesh) -> None:
    await reset_all(mesh.endpoints["sandbox_admin"])


def mention(user: str, text: str, channel: str = "C0GENERAL", thread_ts: str | None = None) -> dict[str, Any]:
    ts = f"{time.time():.6f}"
    event = {"type": "app_mention", "user": user, "text": f"<@UBOTACME> {text}", "ts": ts, "channel": channel,
             "event_ts": ts}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


async def post_event(mesh: Mesh, body: dict[str, Any], *, retry_num: int | None = None,
                     secret: str = SIGNING_SECRET, timestamp: int | None = None) -> tuple[int, str]:
    raw = json.dumps(body)
    async with aiohttp.ClientSession(timeout=HTTP) as http, http.post(
            mesh.slack_events_url, data=raw, headers=signed_headers(secret, raw, timestamp, retry_num)) as resp:
        return resp.status, await resp.text()


async def post_action(mesh: Mesh, payload: dict[str, Any]) -> int:
    raw = urlencode({"payload": json.dumps(payload)})
    headers = signed_headers(SIGNING_SECRET, raw)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    async with aiohttp.ClientSession(timeout=HTTP) as http, http.post(mesh.slack_events_url, data=raw,
                                                                      headers=headers) as resp:
        return resp.status


def in_thread(calls: list[Call], thread_ts: str, method: str = "chat.postMessage") -> list[Call]:
    return [c for c in calls if c.method == method and c.params.get("thread_ts") == thread_ts]


def answers(calls: list[Call], thread_ts: str) -> list[Call]:
    """The final answers posted in a thread (their closing block is the run's summary line)."""
    return [c for c in in_thread(calls, thread_ts) if (c.params.get("blocks") or [{}])[-1].get("block_id")
            == ANSWER_BLOCK]


async def wait_answer(mesh: Mesh, thread_ts: str, count: int = 1) -> list[Call]:
    calls = await mesh.slack.wait_for(lambda calls: len(answers(calls, thread_ts)) >= count, timeout_s=20)
    return answers(calls, thread_ts)


async def test_a_mention_is_acknowledged_then_answered_in_its_thread_with_live_progress(mesh: Mesh) -> None:
    event = mention(ALICE, "Who is my manager?")
    status, _ = await post_event(mesh, event_callback(ACME, event))
    assert status == 200
    assert answers(mesh.slack.calls, event["ts"]) == []  # acknowledged before the work was done
    final = (await wait_answer(mesh, event["ts"]))[0]
    assert "Carol Diaz" in final.params["text"] and final.token == "xoxb-acme-e2e"
    progress = in_thread(mesh.slack.calls, event["ts"])[0]
    assert "Working on it" in progress.params["text"]
    updates = [c for c in mesh.slack.calls_of("chat.update") if c.params["channel"] == "C0GENERAL"
               and "Who is my manager?" in c.params["text"]]
    assert updates and len({u.params["ts"] for u in updates}) == 1  # one message, updated in place
    last = json.dumps(updates[-1].params["blocks"], ensure_ascii=False)
    assert ":white_check_mark:" in last and "Done" in last


async def test_a_retried_delivery_is_not_run_twice(mesh: Mesh) -> None:
    event = mention(ALICE, "What groups am I in?")
    body = event_callback(ACME, event)
    assert (await post_event(mesh, body))[0] == 200
    assert (await post_event(mesh, body, retry_num=1))[0] == 200
    await wait_answer(mesh, event["ts"])
    sentinel = mention(ALICE, "Which apps do I have access to?")
    await post_event(mesh, event_callback(ACME, sentinel))
    await wait_answer(mesh, sentinel["ts"])
    assert len(in_thread(mesh.slack.calls, event["ts"])) == 2  # one progress message and one answer


async def test_unsigned_or_stale_deliveries_are_refused(mesh: Mesh) -> None:
    body = event_callback(ACME, mention(ALICE, "Who is my manager?"))
    assert (await post_event(mesh, body, secret="wrong-secret"))[0] == 401
    assert (await post_event(mesh, body, timestamp=int(time.time()) - 3600))[0] == 401


async def test_a_confirmation_is_asked_with_buttons_and_the_click_continues_the_run(mesh: Mesh) -> None:
    event = mention(ERIN, "Add Alice to the Salesforce-Users group")
    await post_event(mesh, event_callback(ACME, event))
    calls = await mesh.slack.wait_for(lambda calls: any(
        b.get("type") == "actions" for c in in_thread(calls, event["ts"]) for b in c.params.get("blocks") or []))
    ask = next(c for c in in_thread(calls, event["ts"]) if any(b.get("type") == "actions"
                                                               for b in c.params["blocks"]))
    buttons = next(b for b in ask.params["blocks"] if b["type"] == "actions")["elements"]
    approve = next(b for b in buttons if b["action_id"] == "agentmesh_approve")
    message = {"ts": "1700000001.000200", "blocks": ask.params["blocks"], "thread_ts": event["ts"]}
    status = await post_action(mesh, {
        "type": "block_actions", "team": {"id": ACME}, "user": {"id": ERIN, "team_id": ACME},
        "api_app_id": "A0AGENTMESH", "token": "unused", "trigger_id": "1.2.3",
        "container": {"type": "message", "message_ts": message["ts"], "channel_id": "C0GENERAL",
                      "is_ephemeral": False, "thread_ts": event["ts"]},
        "channel": {"id": "C0GENERAL", "name": "general"}, "message": message,
        "actions": [{"action_id": approve["action_id"], "block_id": "agentmesh_confirm", "value": approve["value"],
                     "type": "button", "action_ts": f"{time.time():.6f}"}]})
    assert status == 200
    final = (await wait_answer(mesh, event["ts"]))[0]
    assert "Done" in json.dumps(final.params["blocks"])
    answered = [c for c in mesh.slack.calls_of("chat.update") if c.params.get("ts") == message["ts"]]
    assert answered and f"Approved by <@{ERIN}>" in answered[-1].params["text"]


async def test_a_user_without_a_linked_account_gets_the_link(mesh: Mesh) -> None:
    operator = mesh.minter.mint_operator("e2e@agentmesh", tenant="acme")
    async with mesh_client.channel(mesh.endpoints["services"]["registry"]) as chan:
        stub = registry_service_pb2_grpc.RegistryServiceStub(chan)
        await stub.UnlinkAccount(registry_service_pb2.UnlinkAccountRequest(
            connector="servicenow", tenant_id="acme", user="grace.lee@acme.example"),
            metadata=mesh_client.metadata(operator), timeout=5)
    try:
        event = mention(GRACE, "Show me my open incidents")
        await post_event(mesh, event_callback(ACME, event))
        final = (await wait_answer(mesh, event["ts"]))[0]
        link = next(b for b in final.params["blocks"] if b.get("accessory"))
        assert "ServiceNow" in link["text"]["text"] and link["accessory"]["url"].startswith("http")
    finally:
        await seed_demo(mesh.endpoints, mesh.minter)  # links Grace again


async def test_a_reply_in_the_thread_is_a_follow_up_of_the_same_session(mesh: Mesh) -> None:
    first = mention(ALICE, "Create a bug in ENG: dark mode toggle resets")
    await post_event(mesh, event_callback(ACME, first))
    created = (await wait_answer(mesh, first["ts"]))[0]
    key = next(w.strip(".,\"") for w in created.params["text"].split() if w.startswith("ENG-"))
    reply_ts = f"{time.time():.6f}"
    reply = {"type": "message", "channel_type": "channel", "user": ALICE, "text": "and assign it to Carol",
             "ts": reply_ts, "thread_ts": first["ts"], "channel": "C0GENERAL", "event_ts": reply_ts}
    await post_event(mesh, event_callback(ACME, reply))
    second = (await wait_answer(mesh, first["ts"], count=2))[1]
    assert key in second.params["text"] and "Carol" in second.params["text"]


async def test_a_direct_message_over_socket_mode_is_acknowledged_and_answered(mesh: Mesh) -> None:
    ts = f"{time.time():.6f}"
    event = {"type": "message", "channel_type": "im", "user": ALICE, "text": "Who is my manager?", "ts": ts,
             "channel": f"D{uuid.uuid4().hex[:8].upper()}", "event_ts": ts}
    envelope = await mesh.slack.deliver(event_callback(ACME, event))
    await mesh.slack.wait_ack(envelope)
    final = (await wait_answer(mesh, ts))[0]
    assert "Carol Diaz" in final.params["text"]
