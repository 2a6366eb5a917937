"""The ExecutorService over gRPC with the real registry, connectors and sandboxes, PostgreSQL and Redis: parallel
steps, references, skips, retries under injected faults with exactly one side effect, no retry on 403, breakers,
re-plans, confirmations, cancellation, durable runs and the dead-letter queue."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from agentmesh.common.v1 import common_pb2
from agentmesh.executor.v1 import executor_pb2, executor_service_pb2, executor_service_pb2_grpc
from agentmesh.planner.v1 import planner_service_pb2, planner_service_pb2_grpc
from executor import cli as executor_cli
from executor.store import dlq_stream
from executor.testbed import Testbed
from mesh import client
from mesh.config import MeshConfig
from mesh.errors import details_of
from mesh.principal import Minter, Principal
from mesh.server import ServiceSpec, create_server

ALICE, ERIN = "alice.nguyen@acme.example", "erin.walsh@acme.example"
S = common_pb2.StepStatus


@pytest.fixture(scope="module")
async def bed(backing, keyring, tmp_path_factory) -> AsyncIterator[Testbed]:
    testbed = await Testbed.start(keyring, tmp_path_factory.mktemp("executor-bed"), backing.redis_url,
                                  backing.admin_dsn, backing.app_dsn)
    yield testbed
    await testbed.close()


@pytest.fixture(scope="module")
async def executor(bed: Testbed) -> AsyncIterator[executor_service_pb2_grpc.ExecutorServiceStub]:
    running = await bed.start_executor()
    async with client.channel(f"127.0.0.1:{running.port}") as chan:
        yield executor_service_pb2_grpc.ExecutorServiceStub(chan)


@pytest.fixture(autouse=True)
async def no_faults(bed: Testbed) -> AsyncIterator[None]:
    await bed.clear_faults()
    yield
    await bed.clear_faults()


def step(step_id: str, tool: str, deps: tuple[str, ...] = (), **arguments: Any) -> common_pb2.PlanStep:
    out = common_pb2.PlanStep(id=step_id, tool=tool, depends_on=list(deps))
    out.arguments.update(arguments)
    return out


async def execute(stub: executor_service_pb2_grpc.ExecutorServiceStub, who: Principal,
                  *steps: common_pb2.PlanStep, deadline_s: float = 5.0,
                  **plan: Any) -> list[executor_service_pb2.ExecuteResponse]:
    request = executor_service_pb2.ExecuteRequest(run_id=who.run_id, request="test",
                                                  plan=common_pb2.Plan(steps=steps, **plan))
    return [e async for e in stub.Execute(request, metadata=client.metadata(who), timeout=deadline_s)]


def finished(events: list[Any]) -> dict[str, common_pb2.StepResult]:
    return {e.step_finished.step_id: e.step_finished for e in events if e.HasField("step_finished")}


def final(events: list[Any]) -> executor_pb2.Run:
    assert events[-1].HasField("run_finished")
    return events[-1].run_finished.run


async def test_three_independent_steps_overlap(bed: Testbed, executor) -> None:
    for vendor in ("okta", "servicenow", "jira"):
        await bed.set_faults(vendor, latency={"fixed_ms": 150})
    who = bed.user("acme", ALICE)
    events = await execute(executor, who, step("s1", "okta.get_user", user="me"),
                           step("s2", "servicenow.list_incidents"), step("s3", "jira.search_issues", project="ENG"))
    steps = finished(events)
    assert {s.status for s in steps.values()} == {S.STEP_STATUS_OK}
    starts = [s.start_time.ToNanoseconds() for s in steps.values()]
    ends = [s.end_time.ToNanoseconds() for s in steps.values()]
    assert max(starts) < min(ends)
    assert final(events).outcome == common_pb2.OUTCOME_ANSWERED
    assert final(events).state == executor_pb2.RUN_STATE_SUCCEEDED


async def test_references_between_steps(bed: Testbed, executor) -> None:
    who = bed.user("acme", ALICE)
    events = await execute(executor, who, step("s1", "servicenow.create_incident", short_description="VPN drops"),
                           step("s2", "jira.create_issue", project="ENG", summary="Follow up on {{steps.s1.number}}"))
    steps = finished(events)
    assert steps["s1"].status == S.STEP_STATUS_OK and steps["s2"].status == S.STEP_STATUS_OK
    number = steps["s1"].output["number"]
    assert steps["s2"].arguments["summary"] == f"Follow up on {number}"
    assert steps["s1"].arguments["caller"] == ALICE  # person arguments come back as emails
    assert steps["s1"].idempotency_key and steps["s2"].idempotency_key != steps["s1"].idempotency_key


async def test_a_failed_step_skips_its_dependents_and_the_rest_goes_on(bed: Testbed, executor) -> None:
    who = bed.user("acme", ALICE)
    events = await execute(executor, who, step("s1", "servicenow.get_incident", number="INC0099999"),
                           step("s2", "servicenow.add_comment", ("s1",), number="{{steps.s1.number}}", comment="x"),
                           step("s3", "okta.get_user", user="me"))
    steps = finished(events)
    assert steps["s1"].status == S.STEP_STATUS_FAILED and steps["s1"].error.reason == "NOT_FOUND"
    assert steps["s2"].status == S.STEP_STATUS_SKIPPED and steps["s2"].error.metadata["dependency"] == "s1"
    assert steps["s3"].status == S.STEP_STATUS_OK
    run = final(events)
    assert run.outcome == common_pb2.OUTCOME_FAILED and run.state == executor_pb2.RUN_STATE_COMPLETED


@pytest.fixture(scope="module")
async def patient(bed: Testbed) -> AsyncIterator[executor_service_pb2_grpc.ExecutorServiceStub]:
    """An executor that retries more and whose breakers stay closed (at 30 % failed HTTP requests, most tool calls
    fail once), so that a seeded run of injected faults always ends in success."""
    running = await bed.start_executor(retry_max_attempts=8, breaker_min_calls=1000)
    async with client.channel(f"127.0.0.1:{running.port}") as chan:
        yield executor_service_pb2_grpc.ExecutorServiceStub(chan)


@pytest.mark.parametrize("faults", [
    pytest.param({"errors": {"503": 0.3}, "seed": 11}, id="503"),
    pytest.param({"reset_after_commit": 0.5, "seed": 1}, id="reset-after-commit"),
])
async def test_retry_then_success_with_exactly_one_side_effect(bed: Testbed, patient, faults) -> None:
    from connectors.servicenow.vendor import key_ref

    await bed.set_faults("servicenow", tenant="acme", **faults)
    before = (await bed.counters("servicenow"))["created"].get("acme:incident", 0)
    results = []
    for _ in range(4):
        events = await execute(patient, bed.user("acme", ALICE),
                               step("s1", "servicenow.create_incident", short_description="Printer on fire"),
                               deadline_s=15)
        results.append(finished(events)["s1"])
    assert all(r.status == S.STEP_STATUS_OK for r in results), [(r.attempts, r.error.reason) for r in results]
    assert max(r.attempts for r in results) > 1  # the faults were met, and retried
    records = bed.records_by_key()
    assert [records[f"servicenow:{key_ref(r.idempotency_key)}"] for r in results] == [1, 1, 1, 1]
    assert (await bed.counters("servicenow"))["created"]["acme:incident"] - before == 4


async def test_no_retry_on_a_vendor_403(bed: Testbed, executor) -> None:
    await bed.set_faults("jira", tenant="acme", errors={"403": 1.0})
    before = sum((await bed.counters("jira"))["calls"].values())
    events = await execute(executor, bed.user("acme", ALICE),
                           step("s1", "jira.create_issue", project="ENG", summary="Denied"))
    s1 = finished(events)["s1"]
    assert s1.status == S.STEP_STATUS_DENIED and s1.error.reason == "VENDOR_DENIED" and s1.attempts == 1
    assert sum((await bed.counters("jira"))["calls"].values()) - before == 1
    assert final(events).outcome == common_pb2.OUTCOME_DENIED


async def test_a_steps_vendor_wait_sums_its_attempts_but_not_the_backoff(bed: Testbed, executor) -> None:
    # Every ServiceNow request waits 150 ms; the seed makes the first one a 429 (Retry-After: 1 s) and the rest pass.
    await bed.set_faults("servicenow", tenant="acme", latency={"fixed_ms": 150}, rate_limit=0.5, retry_after_s=1,
                         seed=92)
    who = bed.user("acme", ALICE)
    events = await execute(executor, who, step("s1", "servicenow.get_incident", number="INC0010001"))
    s1 = finished(events)["s1"]
    assert s1.status == S.STEP_STATUS_OK and s1.attempts == 2
    waited = s1.vendor_wait.ToNanoseconds() / 1e9
    latency = s1.latency.ToNanoseconds() / 1e9
    # The failed attempt's 150 ms count (the connector reported them, the registry passed them on), as do the
    # second attempt's requests; the one-second wait before the retry does not.
    assert waited >= 2 * 0.150
    assert waited <= latency - 1.0
    got = await executor.GetRun(executor_service_pb2.GetRunRequest(run_id=who.run_id),
                                metadata=client.metadata(who), timeout=5)
    assert got.run.steps[0].vendor_wait.ToMilliseconds() == s1.vendor_wait.ToMilliseconds()  # stored with the run


async def test_breaker_opens_under_full_failure_and_closes_after_a_half_open_probe(bed: Testbed) -> None:
    running = await bed.start_executor(breaker_min_calls=3, breaker_cooldown_s=1.0, retry_max_attempts=1)
    async with client.channel(f"127.0.0.1:{running.port}") as chan:
        stub = executor_service_pb2_grpc.ExecutorServiceStub(chan)
        read = step("s1", "jira.get_issue", key="ENG-101")
        await bed.set_faults("jira", tenant="acme", errors={"503": 1.0})
        for _ in range(3):
            s1 = finished(await execute(stub, bed.user("acme", ALICE), read))["s1"]
            assert s1.error.reason == "UPSTREAM_UNAVAILABLE"
        calls = sum((await bed.counters("jira"))["calls"].values())
        s1 = finished(await execute(stub, bed.user("acme", ALICE), read))["s1"]
        assert s1.error.reason == "CIRCUIT_OPEN" and s1.error.code == "UNAVAILABLE" and s1.attempts == 0
        assert sum((await bed.counters("jira"))["calls"].values()) == calls  # failed fast, no call
        other = finished(await execute(stub, bed.user("acme", ALICE), step("s1", "okta.get_user", user="me")))
        assert other["s1"].status == S.STEP_STATUS_OK  # one breaker per (tenant, connector)
        await bed.clear_faults()
        await asyncio.sleep(1.05)  # the cool-down
        assert finished(await execute(stub, bed.user("acme", ALICE), read))["s1"].status == S.STEP_STATUS_OK
        assert finished(await execute(stub, bed.user("acme", ALICE), read))["s1"].status == S.STEP_STATUS_OK


class ScriptedPlanner(planner_service_pb2_grpc.PlannerServiceServicer):
    """A PlannerService that answers re-plans from a script (the planner service is built elsewhere)."""

    def __init__(self, plans: list[common_pb2.Plan]) -> None:
        self.plans = plans
        self.requests: list[tuple[Principal, planner_service_pb2.PlanRequest]] = []

    async def Plan(self, request, context):  # type: ignore[no-untyped-def]
        from mesh import principal as principal_mod

        self.requests.append((principal_mod.current(), request))
        yield planner_service_pb2.PlanResponse(token_delta="thinking")
        yield planner_service_pb2.PlanResponse(plan=self.plans.pop(0))


async def test_replan_after_not_found(bed: Testbed, keyring) -> None:
    revised = common_pb2.Plan(steps=[step("s1", "servicenow.get_incident", number="INC0010001")])
    planner = ScriptedPlanner([revised])
    config = MeshConfig(port=0, jwks_path=keyring.jwks_path, state_dir=bed.state_dir)
    planner_server = await create_server(config, [ServiceSpec(
        "agentmesh.planner.v1.PlannerService", planner, planner_service_pb2_grpc.add_PlannerServiceServicer_to_server)])
    running = await bed.start_executor(planner_addr=f"127.0.0.1:{planner_server.port}")
    try:
        async with client.channel(f"127.0.0.1:{running.port}") as chan:
            stub = executor_service_pb2_grpc.ExecutorServiceStub(chan)
            who = bed.user("acme", ALICE)
            events = await execute(stub, who, step("s1", "servicenow.get_incident", number="INC0099999"))
    finally:
        await planner_server.stop(0)
    [(seen, asked)] = planner.requests
    assert (seen.tenant, seen.user) == ("acme", ALICE)
    assert [(o.step_id, o.error.reason) for o in asked.observations] == [("s1", "NOT_FOUND")]
    assert asked.previous_plan.steps[0].arguments["number"] == "INC0099999"
    assert {t.name for t in asked.tools} >= {"servicenow.get_incident"} and asked.people
    [revision] = [e.plan_revised for e in events if e.HasField("plan_revised")]
    assert [s.id for s in revision.steps] == ["s1-r1"] and revision.round == 1
    steps = finished(events)
    assert steps["s1"].status == S.STEP_STATUS_FAILED and steps["s1-r1"].status == S.STEP_STATUS_OK
    assert final(events).outcome == common_pb2.OUTCOME_ANSWERED


def _membership(group: str, user: str) -> common_pb2.PlanStep:
    return step("s1", "okta.add_user_to_group", group=group, user=user)


async def test_confirmation_pauses_the_run_which_survives_a_restart_and_resumes_on_approval(bed: Testbed,
                                                                                            executor) -> None:
    who = bed.user("acme", ERIN)
    events = await execute(executor, who, _membership("Salesforce-Users", ALICE),
                           step("s2", "okta.list_groups", ("s1",), user=ALICE))
    [ask] = [e.approval_needed for e in events if e.HasField("approval_needed")]
    assert (ask.step_id, ask.tool, ask.arguments["group"]) == ("s1", "okta.add_user_to_group", "Salesforce-Users")
    assert final(events).state == executor_pb2.RUN_STATE_AWAITING_APPROVAL
    assert not finished(events)
    # Another executor instance (as after a restart) takes the confirmation, a fresh request of the same user.
    other = await bed.start_executor()
    async with client.channel(f"127.0.0.1:{other.port}") as chan:
        stub = executor_service_pb2_grpc.ExecutorServiceStub(chan)
        again = bed.user("acme", ERIN, run_id=who.run_id)
        got = await stub.GetRun(executor_service_pb2.GetRunRequest(run_id=who.run_id),
                                metadata=client.metadata(again), timeout=5)
        assert got.run.state == executor_pb2.RUN_STATE_AWAITING_APPROVAL
        assert got.run.steps[0].status == S.STEP_STATUS_AWAITING_APPROVAL
        resumed = [r.event async for r in stub.ConfirmStep(executor_service_pb2.ConfirmStepRequest(
            run_id=who.run_id, step_id="s1", approved=True), metadata=client.metadata(again), timeout=5)]
    steps = finished(resumed)
    assert steps["s1"].status == S.STEP_STATUS_OK and steps["s2"].status == S.STEP_STATUS_OK
    assert "Salesforce-Users" in {g["name"] for g in steps["s2"].output["groups"]}
    assert final(resumed).state == executor_pb2.RUN_STATE_SUCCEEDED


async def test_declined_confirmation_skips_the_step(bed: Testbed, executor) -> None:
    who = bed.user("acme", ERIN)
    await execute(executor, who, _membership("IT", ALICE))
    resumed = [r.event async for r in executor.ConfirmStep(executor_service_pb2.ConfirmStepRequest(
        run_id=who.run_id, step_id="s1", approved=False), metadata=client.metadata(who), timeout=5)]
    s1 = finished(resumed)["s1"]
    assert s1.status == S.STEP_STATUS_SKIPPED and s1.error.reason == "CONFIRMATION_DECLINED"
    assert final(resumed).outcome == common_pb2.OUTCOME_NO_ACTION


async def test_a_paused_run_can_be_cancelled(bed: Testbed, executor) -> None:
    who = bed.user("acme", ERIN)
    await execute(executor, who, _membership("Managers", ALICE))
    cancelled = await executor.CancelRun(executor_service_pb2.CancelRunRequest(run_id=who.run_id),
                                         metadata=client.metadata(who), timeout=5)
    assert cancelled.run.state == executor_pb2.RUN_STATE_CANCELLED
    assert cancelled.run.steps[0].error.reason == "CANCELLED"
    assert cancelled.run.outcome == common_pb2.OUTCOME_NO_ACTION


async def test_confirmation_times_out(bed: Testbed) -> None:
    running = await bed.start_executor(approval_timeout_s=0.3)
    async with client.channel(f"127.0.0.1:{running.port}") as chan:
        stub = executor_service_pb2_grpc.ExecutorServiceStub(chan)
        who = bed.user("acme", ERIN)
        await execute(stub, who, _membership("Executives", ALICE))
        run = None
        for _ in range(50):
            run = (await stub.GetRun(executor_service_pb2.GetRunRequest(run_id=who.run_id),
                                     metadata=client.metadata(who), timeout=5)).run
            if run.state != executor_pb2.RUN_STATE_AWAITING_APPROVAL:
                break
            await asyncio.sleep(0.1)
        assert run is not None and run.steps[0].error.reason == "CONFIRMATION_TIMEOUT"
        assert run.outcome == common_pb2.OUTCOME_NO_ACTION
        with pytest.raises(grpc.aio.AioRpcError) as info:
            [r async for r in stub.ConfirmStep(executor_service_pb2.ConfirmStepRequest(
                run_id=who.run_id, step_id="s1", approved=True), metadata=client.metadata(who), timeout=5)]
    assert details_of(info.value).reason == "CONFIRMATION_TIMEOUT"


async def test_cancel_stops_the_run_between_steps(bed: Testbed, executor) -> None:
    await bed.set_faults("servicenow", tenant="acme", latency={"fixed_ms": 300})
    who = bed.user("acme", ALICE)
    request = executor_service_pb2.ExecuteRequest(run_id=who.run_id, plan=common_pb2.Plan(steps=[
        step("s1", "servicenow.list_incidents"), step("s2", "okta.get_user", ("s1",), user="me")]))
    events: list[Any] = []
    async for event in executor.Execute(request, metadata=client.metadata(who), timeout=5):
        events.append(event)
        if event.HasField("step_started"):
            cancelled = await executor.CancelRun(executor_service_pb2.CancelRunRequest(run_id=who.run_id),
                                                 metadata=client.metadata(who), timeout=5)
            assert cancelled.run.state == executor_pb2.RUN_STATE_CANCELLED
    steps = finished(events)
    assert steps["s2"].status == S.STEP_STATUS_SKIPPED and steps["s2"].error.reason == "CANCELLED"
    assert final(events).state == executor_pb2.RUN_STATE_CANCELLED


async def test_cancel_reaches_a_run_executing_on_another_instance(bed: Testbed, executor) -> None:
    other = await bed.start_executor()
    await bed.set_faults("servicenow", tenant="acme", latency={"fixed_ms": 200})
    who = bed.user("acme", ALICE)
    chain = [step("s1", "servicenow.list_incidents"), step("s2", "servicenow.list_incidents", ("s1",)),
             step("s3", "servicenow.list_incidents", ("s2",))]
    request = executor_service_pb2.ExecuteRequest(run_id=who.run_id, plan=common_pb2.Plan(steps=chain))
    events: list[Any] = []
    async with client.channel(f"127.0.0.1:{other.port}") as chan:
        elsewhere = executor_service_pb2_grpc.ExecutorServiceStub(chan)
        async for event in executor.Execute(request, metadata=client.metadata(who), timeout=10):
            events.append(event)
            if event.HasField("step_started") and event.step_started.step_id == "s1":
                asked = await elsewhere.CancelRun(executor_service_pb2.CancelRunRequest(run_id=who.run_id),
                                                  metadata=client.metadata(who), timeout=5)
                assert asked.run.state == executor_pb2.RUN_STATE_RUNNING  # it stops at its executor's heartbeat
    assert final(events).state == executor_pb2.RUN_STATE_CANCELLED
    assert "CANCELLED" in {s.error.reason for s in finished(events).values()}


async def test_executing_a_run_id_again_shows_its_end_without_doing_it_twice(bed: Testbed, executor) -> None:
    who = bed.user("acme", ALICE)
    first = await execute(executor, who, step("s1", "servicenow.create_incident", short_description="Once"))
    created = (await bed.counters("servicenow"))["created"]["acme:incident"]
    again = await execute(executor, bed.user("acme", ALICE, run_id=who.run_id),
                          step("s1", "servicenow.create_incident", short_description="Once"))
    assert finished(again)["s1"].output == finished(first)["s1"].output
    assert final(again).state == executor_pb2.RUN_STATE_SUCCEEDED
    assert (await bed.counters("servicenow"))["created"]["acme:incident"] == created


@pytest.mark.parametrize(("plan", "field"), [
    pytest.param([step("s1", "jira.get_issue", ("s2",), key="A"), step("s2", "jira.get_issue", ("s1",), key="B")],
                 "plan.steps", id="cycle"),
    pytest.param([step("s1", "jira.get_issue", ("nope",), key="A")], "plan.steps[0].depends_on", id="unknown-dep"),
    pytest.param([step("s1", "jira.get_issue", key="{{steps.s9.key}}")], "plan.steps[0].arguments.key",
                 id="unknown-ref"),
    pytest.param([step("s1", "Jira-Get", key="A")], "plan.steps[0].tool", id="bad-tool"),
])
async def test_bad_plans_are_invalid_arguments_naming_the_field(bed: Testbed, executor, plan, field) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await execute(executor, bed.user("acme", ALICE), *plan)
    details = details_of(info.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT and details.reason == "VALIDATION_FAILED"
    assert field in {f for f, _ in details.field_violations}


async def test_runs_are_private_to_their_user(bed: Testbed, executor) -> None:
    who = bed.user("acme", ALICE)
    await execute(executor, who, step("s1", "okta.get_user", user="me"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await executor.GetRun(executor_service_pb2.GetRunRequest(run_id=who.run_id),
                              metadata=client.metadata(bed.user("acme", ERIN)), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_run_id_must_match_the_principal(bed: Testbed, executor) -> None:
    who = bed.user("acme", ALICE)
    request = executor_service_pb2.ExecuteRequest(run_id="someone-elses-run",
                                                  plan=common_pb2.Plan(steps=[step("s1", "okta.get_user")]))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        [e async for e in executor.Execute(request, metadata=client.metadata(who), timeout=5)]
    assert details_of(info.value).field_violations[0][0] == "run_id"


async def _dead_letter(bed: Testbed, stub: executor_service_pb2_grpc.ExecutorServiceStub,
                       who: Principal) -> list[executor_service_pb2.ExecuteResponse]:
    """A run whose WRITE meets a ServiceNow that answers 503 to everything: it ends dead-lettered."""
    await bed.set_faults("servicenow", tenant="acme", errors={"503": 1.0})
    events = await execute(stub, who, step("s1", "okta.get_user", user="me"),
                           step("s2", "servicenow.create_incident", short_description="Laptop won't boot"))
    await bed.clear_faults()
    return events


async def test_dead_letter_after_exhausted_retries(bed: Testbed, executor, keyring) -> None:
    who = bed.user("acme", ALICE)
    events = await _dead_letter(bed, executor, who)
    run = final(events)
    assert run.state == executor_pb2.RUN_STATE_DEAD_LETTERED and run.outcome == common_pb2.OUTCOME_FAILED
    assert finished(events)["s2"].attempts == 4  # every retry spent
    dead_letter_id = run.error.metadata["dead_letter_id"]
    assert dead_letter_id in run.error.message  # the user is told
    redis = aioredis.from_url(bed.redis_url)
    notices = await redis.xrange(dlq_stream("acme"))
    await redis.aclose()
    assert dead_letter_id.encode() in {fields[b"dead_letter_id"] for _, fields in notices}

    operator = Minter(keyring)
    listed = await executor.ListDeadLetters(executor_service_pb2.ListDeadLettersRequest(tenant_id="acme"),
                                            metadata=client.metadata(operator.mint_operator("ops@acme")), timeout=5)
    assert dead_letter_id in {d.dead_letter_id for d in listed.dead_letters}
    shown = await executor.GetDeadLetter(executor_service_pb2.GetDeadLetterRequest(dead_letter_id=dead_letter_id),
                                         metadata=client.metadata(operator.mint_operator("ops@acme")), timeout=5)
    assert (shown.dead_letter.run.run_id, shown.dead_letter.run.user) == (who.run_id, ALICE)
    with pytest.raises(grpc.aio.AioRpcError) as info:  # an operator principal not minted for this run
        [e async for e in executor.ReplayDeadLetter(
            executor_service_pb2.ReplayDeadLetterRequest(dead_letter_id=dead_letter_id),
            metadata=client.metadata(operator.mint_operator("ops@acme", tenant="acme", on_behalf_of=ERIN,
                                                            run_id=who.run_id)), timeout=5)]
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as info:  # users do not reach the queue
        await executor.ListDeadLetters(executor_service_pb2.ListDeadLettersRequest(), metadata=client.metadata(who),
                                       timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_replay_of_a_dead_letter_resends_the_same_keys(bed: Testbed, executor, keyring) -> None:
    from connectors.servicenow.vendor import key_ref

    who = bed.user("acme", ALICE)
    events = await _dead_letter(bed, executor, who)
    dead_letter_id = final(events).error.metadata["dead_letter_id"]
    replay_as = Minter(keyring).mint_operator("ops@acme", tenant="acme", on_behalf_of=ALICE, run_id=who.run_id)
    replayed = [r.event async for r in executor.ReplayDeadLetter(
        executor_service_pb2.ReplayDeadLetterRequest(dead_letter_id=dead_letter_id),
        metadata=client.metadata(replay_as), timeout=10)]
    steps = finished(replayed)
    assert set(steps) == {"s2"}  # s1 had succeeded and is kept
    assert steps["s2"].status == S.STEP_STATUS_OK, steps["s2"].error
    assert steps["s2"].idempotency_key == finished(events)["s2"].idempotency_key
    assert final(replayed).state == executor_pb2.RUN_STATE_SUCCEEDED
    assert bed.records_by_key()[f"servicenow:{key_ref(steps['s2'].idempotency_key)}"] == 1
    with pytest.raises(grpc.aio.AioRpcError) as info:
        [e async for e in executor.ReplayDeadLetter(
            executor_service_pb2.ReplayDeadLetterRequest(dead_letter_id=dead_letter_id),
            metadata=client.metadata(replay_as), timeout=5)]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_dlq_command_lists_shows_and_replays(bed: Testbed, tmp_path, capsys) -> None:
    running = await bed.start_executor()
    who = bed.user("acme", ALICE)
    async with client.channel(f"127.0.0.1:{running.port}") as chan:
        events = await _dead_letter(bed, executor_service_pb2_grpc.ExecutorServiceStub(chan), who)
    dead_letter_id = final(events).error.metadata["dead_letter_id"]
    (tmp_path / "endpoints.json").write_text(json.dumps({
        "services": {"executor": f"127.0.0.1:{running.port}"}, "keys_dir": str(bed.keyring.folder)}))
    parser = argparse.ArgumentParser(prog="agentmesh")
    executor_cli.register(parser.add_subparsers(dest="command", required=True))

    async def agentmesh(*argv: str) -> tuple[int, str, str]:
        args = parser.parse_args(["dlq", *argv, "--state-dir", str(tmp_path)])
        code = await args.func(args)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, err = await agentmesh("list", "--tenant", "acme", "--json")
    assert code == 0, err
    assert dead_letter_id in {json.loads(line)["dead_letter_id"] for line in out.splitlines()}
    code, out, _ = await agentmesh("show", dead_letter_id)
    assert code == 0 and who.run_id in out and "servicenow.create_incident" in out
    code, _, err = await agentmesh("show", "dl-0000000000000-00000000")
    assert code == 1 and "NOT_FOUND" in err
    code, out, err = await agentmesh("replay", dead_letter_id)
    assert code == 0 and "servicenow.create_incident" in out and "RUN_STATE_SUCCEEDED" in out, err
    code, _, err = await agentmesh("replay", dead_letter_id)
    assert code == 1 and "already replayed" in err
