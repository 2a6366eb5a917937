"""What chat surfaces show: progress folded from events, throttled updates, Block Kit, and `ask --json` lines."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import duration_pb2, struct_pb2

from agentmesh.agent.v1 import agent_service_pb2 as pb
from agentmesh.common.v1 import common_pb2
from gateway.channels.progress import Approval, Progress, relay
from gateway.channels.slack_blocks import APPROVE, DECLINE, answer_blocks, approval_blocks, progress_blocks
from gateway.client import Failure
from gateway.events import JsonLines
from gateway.keys import digest, new_key, parse


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


PLAN = pb.ConverseResponse(plan=common_pb2.Plan(steps=[
    common_pb2.PlanStep(id="s1", tool="servicenow.create_incident", description="Open an incident",
                        arguments=_struct({"short_description": "VPN drops", "urgency": 2, "caller": "a@x.example"}),
                        effect=common_pb2.EFFECT_WRITE),
    common_pb2.PlanStep(id="s2", tool="okta.get_user", arguments=_struct({"user": "a@x.example"}),
                        effect=common_pb2.EFFECT_READ)]))
NOT_LINKED = pb.ConverseResponse(step_finished=common_pb2.StepResult(
    step_id="s2", tool="okta.get_user", status=common_pb2.STEP_STATUS_FAILED, effect=common_pb2.EFFECT_READ,
    error=common_pb2.StepError(code="FAILED_PRECONDITION", reason="ACCOUNT_NOT_LINKED", message="link Okta first",
                               metadata={"connector": "okta", "link_url": "http://idp.example/authorize?x=1"})))
CREATED = pb.ConverseResponse(step_finished=common_pb2.StepResult(
    step_id="s1", tool="servicenow.create_incident", status=common_pb2.STEP_STATUS_OK, summary="INC0010042 created",
    effect=common_pb2.EFFECT_WRITE, arguments=_struct({"short_description": "VPN drops", "urgency": 2,
                                                        "caller": "a@x.example", "category": "network"})))
FINAL = pb.ConverseResponse(final=pb.Final(outcome=common_pb2.OUTCOME_FAILED, text="Opened INC0010042.",
                                           duration=duration_pb2.Duration(seconds=1, nanos=500_000_000)))


class RecordingSurface:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    async def start(self, progress: Progress) -> None:
        self.calls.append(("start", [s.status for s in progress.steps]))

    async def update(self, progress: Progress) -> None:
        self.calls.append(("update", [s.status for s in progress.steps]))

    async def ask(self, progress: Progress, approval: Approval) -> None:
        self.calls.append(("ask", [approval.step_id]))

    async def finish(self, progress: Progress) -> None:
        self.calls.append(("finish", [s.status for s in progress.steps]))


async def _events(*events: pb.ConverseResponse) -> AsyncIterator[pb.ConverseResponse]:
    for event in events:
        await asyncio.sleep(0)  # events arrive over time, not all at once
        yield event


def test_progress_folds_plan_steps_links_and_the_answer() -> None:
    progress = Progress(request="VPN drops, open a ticket and show my profile")
    for event in (PLAN, pb.ConverseResponse(step_started=pb.StepStarted(step_id="s1", tool="x")), CREATED,
                  NOT_LINKED, pb.ConverseResponse(answer_token="Opened "), FINAL):
        progress.apply(event)
    assert [(s.step_id, s.status) for s in progress.steps] == [("s1", "ok"), ("s2", "failed")]
    assert progress.steps[0].summary == "INC0010042 created" and progress.steps[0].label == "Open an incident"
    assert progress.links == {"okta": "http://idp.example/authorize?x=1"}
    assert progress.answer == "Opened INC0010042." and progress.outcome == "failed" and progress.duration_s == 1.5


async def test_relay_throttles_updates_and_finishes_with_the_final_state() -> None:
    surface = RecordingSurface()
    progress = Progress(request="r")
    await relay(_events(PLAN, pb.ConverseResponse(step_started=pb.StepStarted(step_id="s1")), CREATED, NOT_LINKED,
                        FINAL), surface, progress, interval_s=3600)
    names = [name for name, _ in surface.calls]
    assert names[-1] == "finish" and surface.calls[-1][1] == ["ok", "failed"]
    assert 1 <= names.count("update") <= 2  # a burst of four changes within the interval costs at most two calls
    assert "update" not in names[names.index("finish"):]


async def test_relay_asks_for_a_confirmation() -> None:
    surface = RecordingSurface()
    approval = pb.ConverseResponse(approval_needed=pb.ApprovalNeeded(run_id="r1", step_id="s1", tool="okta.x",
                                                                     prompt="Reset MFA?"))
    await relay(_events(PLAN, approval), surface, Progress(request="r"), interval_s=0)
    assert ("ask", ["s1"]) in surface.calls and surface.calls[-1][0] == "ask"


def test_block_kit_progress_approval_and_answer() -> None:
    progress = Progress(request="Reset Frank's MFA")
    progress.apply(PLAN)
    progress.apply(CREATED)
    text, blocks = progress_blocks(progress)
    rendered = json.dumps(blocks, ensure_ascii=False)
    assert "Working on it" in text and ":white_check_mark: Open an incident — INC0010042 created" in rendered
    _, blocks = approval_blocks(Approval("run-1", "s3", "okta.reset_factors", "Reset Frank's MFA?",
                                         {"user": "frank@x.example"}), {"run": "run-1", "step": "s3"})
    buttons = blocks[-1]["elements"]
    assert [b["action_id"] for b in buttons] == [APPROVE, DECLINE]
    assert json.loads(buttons[0]["value"]) == {"run": "run-1", "step": "s3"}
    progress.apply(NOT_LINKED)
    progress.apply(FINAL)
    text, blocks = answer_blocks(progress)
    assert text == "Opened INC0010042."
    link = next(b for b in blocks if b.get("accessory"))
    assert link["accessory"]["url"] == "http://idp.example/authorize?x=1" and "Okta" in link["text"]["text"]
    assert blocks[-1]["type"] == "context" and "1/2 steps done" in blocks[-1]["elements"][0]["text"]


def test_json_lines_follow_the_eval_schema() -> None:
    lines = JsonLines()
    accepted = pb.ConverseResponse(accepted=pb.Accepted(request_id="q1", run_id="r1", session_id="s"))
    skipped = pb.ConverseResponse(step_finished=common_pb2.StepResult(step_id="s2", tool="okta.get_user",
                                                                       status=common_pb2.STEP_STATUS_SKIPPED))
    out = [o for e in (accepted, PLAN, CREATED, skipped, accepted, FINAL) for o in lines.event(e)]
    assert [o["type"] for o in out] == ["accepted", "plan", "step", "step", "final"]
    assert out[0]["request_id"] == "q1"
    assert out[1]["steps"][0]["args"] == {"short_description": "VPN drops", "urgency": 2, "caller": "a@x.example"}
    assert out[2] == {**out[2], "id": "s1", "effect": "WRITE", "status": "ok", "error": None,
                      "args": {"short_description": "VPN drops", "urgency": 2, "caller": "a@x.example",
                               "category": "network"}}
    assert out[3]["args"] == {"user": "a@x.example"} and out[3]["effect"] == "READ"  # the planned arguments
    assert out[4]["outcome"] == "failed" and out[4]["text"] == "Opened INC0010042."
    assert lines.failure(Failure("UNAVAILABLE", "UPSTREAM_UNAVAILABLE", "down")) == []  # one final only
    fresh = JsonLines()
    closing = fresh.failure(Failure("RESOURCE_EXHAUSTED", "RATE_LIMITED", "slow down"))
    assert closing[0]["type"] == "final" and closing[0]["outcome"] == "failed" and "RATE_LIMITED" in closing[0]["text"]


def test_api_keys_are_high_entropy_and_parse_to_tenant_and_id() -> None:
    key_id, key = new_key("acme")
    other_id, other = new_key("acme")
    assert key != other and key_id != other_id
    assert parse(key) == ("acme", key_id)
    assert parse(key + "x") is None and parse("amk.acme.123.abc") is None and parse("") is None
    assert len(digest(key)) == 32 and digest(key) != digest(other)
