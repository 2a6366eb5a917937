"""An executor process killed (SIGKILL) mid-run: another instance takes its runs over when their leases expire; every
run ends resumed or failed, no side effect happens twice, and a run that owes a WRITE lands in the dead-letter queue."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

import grpc
import pytest

from agentmesh.common.v1 import common_pb2
from agentmesh.executor.v1 import executor_pb2, executor_service_pb2, executor_service_pb2_grpc
from connectors.servicenow.vendor import key_ref
from executor.model import idempotency_key
from executor.testbed import Testbed
from mesh import client
from mesh.principal import Minter, Principal

ALICE = "alice.nguyen@acme.example"
RUNS = 10
SHORT_LIVED = 3  # runs whose principal expires before another executor can take them over
TERMINAL = {executor_pb2.RUN_STATE_SUCCEEDED, executor_pb2.RUN_STATE_COMPLETED, executor_pb2.RUN_STATE_FAILED,
            executor_pb2.RUN_STATE_DEAD_LETTERED}


@pytest.fixture(scope="module")
async def bed(backing, keyring, tmp_path_factory) -> AsyncIterator[Testbed]:
    testbed = await Testbed.start(keyring, tmp_path_factory.mktemp("failover-bed"), backing.redis_url,
                                  backing.admin_dsn, backing.app_dsn)
    yield testbed
    await testbed.close()


def _log(path: Path) -> BinaryIO:
    return path.open("wb")


async def _spawn_executor(bed: Testbed, log_path: Path) -> tuple[asyncio.subprocess.Process, str]:
    """`python -m executor.server` joining the testbed; returns the process and its address once it listens."""
    env = {**os.environ, **bed.executor_env(lease_s=1.0, sweep_interval_s=0.2)}
    with _log(log_path) as log:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "executor.server", env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=log)
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        while True:
            line = (await proc.stdout.readline()).decode()
            assert line, f"the executor exited before listening; see {log_path}"
            if line.startswith("AGENTMESH_LISTENING"):
                return proc, line.split()[-1]


def _plan() -> common_pb2.Plan:
    first = common_pb2.PlanStep(id="s1", tool="servicenow.create_incident")
    first.arguments.update({"short_description": "VPN keeps dropping"})
    second = common_pb2.PlanStep(id="s2", tool="servicenow.create_incident", depends_on=["s1"])
    second.arguments.update({"short_description": "Follow-up of {{steps.s1.number}}"})
    return common_pb2.Plan(steps=[first, second])


async def _follow(stub: executor_service_pb2_grpc.ExecutorServiceStub, who: Principal,
                  seen: list[executor_service_pb2.ExecuteResponse], progress: asyncio.Event) -> None:
    """Streams one run into `seen` until it ends or its executor dies."""
    request = executor_service_pb2.ExecuteRequest(run_id=who.run_id, request="two tickets", plan=_plan())
    try:
        async for event in stub.Execute(request, metadata=client.metadata(who), timeout=5):
            seen.append(event)
            progress.set()
    except grpc.aio.AioRpcError:
        pass  # the executor was killed under it


async def test_sigkill_mid_run_every_run_ends_resumed_or_failed_without_duplicates(bed: Testbed, keyring,
                                                                                     tmp_path) -> None:
    await bed.set_faults("servicenow", tenant="acme", latency={"fixed_ms": 250})
    proc, address = await _spawn_executor(bed, tmp_path / "executor-a.log")
    principals = [bed.user("acme", ALICE, expires_in_s=2.0 if i < SHORT_LIVED else None) for i in range(RUNS)]
    streams: list[list[Any]] = [[] for _ in range(RUNS)]
    try:
        async with client.channel(address) as chan:
            stub = executor_service_pb2_grpc.ExecutorServiceStub(chan)
            progress = asyncio.Event()
            followers = [asyncio.create_task(_follow(stub, p, seen, progress))
                         for p, seen in zip(principals, streams, strict=True)]
            async with asyncio.timeout(10):
                while sum(e.HasField("step_finished") for seen in streams for e in seen) < 3:
                    progress.clear()
                    await progress.wait()
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            await asyncio.gather(*followers)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    unfinished = [i for i, seen in enumerate(streams) if not any(e.HasField("run_finished") for e in seen)]
    assert unfinished, "the kill came too late: every run had ended"

    survivor = await bed.start_executor()
    async with client.channel(f"127.0.0.1:{survivor.port}") as chan:
        stub = executor_service_pb2_grpc.ExecutorServiceStub(chan)
        runs: dict[int, executor_pb2.Run] = {}
        async with asyncio.timeout(30):
            while len(runs) < RUNS:
                for i, p in enumerate(principals):
                    reader = bed.user("acme", ALICE, run_id=p.run_id)
                    run = (await stub.GetRun(executor_service_pb2.GetRunRequest(run_id=p.run_id),
                                             metadata=client.metadata(reader), timeout=5)).run
                    if run.state in TERMINAL:
                        runs[i] = run
                await asyncio.sleep(0.1)
        operator = Minter(keyring).mint_operator("ops@acme")
        dead = {}
        for i, run in runs.items():
            if run.state == executor_pb2.RUN_STATE_DEAD_LETTERED:
                dead[i] = (await stub.GetDeadLetter(executor_service_pb2.GetDeadLetterRequest(
                    dead_letter_id=run.error.metadata["dead_letter_id"]), metadata=client.metadata(operator),
                    timeout=5)).dead_letter

    for i in unfinished:
        if i >= SHORT_LIVED:  # the principal still lived: the run was resumed and finished
            assert runs[i].state == executor_pb2.RUN_STATE_SUCCEEDED, [(s.step_id, s.status, s.attempts, s.error)
                                                                       for s in runs[i].steps]
        else:  # the principal had expired: ended failed, and dead-lettered since a WRITE was owed
            assert runs[i].state == executor_pb2.RUN_STATE_DEAD_LETTERED, runs[i]
            assert dead[i].run.run_id == principals[i].run_id and "expired" in runs[i].error.message
    assert any(i >= SHORT_LIVED for i in unfinished) and any(i < SHORT_LIVED for i in unfinished)
    records = bed.records_by_key()
    assert max(records.values()) == 1  # no side effect twice
    for i, run in runs.items():
        if run.state == executor_pb2.RUN_STATE_SUCCEEDED:
            for step_id in ("s1", "s2"):
                key = idempotency_key("acme", principals[i].run_id, step_id)
                assert records[f"servicenow:{key_ref(key)}"] == 1
