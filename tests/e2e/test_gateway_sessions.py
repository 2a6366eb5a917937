"""Sessions and runs: follow-ups, declined confirmations, re-attaching to a run after a broken stream."""

from __future__ import annotations

import uuid

import grpc
import pytest

from agentmesh.agent.v1 import agent_service_pb2 as pb
from agentmesh.common.v1 import common_pb2
from connectors.cli import reset_all
from gateway.evalrun import ask_json
from mesh.errors import details_of
from tests.e2e.conftest import Mesh

ALICE, ERIN = "alice.nguyen@acme.example", "erin.walsh@acme.example"
CAROL = "carol.diaz@acme.example"


@pytest.fixture(autouse=True)
async def fixture_state(mesh: Mesh) -> None:
    await reset_all(mesh.endpoints["sandbox_admin"])


def _steps(events: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in events if e["type"] == "step"]


async def test_a_follow_up_assigns_the_issue_the_session_just_created(mesh: Mesh) -> None:
    session = f"e2e-{uuid.uuid4().hex}"
    async with mesh.client() as c:
        first = await ask_json(c, ALICE, "Create a bug in ENG: login page is slow", session_id=session)
        created = _steps(first)[0]
        assert created["tool"] == "jira.create_issue" and created["status"] == "ok"
        key = str(created["summary"]).split()[1]
        assert key.startswith("ENG-")
        follow = await ask_json(c, ALICE, "and assign it to Carol", session_id=session)
    step = _steps(follow)[0]
    assert step["tool"] == "jira.assign_issue" and step["status"] == "ok"
    assert step["args"] == {"key": key, "assignee": CAROL}
    assert follow[-1]["outcome"] == "answered" and key in str(follow[-1]["text"])


async def test_a_follow_up_assigns_the_incident_the_session_just_opened(mesh: Mesh) -> None:
    session = f"e2e-{uuid.uuid4().hex}"
    async with mesh.client() as c:
        first = await ask_json(c, ERIN, "Open a ticket: the printer on floor 3 is jammed", session_id=session)
        created = _steps(first)[0]
        number = str(created["summary"]).split()[1]
        assert created["tool"] == "servicenow.create_incident" and number.startswith("INC")
        follow = await ask_json(c, ERIN, "and assign it to Carol", session_id=session)
    steps = _steps(follow)
    assert steps and steps[0]["tool"] == "servicenow.update_incident" and steps[0]["status"] == "ok"
    assert steps[0]["args"]["number"] == number and steps[0]["args"]["assigned_to"] == CAROL  # type: ignore[index]


async def test_a_declined_confirmation_skips_the_step_and_does_nothing(mesh: Mesh) -> None:
    async def decline(approval: pb.ApprovalNeeded) -> bool:
        assert approval.tool == "okta.add_user_to_group" and approval.run_id
        return False

    async with mesh.client() as c:
        turn = await c.turn("Add Alice to the Salesforce-Users group", user=ERIN, confirm=decline)
    kinds = [e.WhichOneof("event") for e in turn.events]
    assert "approval_needed" in kinds and kinds[-1] == "final"
    skipped = [e.step_finished for e in turn.events if e.HasField("step_finished")]
    assert skipped and skipped[-1].status == common_pb2.STEP_STATUS_SKIPPED
    assert skipped[-1].error.reason == "CONFIRMATION_DECLINED"
    assert turn.final is not None and turn.final.outcome == common_pb2.OUTCOME_NO_ACTION
    sequences = [e.sequence for e in turn.events]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)  # one run, one numbering


async def test_a_broken_stream_re_attaches_to_its_run_and_sees_the_rest(mesh: Mesh) -> None:
    async with mesh.client() as c:
        call = c.converse(pb.ConverseRequest(text="What's on my plate in Jira and ServiceNow?"), user=ALICE)
        first = await call.read()
        assert first.HasField("accepted")
        call.cancel()  # the client's connection broke after the first event
        run_id = first.accepted.run_id
        seen = [e.event async for e in c.watch(run_id, after_sequence=first.sequence, user=ALICE, timeout_s=20)]
        replay = [e.event async for e in c.watch(run_id, user=ALICE, timeout_s=20)]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in c.watch(run_id, user=ERIN, timeout_s=5):
                pass
    assert [e.sequence for e in seen] == list(range(2, 2 + len(seen)))
    assert seen[-1].HasField("final") and seen[-1].final.outcome == common_pb2.OUTCOME_ANSWERED
    assert {"ENG-101", "INC0010001"} <= {w for w in seen[-1].final.text.replace(",", " ").split()}
    assert replay[0].HasField("accepted") and [e.sequence for e in replay] == list(range(1, 1 + len(replay)))
    assert details_of(info.value).code == grpc.StatusCode.NOT_FOUND  # another user's run is not there for Erin
