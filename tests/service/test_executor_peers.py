"""The executor with the real memory service (step outputs in working memory) and the real planner (re-plans)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentmesh.common.v1 import common_pb2
from agentmesh.executor.v1 import executor_pb2, executor_service_pb2, executor_service_pb2_grpc
from agentmesh.memory.v1 import memory_service_pb2, memory_service_pb2_grpc
from executor.testbed import Testbed
from memory.config import MemoryConfig
from memory.server import create_memory_server
from mesh import client
from planner.config import PlannerConfig
from planner.server import create_planner_server

ALICE = "alice.nguyen@acme.example"


@pytest.fixture(scope="module")
async def bed(backing, keyring, tmp_path_factory) -> AsyncIterator[Testbed]:
    testbed = await Testbed.start(keyring, tmp_path_factory.mktemp("peers-bed"), backing.redis_url,
                                  backing.admin_dsn, backing.app_dsn)
    yield testbed
    await testbed.close()


@pytest.fixture(scope="module")
async def peers(bed: Testbed) -> AsyncIterator[dict[str, str]]:
    common: dict[str, Any] = {"state_dir": bed.state_dir, "jwks_path": bed.keyring.jwks_path, "port": 0,
                              "redis_url": bed.redis_url, "registry_addr": bed.endpoints["services"]["registry"]}
    memory = await create_memory_server(MemoryConfig(**common, database_url=bed.app_dsn,
                                                     database_admin_url=bed.admin_dsn))
    planner = await create_planner_server(PlannerConfig(**common))
    yield {"memory_addr": f"127.0.0.1:{memory.port}", "planner_addr": f"127.0.0.1:{planner.port}"}
    await planner.stop(0)
    await memory.stop(0)


def _step(step_id: str, tool: str, **arguments: Any) -> common_pb2.PlanStep:
    out = common_pb2.PlanStep(id=step_id, tool=tool)
    out.arguments.update(arguments)
    return out


async def test_step_outputs_live_in_working_memory(bed: Testbed, peers: dict[str, str]) -> None:
    first = await bed.start_executor(memory_addr=peers["memory_addr"])
    second = await bed.start_executor(memory_addr=peers["memory_addr"])
    who = bed.user("acme", ALICE)
    request = executor_service_pb2.ExecuteRequest(run_id=who.run_id, plan=common_pb2.Plan(steps=[
        _step("s1", "okta.get_user", user="me"),
        _step("s2", "okta.get_user", user="{{steps.s1.manager.email}}")]))
    async with client.channel(f"127.0.0.1:{first.port}") as chan:
        events = [e async for e in executor_service_pb2_grpc.ExecutorServiceStub(chan).Execute(
            request, metadata=client.metadata(who), timeout=5)]
    assert events[-1].run_finished.run.state == executor_pb2.RUN_STATE_SUCCEEDED
    async with client.channel(peers["memory_addr"]) as chan:
        state = (await memory_service_pb2_grpc.MemoryServiceStub(chan).GetWorkingState(
            memory_service_pb2.GetWorkingStateRequest(run_id=who.run_id), metadata=client.metadata(who),
            timeout=5)).state
    assert {"step:s1", "step:s2"} <= set(state.fields)
    # Another executor instance has nothing of the run in its process, and shows the outputs from memory.
    async with client.channel(f"127.0.0.1:{second.port}") as chan:
        run = (await executor_service_pb2_grpc.ExecutorServiceStub(chan).GetRun(
            executor_service_pb2.GetRunRequest(run_id=who.run_id), metadata=client.metadata(who), timeout=5)).run
    manager = run.steps[0].output["manager"]["email"]
    assert run.steps[1].arguments["user"] == manager and run.steps[1].output["email"] == manager


async def test_replan_by_the_planner_after_not_found(bed: Testbed, peers: dict[str, str]) -> None:
    running = await bed.start_executor(planner_addr=peers["planner_addr"])
    who = bed.user("acme", ALICE)
    request = executor_service_pb2.ExecuteRequest(
        run_id=who.run_id, request="What's the status of INC0099999?",
        plan=common_pb2.Plan(steps=[_step("s1", "servicenow.get_incident", number="INC0099999")]))
    async with client.channel(f"127.0.0.1:{running.port}") as chan:
        events = [e async for e in executor_service_pb2_grpc.ExecutorServiceStub(chan).Execute(
            request, metadata=client.metadata(who), timeout=5)]
    revisions = [e.plan_revised for e in events if e.HasField("plan_revised")]
    assert revisions and revisions[0].round == 1
    assert revisions[0].explanation or revisions[0].steps  # the planner answered with what it observed
    assert "s1" not in {s.id for s in revisions[0].steps}  # the failed step's id is never reused
    run = events[-1].run_finished.run
    assert run.steps[0].error.reason == "NOT_FOUND"
    assert run.outcome == common_pb2.OUTCOME_FAILED  # a re-plan that cannot find it either does not hide it
