"""The gateway's request path over in-process ports: events, pauses, confirmations, failures, memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from agentmesh.agent.v1 import agent_service_pb2 as agent_pb2
from agentmesh.common.v1 import common_pb2
from agentmesh.executor.v1 import executor_pb2, executor_service_pb2
from agentmesh.memory.v1 import memory_service_pb2
from agentmesh.planner.v1 import planner_service_pb2
from agentmesh.registry.v1 import registry_pb2, registry_service_pb2
from gateway.auth import Caller
from gateway.conversation import Ask, Confirmation, Conversations, Tuning, _Timeline
from gateway.lookups import Lookups
from gateway.ratelimit import Verdict
from gateway.runlog import RunMeta
from mesh.errors import MeshError, Reason
from mesh.principal import KeyRing, Minter

ALICE = Caller("acme", "alice.nguyen@acme.example", "Alice Nguyen", ("Everyone",))


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def _ts(seconds: float) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


def _seconds(value: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(value * 1e9))
    return out


def _result(step_id: str, tool: str, status: int = common_pb2.STEP_STATUS_OK, start: float = 100.0,
            end: float = 100.4, vendor_wait: float | None = None) -> common_pb2.StepResult:
    out = common_pb2.StepResult(step_id=step_id, tool=tool, status=status, summary=f"{tool} done",
                                arguments=_struct({"user": ALICE.user}), effect=common_pb2.EFFECT_READ,
                                start_time=_ts(start), end_time=_ts(end))
    if vendor_wait is not None:
        out.vendor_wait.CopyFrom(_seconds(vendor_wait))
    return out


@dataclass
class FakePeers:
    """The request path's peers, answering from scripts and recording every call."""

    planned: common_pb2.Plan = field(default_factory=common_pb2.Plan)
    execution: list[executor_service_pb2.ExecuteResponse] = field(default_factory=list)
    confirmation: list[executor_service_pb2.ExecuteResponse] = field(default_factory=list)
    planner_error: MeshError | None = None
    calls: list[str] = field(default_factory=list)
    turns: list[tuple[str, str]] = field(default_factory=list)
    audits: list[str] = field(default_factory=list)
    recorded: list[memory_service_pb2.RecordRunRequest] = field(default_factory=list)
    respond_requests: list[planner_service_pb2.RespondRequest] = field(default_factory=list)

    async def build_context(self, who: Any, request: Any, timeout_s: float) -> memory_service_pb2.BuildContextResponse:
        self.calls.append("build_context")
        return memory_service_pb2.BuildContextResponse(context=common_pb2.Context(token_count=3))

    async def append_turn(self, who: Any, session_id: str, turn: common_pb2.Turn, timeout_s: float) -> None:
        self.turns.append((turn.role, turn.text))

    async def record_run(self, who: Any, request: memory_service_pb2.RecordRunRequest, timeout_s: float) -> None:
        self.recorded.append(request)

    async def plan(self, who: Any, request: planner_service_pb2.PlanRequest,
                   timeout_s: float) -> AsyncIterator[planner_service_pb2.PlanResponse]:
        self.calls.append("plan")
        if self.planner_error is not None:
            raise self.planner_error
        yield planner_service_pb2.PlanResponse(token_delta="thinking")
        yield planner_service_pb2.PlanResponse(plan=self.planned)

    async def respond(self, who: Any, request: planner_service_pb2.RespondRequest,
                      timeout_s: float) -> AsyncIterator[planner_service_pb2.RespondResponse]:
        self.calls.append("respond")
        self.respond_requests.append(request)
        yield planner_service_pb2.RespondResponse(text_delta="Your manager ")
        yield planner_service_pb2.RespondResponse(text_delta="is Carol Diaz.")
        yield planner_service_pb2.RespondResponse(answer=planner_service_pb2.Answer(
            text="Your manager is Carol Diaz.", usage=common_pb2.Usage(provider="embedded", output_tokens=7)))

    async def execute(self, who: Any, request: Any,
                      timeout_s: float) -> AsyncIterator[executor_service_pb2.ExecuteResponse]:
        self.calls.append("execute")
        for event in self.execution:
            yield event

    async def confirm(self, who: Any, request: executor_service_pb2.ConfirmStepRequest,
                      timeout_s: float) -> AsyncIterator[executor_service_pb2.ExecuteResponse]:
        self.calls.append(f"confirm:{request.step_id}:{request.approved}")
        for event in self.confirmation:
            yield event

    async def audit(self, who: Any, event: registry_pb2.AuditEvent, timeout_s: float) -> None:
        self.audits.append(event.kind)


class FakeRegistry:
    async def get_tenant(self, operator: Any, tenant: str, timeout_s: float) -> registry_pb2.Tenant:
        policy = _struct({"rate_limits": {"tenant_rps": 50, "user_per_minute": 60}})
        return registry_pb2.Tenant(tenant_id=tenant, policy=policy)

    async def list_tools(self, who: Any, timeout_s: float) -> registry_service_pb2.ListToolsResponse:
        return registry_service_pb2.ListToolsResponse(fingerprint="f1")

    async def list_people(self, who: Any, timeout_s: float) -> list[common_pb2.Person]:
        return [common_pb2.Person(email=ALICE.user, name="Alice Nguyen")]

    async def resolve_person(self, who: Any, query: str, timeout_s: float) -> common_pb2.Person:
        return common_pb2.Person(email=query, name="x", groups=["Everyone"])


@dataclass
class FakeLimiter:
    verdict: Verdict = field(default_factory=lambda: Verdict(True))

    async def admit(self, tenant: str, user: str, limits: Any) -> Verdict:
        return self.verdict


class FakeRunLog:
    def __init__(self) -> None:
        self.metas: dict[str, RunMeta] = {}
        self.events: dict[str, list[tuple[int, bytes]]] = {}

    async def save_meta(self, tenant: str, run_id: str, meta: RunMeta) -> None:
        self.metas[run_id] = meta

    async def meta(self, tenant: str, run_id: str) -> RunMeta | None:
        return self.metas.get(run_id)

    async def claim(self, tenant: str, run_id: str, step_id: str) -> bool:
        meta = self.metas.get(run_id)
        if meta is None or meta.state != "paused" or step_id not in meta.pending:
            return False
        self.metas[run_id] = replace(meta, state="running")
        return True

    async def append(self, tenant: str, run_id: str, events: list[tuple[int, bytes]],
                     meta: RunMeta | None = None) -> None:
        if meta is not None:
            self.metas[run_id] = meta
        self.events.setdefault(run_id, []).extend(events)


@pytest.fixture
def minter(tmp_path: Any) -> Minter:
    return Minter(KeyRing(tmp_path / "keys").ensure())


def conversations(peers: FakePeers, minter: Minter, limiter: FakeLimiter | None = None,
                  runlog: FakeRunLog | None = None) -> Conversations:
    lookups = Lookups(FakeRegistry(), minter)  # type: ignore[arg-type]
    return Conversations(peers, lookups, limiter or FakeLimiter(), minter, runlog or FakeRunLog(),  # type: ignore
                         Tuning(background_timeout_s=1.0))


async def collect(stream: Any) -> list[agent_pb2.ConverseResponse]:
    return [e async for e in stream]


def kinds(events: list[agent_pb2.ConverseResponse]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]


def one_step_plan(tool: str = "okta.get_user") -> common_pb2.Plan:
    return common_pb2.Plan(steps=[common_pb2.PlanStep(id="s1", tool=tool, arguments=_struct({"user": ALICE.user}),
                                                      effect=common_pb2.EFFECT_READ)],
                           usage=common_pb2.Usage(provider="embedded"))


def finished(outcome: int, *results: common_pb2.StepResult,
             state: int = executor_pb2.RUN_STATE_COMPLETED) -> executor_service_pb2.ExecuteResponse:
    run = executor_pb2.Run(state=state, outcome=outcome, steps=list(results), plan=one_step_plan(),
                           usage=common_pb2.Usage(provider="embedded", input_tokens=5))
    return executor_service_pb2.ExecuteResponse(run_finished=executor_service_pb2.RunFinished(run=run))


async def settle(conv: Conversations) -> None:
    await conv.drain(2.0)


async def test_a_request_streams_accepted_plan_steps_answer_and_final_in_order(minter: Minter) -> None:
    peers = FakePeers(planned=one_step_plan(), execution=[
        executor_service_pb2.ExecuteResponse(step_started=executor_service_pb2.StepStarted(
            step_id="s1", tool="okta.get_user")),
        executor_service_pb2.ExecuteResponse(step_finished=_result("s1", "okta.get_user")),
        finished(common_pb2.OUTCOME_ANSWERED, _result("s1", "okta.get_user"))])
    runlog = FakeRunLog()
    conv = conversations(peers, minter, runlog=runlog)
    stream = await conv.converse(ALICE, Ask(text="Who is my manager?", session_id="s-1"))
    events = await collect(stream)
    assert kinds(events) == ["accepted", "plan_token", "plan", "step_started", "step_finished", "answer_token",
                             "answer_token", "final"]
    assert [e.sequence for e in events] == list(range(1, 9))
    final = events[-1].final
    assert final.outcome == common_pb2.OUTCOME_ANSWERED and final.text == "Your manager is Carol Diaz."
    assert [t.step_id for t in final.steps] == ["s1"]
    # 0.4 s of the run was a vendor step; nothing else here waited on a model or a vendor.
    assert final.overhead.ToNanoseconds() <= final.duration.ToNanoseconds()
    assert final.usage.input_tokens == 5 and final.usage.output_tokens == 7
    assert stream.error is None and stream.session_id == "s-1"
    await settle(conv)
    assert peers.turns == [("user", "Who is my manager?"), ("assistant", "Your manager is Carol Diaz.")]
    assert peers.recorded[0].outcome == "answered" and peers.recorded[0].tools == ["okta.get_user"]
    assert "request" in peers.audits
    assert runlog.metas[stream.run_id].state == "ended" and len(runlog.events[stream.run_id]) == 8


async def test_a_plan_without_steps_is_answered_without_the_executor(minter: Minter) -> None:
    peers = FakePeers(planned=common_pb2.Plan(question="What should I do?",
                                              usage=common_pb2.Usage(provider="embedded")))
    conv = conversations(peers, minter)
    events = await collect(await conv.converse(ALICE, Ask(text="Do the thing")))
    assert "execute" not in peers.calls
    assert events[-1].final.outcome == common_pb2.OUTCOME_NO_ACTION
    refused = FakePeers(planned=common_pb2.Plan(refusals=[common_pb2.Refusal(tool="okta.reset_password",
                                                                          reason="not allowed")]))
    conv = conversations(refused, minter)
    events = await collect(await conv.converse(ALICE, Ask(text="Reset Bob's password")))
    assert events[-1].final.outcome == common_pb2.OUTCOME_DENIED
    await settle(conv)


async def test_a_run_pauses_for_approval_and_a_confirmation_streams_the_rest(minter: Minter) -> None:
    awaiting = common_pb2.StepResult(step_id="s1", tool="okta.reset_factors",
                                     status=common_pb2.STEP_STATUS_AWAITING_APPROVAL)
    peers = FakePeers(planned=one_step_plan("okta.reset_factors"), execution=[
        executor_service_pb2.ExecuteResponse(approval_needed=executor_service_pb2.ApprovalNeeded(
            run_id="", step_id="s1", tool="okta.reset_factors", prompt="Reset Frank's MFA factors?")),
        finished(common_pb2.OUTCOME_UNSPECIFIED, awaiting, state=executor_pb2.RUN_STATE_AWAITING_APPROVAL)],
        confirmation=[
            executor_service_pb2.ExecuteResponse(step_finished=_result("s1", "okta.reset_factors")),
            finished(common_pb2.OUTCOME_ANSWERED, _result("s1", "okta.reset_factors"))])
    runlog = FakeRunLog()
    conv = conversations(peers, minter, runlog=runlog)
    stream = await conv.converse(ALICE, Ask(text="Reset Frank's MFA", session_id="s-2"))
    first = await collect(stream)
    assert kinds(first)[-1] == "approval_needed" and "final" not in kinds(first)
    approval = first[-1].approval_needed
    assert approval.run_id == stream.run_id and runlog.metas[stream.run_id].state == "paused"

    assert runlog.metas[stream.run_id].pending == ("s1",)
    with pytest.raises(MeshError) as wrong_step:
        await conv.converse(ALICE, Ask(confirmation=Confirmation(stream.run_id, "s9", True)))
    assert wrong_step.value.reason == Reason.VALIDATION_FAILED
    assert wrong_step.value.field_violations == [("confirmation.step_id", "not a step awaiting confirmation")]
    intruder = Caller("acme", "bob.smith@acme.example", "Bob", ("Everyone",))
    with pytest.raises(MeshError) as refused:
        await conv.converse(intruder, Ask(confirmation=Confirmation(stream.run_id, "s1", True)))
    assert refused.value.reason == Reason.NOT_FOUND

    answer = await conv.converse(ALICE, Ask(confirmation=Confirmation(stream.run_id, "s1", True)))
    with pytest.raises(MeshError) as twice:  # a second click while the first is being answered
        await conv.converse(ALICE, Ask(confirmation=Confirmation(stream.run_id, "s1", True)))
    assert twice.value.reason == Reason.VALIDATION_FAILED
    rest = await collect(answer)
    assert "confirm:s1:True" in peers.calls
    assert kinds(rest) == ["accepted", "step_finished", "answer_token", "answer_token", "final"]
    assert rest[0].sequence == first[-1].sequence + 1  # one run, one numbering
    assert rest[-1].final.outcome == common_pb2.OUTCOME_ANSWERED
    assert peers.respond_requests[-1].request == "Reset Frank's MFA"
    await settle(conv)
    with pytest.raises(MeshError) as again:
        await conv.converse(ALICE, Ask(confirmation=Confirmation(stream.run_id, "s1", True)))
    assert again.value.reason == Reason.VALIDATION_FAILED


async def test_a_failing_peer_ends_with_an_error_and_a_failed_final(minter: Minter) -> None:
    peers = FakePeers(planner_error=MeshError(Reason.UPSTREAM_UNAVAILABLE, "no planner", domain="agentmesh.planner"))
    conv = conversations(peers, minter)
    stream = await conv.converse(ALICE, Ask(text="Who is my manager?"))
    events = await collect(stream)
    assert kinds(events) == ["accepted", "error", "final"]
    assert events[1].error.reason == "UPSTREAM_UNAVAILABLE" and events[1].error.code == "UNAVAILABLE"
    assert events[2].final.outcome == common_pb2.OUTCOME_FAILED and "no planner" in events[2].final.text
    assert stream.error is not None and stream.error.reason == Reason.UPSTREAM_UNAVAILABLE
    await settle(conv)


async def test_a_refused_rate_is_raised_before_anything_is_accepted_and_audited(minter: Minter) -> None:
    peers = FakePeers(planned=one_step_plan())
    conv = conversations(peers, minter, limiter=FakeLimiter(Verdict(False, "tenant_rps", 0.25)))
    with pytest.raises(MeshError) as refused:
        await conv.converse(ALICE, Ask(text="Who is my manager?"))
    assert refused.value.reason == Reason.RATE_LIMITED and refused.value.retry_after_s == 0.25
    assert refused.value.metadata["limit"] == "tenant_rps"
    await settle(conv)
    assert peers.audits == ["rate_limited"] and peers.calls == []


async def test_the_run_goes_on_when_the_client_stops_reading(minter: Minter) -> None:
    peers = FakePeers(planned=one_step_plan(), execution=[
        executor_service_pb2.ExecuteResponse(step_finished=_result("s1", "okta.get_user")),
        finished(common_pb2.OUTCOME_ANSWERED, _result("s1", "okta.get_user"))])
    runlog = FakeRunLog()
    conv = conversations(peers, minter, runlog=runlog)
    stream = await conv.converse(ALICE, Ask(text="Who is my manager?"))
    iterator = stream.__aiter__()
    first = await iterator.__anext__()
    assert first.HasField("accepted")
    await iterator.aclose()  # the client went away
    await settle(conv)
    assert peers.recorded and runlog.metas[stream.run_id].state == "ended"
    logged = [agent_pb2.ConverseResponse.FromString(data) for _seq, data in runlog.events[stream.run_id]]
    assert logged[-1].HasField("final")


async def test_follow_up_turns_of_a_session_are_written_in_order(minter: Minter) -> None:
    peers = FakePeers(planned=common_pb2.Plan(explanation="Nothing to do."))
    conv = conversations(peers, minter)
    for text in ("first", "second"):
        await collect(await conv.converse(ALICE, Ask(text=text, session_id="s-9")))
    await settle(conv)
    assert [t for t in peers.turns if t[0] == "user"] == [("user", "first"), ("user", "second")]
    await asyncio.sleep(0)


# --- the overhead figure ---------------------------------------------------------------------------------------
def test_overhead_subtracts_the_reported_model_waits_and_the_union_of_the_steps_vendor_waits() -> None:
    timeline = _Timeline(started=50.0)
    # Plan: the planner awaited its provider 0.8 s of the 1.0 s call; prompting and validation were the platform's.
    timeline.add_model(common_pb2.Usage(provider="openai", model_wait=_seconds(0.8)), call_s=1.0)
    # A re-plan inside the run, and an answer from the template after an LLM answer that was tried and not used.
    timeline.add_model(common_pb2.Usage(provider="openai", model_wait=_seconds(0.3)))
    timeline.add_model(common_pb2.Usage(provider="embedded", model_wait=_seconds(0.2)), call_s=0.25)
    # The embedded planner or a template waits on no model; a wait never exceeds the call it happened in.
    timeline.add_model(common_pb2.Usage(provider="embedded", model_wait=_seconds(0.0)), call_s=0.05)
    timeline.add_model(common_pb2.Usage(provider="openai", model_wait=_seconds(9.0)), call_s=0.1)
    # A planner that reports no model wait: a call a model served counts whole, the embedded planner's not at all.
    timeline.add_model(common_pb2.Usage(provider="anthropic"), call_s=0.4)
    timeline.add_model(common_pb2.Usage(provider="embedded"), call_s=0.4)
    assert timeline.model_s == pytest.approx(0.8 + 0.3 + 0.2 + 0.0 + 0.1 + 0.4)
    timeline.add_steps([
        # Two parallel steps: their waits, placed at the ends of their intervals ([10.2, 10.5] and [10.1, 10.45]),
        # overlap, so together they waited 0.4 s, not 0.65 s.
        _result("s1", "okta.get_user", start=10.0, end=10.5, vendor_wait=0.3),
        _result("s2", "jira.search_issues", start=10.05, end=10.45, vendor_wait=0.35),
        # A step without a reported wait (an older executor) counts its whole interval.
        _result("s3", "servicenow.get_incident", start=11.0, end=11.2),
        # A retried step: 0.4 s of vendor time in 1.5 s; the backoff and the registry's work are the platform's.
        _result("s4", "servicenow.create_incident", start=12.0, end=13.5, vendor_wait=0.4),
        # A step that made no vendor call, and one reporting more than its interval (bounded by it).
        _result("s5", "jira.get_issue", start=13.4, end=13.45, vendor_wait=0.0),
        _result("s6", "jira.get_issue", start=14.0, end=14.1, vendor_wait=5.0),
        # A step without times (never started) waits on nothing.
        common_pb2.StepResult(step_id="s7", tool="okta.get_user", status=common_pb2.STEP_STATUS_SKIPPED)])
    assert timeline.vendor_s() == pytest.approx(0.4 + 0.2 + 0.4 + 0.0 + 0.1)
    assert timeline.overhead_s(55.0) == pytest.approx(5.0 - 1.8 - 1.1)
    assert timeline.overhead_s(51.0) == 0.0  # never negative


async def test_a_confirmation_does_not_subtract_steps_that_ran_before_the_pause(minter: Minter) -> None:
    awaiting = common_pb2.StepResult(step_id="s1", tool="okta.reset_factors",
                                     status=common_pb2.STEP_STATUS_AWAITING_APPROVAL)
    earlier = _result("s0", "okta.get_user", start=100.0, end=160.0)  # a minute of vendor time, an earlier request
    peers = FakePeers(planned=one_step_plan("okta.reset_factors"), execution=[
        executor_service_pb2.ExecuteResponse(approval_needed=executor_service_pb2.ApprovalNeeded(
            run_id="", step_id="s1", tool="okta.reset_factors", prompt="Reset Frank's MFA factors?")),
        finished(common_pb2.OUTCOME_UNSPECIFIED, earlier, awaiting, state=executor_pb2.RUN_STATE_AWAITING_APPROVAL)],
        confirmation=[
            executor_service_pb2.ExecuteResponse(step_finished=_result("s1", "okta.reset_factors", vendor_wait=0.0)),
            finished(common_pb2.OUTCOME_ANSWERED, earlier, _result("s1", "okta.reset_factors", vendor_wait=0.0))])
    conv = conversations(peers, minter)
    stream = await conv.converse(ALICE, Ask(text="Reset Frank's MFA", session_id="s-3"))
    await collect(stream)
    rest = await collect(await conv.converse(ALICE, Ask(confirmation=Confirmation(stream.run_id, "s1", True))))
    final = rest[-1].final
    assert [t.step_id for t in final.steps] == ["s0", "s1"]  # the answer covers both steps
    # This request waited on no model (a templated answer) and no vendor (s1 reported none): all of it is overhead.
    assert final.overhead == final.duration and final.duration.ToNanoseconds() > 0
    await settle(conv)
