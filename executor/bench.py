"""`python -m executor.bench`: N workflows through the executor, registry, connectors and sandboxes with injected vendor
failures (5xx, timeouts, 429, connection resets after commit); prints how many succeeded, how many were dead-lettered
and how many side effects happened twice (counted per idempotency key in the sandboxes)."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from agentmesh.common.v1 import common_pb2
from agentmesh.executor.v1 import executor_pb2, executor_service_pb2, executor_service_pb2_grpc
from mesh import client
from mesh.backing import start_backing
from mesh.principal import KeyRing, Minter

from .testbed import VENDORS, Testbed, duplicates

USERS = ("alice.nguyen@acme.example", "carol.diaz@acme.example", "erin.walsh@acme.example",
         "henry.park@acme.example")


def _step(step_id: str, tool: str, deps: tuple[str, ...] = (), **arguments: Any) -> common_pb2.PlanStep:
    out = common_pb2.PlanStep(id=step_id, tool=tool, depends_on=list(deps))
    out.arguments.update(arguments)
    return out


def workflow(rng: random.Random, n: int) -> tuple[str, common_pb2.Plan]:
    """One of three shapes: two dependent WRITEs beside a READ; a search then a comment on what it found; reads."""
    pick = rng.random()
    if pick < 0.4:
        return "ticket+issue", common_pb2.Plan(steps=[
            _step("s1", "servicenow.create_incident", short_description=f"bench {n}: VPN drops"),
            _step("s2", "jira.create_issue", project="WEB", summary="Follow up on {{steps.s1.number}}"),
            _step("s3", "okta.get_user", user="me")])
    if pick < 0.7:
        return "search+comment", common_pb2.Plan(steps=[
            _step("s1", "jira.search_issues", project="WEB", status="Done"),
            _step("s2", "jira.add_comment", key="{{steps.s1.issues[0].key}}", comment=f"bench {n}: looked at")])
    return "reads", common_pb2.Plan(steps=[
        _step("s1", "okta.get_user", user="me"), _step("s2", "servicenow.list_incidents"),
        _step("s3", "jira.search_issues", project="WEB")])


def faults(rate: float, seed: int) -> dict[str, Any]:
    """`rate` of vendor HTTP requests fail: 5xx (60 %), 429 (20 %), timeouts (a latency tail beyond the connectors'
    vendor timeout, ~15 %) and connection resets after a committed write (~5 %)."""
    return {"errors": {"503": rate * 0.4, "500": rate * 0.2}, "rate_limit": rate * 0.2, "retry_after_s": 1,
            "reset_after_commit": rate * 0.05, "latency": {"median_ms": 15, "p99_ms": 2500 if rate else 15},
            "seed": seed}


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="agentmesh-executor-bench-"))
    backing = start_backing(work / "backing")
    keyring = KeyRing(work / "keys").ensure()
    bed = await Testbed.start(keyring, work / "state", backing.redis_url, backing.admin_dsn, backing.app_dsn,
                              vendor_timeout_s=args.vendor_timeout)
    try:
        running = await bed.start_executor(lease_s=5.0, sweep_interval_s=1.0)
        for offset, vendor in enumerate(VENDORS):
            await bed.set_faults(vendor, **faults(args.failure_rate, args.seed + offset))
        rng = random.Random(args.seed)
        plans = [workflow(rng, n) for n in range(args.workflows)]
        slots = asyncio.Semaphore(args.concurrency)
        async with client.channel(f"127.0.0.1:{running.port}") as chan:
            stub = executor_service_pb2_grpc.ExecutorServiceStub(chan)

            async def one(n: int, plan: common_pb2.Plan) -> tuple[executor_pb2.Run, float, bool]:
                who = bed.user("acme", USERS[n % len(USERS)], deadline_s=args.deadline)
                request = executor_service_pb2.ExecuteRequest(run_id=who.run_id, request="bench", plan=plan)
                async with slots:
                    started = time.perf_counter()
                    run = None
                    try:
                        async for event in stub.Execute(request, metadata=client.metadata(who),
                                                        timeout=args.deadline):
                            if event.HasField("run_finished"):
                                run = event.run_finished.run
                    except grpc.aio.AioRpcError:
                        run = None
                    elapsed = time.perf_counter() - started
                    told = run is not None
                    if run is None:  # the stream ended early: the run went on, durably; ask how it ended
                        await asyncio.sleep(args.deadline)
                        run = (await stub.GetRun(executor_service_pb2.GetRunRequest(run_id=who.run_id),
                                                 metadata=client.metadata(who), timeout=5)).run
                    return run, elapsed, told

            began = time.perf_counter()
            results = await asyncio.gather(*(one(n, plan) for n, (_, plan) in enumerate(plans)))
            wall = time.perf_counter() - began
            records = bed.records_by_key()
            replays: Counter[str] = Counter()
            if args.replay:
                await bed.clear_faults()
                replays = await replay_dead_letters(bed, stub, [run for run, _, _ in results])
        replayed_records = bed.records_by_key()
        calls = {v: sum((await bed.counters(v))["calls"].values()) for v in VENDORS}
    finally:
        await bed.close()
        backing.stop()
        shutil.rmtree(work, ignore_errors=True)
    states = Counter(executor_pb2.RunState.Name(run.state).removeprefix("RUN_STATE_").lower() for run, _, _ in results)
    outcomes = Counter(common_pb2.Outcome.Name(run.outcome).removeprefix("OUTCOME_").lower() for run, _, _ in results)
    reasons = Counter(f"{s.tool}: {s.error.reason}" for run, _, _ in results for s in run.steps
                      if s.status in (common_pb2.STEP_STATUS_FAILED, common_pb2.STEP_STATUS_DENIED))
    attempts = [s.attempts for run, _, _ in results for s in run.steps if s.attempts]
    latencies = sorted(elapsed for _, elapsed, _ in results)
    return {
        "workflows": len(results), "shapes": dict(Counter(name for name, _ in plans)),
        "injected_failure_rate": args.failure_rate, "deadline_s": args.deadline,
        "succeeded": states.get("succeeded", 0), "dead_lettered": states.get("dead_lettered", 0),
        "states": dict(states), "outcomes": dict(outcomes), "step_failures": dict(reasons),
        "duplicate_side_effects": duplicates(records),
        "dead_letters_replayed": dict(replays),
        "duplicate_side_effects_after_replays": duplicates(replayed_records),
        "streams_without_final_event": sum(1 for _, _, told in results if not told),
        "write_steps": sum(1 for run, _, _ in results for s in run.steps if s.effect == common_pb2.EFFECT_WRITE),
        "records_created": sum(records.values()),
        "records_created_after_replays": sum(replayed_records.values()),
        "tool_calls": len(attempts), "retries": sum(a - 1 for a in attempts), "vendor_requests": calls,
        "run_latency_s": {"p50": round(statistics.median(latencies), 3),
                          "p95": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
                          "max": round(latencies[-1], 3)},
        "wall_s": round(wall, 2),
    }


async def replay_dead_letters(bed: Testbed, stub: executor_service_pb2_grpc.ExecutorServiceStub,
                             runs: list[executor_pb2.Run]) -> Counter[str]:
    """Replays every dead letter (faults cleared) as an operator acting for its user; counts how the replays ended."""
    minter = Minter(bed.keyring)
    ended: Counter[str] = Counter()
    for run in runs:
        if run.state != executor_pb2.RUN_STATE_DEAD_LETTERED:
            continue
        operator = minter.mint_operator("bench@agentmesh", tenant="acme", on_behalf_of=run.user, run_id=run.run_id)
        request = executor_service_pb2.ReplayDeadLetterRequest(dead_letter_id=run.error.metadata["dead_letter_id"])
        async for answer in stub.ReplayDeadLetter(request, metadata=client.metadata(operator), timeout=10):
            if answer.event.HasField("run_finished"):
                state = answer.event.run_finished.run.state
                ended[executor_pb2.RunState.Name(state).removeprefix("RUN_STATE_").lower()] += 1
    return ended


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m executor.bench", description=__doc__)
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--failure-rate", type=float, default=0.2, help="share of vendor requests that fail")
    parser.add_argument("--concurrency", type=int, default=20, help="workflows in flight at once")
    parser.add_argument("--deadline", type=float, default=5.0, help="each request's deadline, seconds")
    parser.add_argument("--vendor-timeout", type=float, default=1.0, help="the connectors' vendor timeout, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-replay", dest="replay", action="store_false",
                        help="do not replay the dead letters afterwards (faults cleared)")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run_bench(args)), indent=2))


if __name__ == "__main__":
    main()
