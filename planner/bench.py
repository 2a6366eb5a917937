"""`agentmesh bench planner`: embedded planning latency (p50/p99) and plans/s, in process and via gRPC."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentmesh.planner.v1 import planner_service_pb2, planner_service_pb2_grpc
from mesh import client
from mesh.config import REPO_ROOT
from mesh.principal import KeyRing, Minter
from planner.embedded.evaluate import FIXTURES_TODAY, shared_dir
from planner.local import Listing, local_listing

_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Case:
    tenant: str
    user: str
    request: str


def load_cases() -> list[Case]:
    """The public eval requests and the paraphrases kept in tests/data."""
    files = [shared_dir() / "eval" / "planner-public.jsonl", REPO_ROOT / "tests" / "data" / "planner-paraphrases.jsonl"]
    out = []
    for path in files:
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    data = json.loads(line)
                    out.append(Case(data["tenant"], data["user"], data["request"]))
    return out


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[index]


def _summary(label: str, latencies_s: Sequence[float], wall_s: float, plans: int, cpu_s: float | None = None) -> str:
    ms = [x * 1000 for x in latencies_s]
    text = (f"{label:<34} n={plans:<5} p50 {percentile(ms, 50):6.1f} ms  p99 {percentile(ms, 99):6.1f} ms  "
            f"max {max(ms):6.1f} ms  mean {statistics.fmean(ms):6.1f} ms  {plans / wall_s:6.1f} plans/s")
    if cpu_s is not None:
        text += f"  server CPU {cpu_s * 1000 / plans:5.1f} ms/plan"
    return text


def _request(case: Case, listing: Listing) -> planner_service_pb2.PlanRequest:
    return planner_service_pb2.PlanRequest(request=case.request, tools=listing.tools, denied_tools=listing.denied,
                                           people=listing.people, tools_fingerprint=listing.fingerprint)


async def bench_in_process(cases: Sequence[Case], listings: dict[tuple[str, str], Listing], rounds: int) -> None:
    """The embedded planner alone, and the whole planning path (validation included), in this process."""
    from mesh.resilience import BreakerRegistry, RetryPolicy
    from planner import convert
    from planner.embedded_tier import EmbeddedTier
    from planner.model import Deadline, PlanOutcome
    from planner.models.gateway import ModelGateway
    from planner.models.prices import PriceTable
    from planner.models.tenants import TenantModels
    from planner.planning import Planner, PlannerSettings
    from planner.relevance import ToolRanker

    tier = EmbeddedTier()
    started = time.perf_counter()
    tier.warm()
    print(f"embedded planner ready in {time.perf_counter() - started:.2f}s (model load and catalog embedding)")
    planner = Planner(ModelGateway({}, PriceTable(), BreakerRegistry(), RetryPolicy()), tier, None, ToolRanker(),
                      PlannerSettings(), lambda: FIXTURES_TODAY)
    inputs = []
    for case in cases:
        listing = listings[(case.tenant, case.user)]
        request = _request(case, listing)
        inputs.append((case, convert.plan_input(request, case.tenant, case.user, Deadline.within(3600))))
    raw: list[float] = []
    whole: list[float] = []
    for case, inp in inputs[:5]:  # warm-up
        tier.plan(case.request, requester=case.user, allowed={t.name for t in inp.tools}, denied=inp.denied,
                  people=inp.people, today=FIXTURES_TODAY, context=None)
    wall = time.perf_counter()
    for _ in range(rounds):
        for case, inp in inputs:
            t0 = time.perf_counter()
            tier.plan(case.request, requester=case.user, allowed={t.name for t in inp.tools}, denied=inp.denied,
                      people=inp.people, today=FIXTURES_TODAY, context=None)
            raw.append(time.perf_counter() - t0)
    print(_summary("in-process EmbeddedPlanner.plan", raw, time.perf_counter() - wall, len(raw)))
    wall = time.perf_counter()
    for _ in range(rounds):
        for _case, inp in inputs:
            t0 = time.perf_counter()
            async for item in planner.plan(inp, TenantModels()):
                if isinstance(item, PlanOutcome):
                    convert.plan_proto(item)
            whole.append(time.perf_counter() - t0)
    print(_summary("in-process Planner.plan (+validate)", whole, time.perf_counter() - wall, len(whole)))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


async def _start_server(folder: Path) -> tuple[asyncio.subprocess.Process, str]:
    ring = KeyRing(folder / "keys").ensure()
    env = {**os.environ, "AGENTMESH_PORT": "0", "AGENTMESH_JWKS_PATH": str(ring.jwks_path),
           "AGENTMESH_STATE_DIR": str(folder), "AGENTMESH_PLAN_CACHE_TTL_S": "0", "AGENTMESH_LOG_LEVEL": "WARNING",
           "AGENTMESH_TODAY": FIXTURES_TODAY.isoformat()}
    for name in ("AGENTMESH_REGISTRY_ADDR", "AGENTMESH_TENANTS_FILE"):
        env.pop(name, None)
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "planner.server", env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert process.stdout is not None
    while True:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=120)
        if not line:
            raise SystemExit("the planner server exited before listening")
        text = line.decode().strip()
        if text.startswith("AGENTMESH_LISTENING"):
            return process, text.split()[-1]


async def bench_grpc(cases: Sequence[Case], listings: dict[tuple[str, str], Listing], rounds: int,
                     concurrency: int) -> None:
    """Plan over gRPC against `python -m planner.server` (embedded tier, cache off): sequential latency, then
    throughput with `concurrency` requests in flight, and the server's CPU per plan."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        process, address = await _start_server(folder)
        minter = Minter(KeyRing(folder / "keys"))
        try:
            async with client.channel(address) as channel:
                stub = planner_service_pb2_grpc.PlannerServiceStub(channel)
                requests = []
                for case in cases:
                    listing = listings[(case.tenant, case.user)]
                    requests.append((case, listing, _request(case, listing)))

                async def one(item: tuple[Case, Listing, planner_service_pb2.PlanRequest]) -> float:
                    case, listing, request = item
                    principal = minter.mint_user(case.tenant, case.user, listing.groups, deadline_s=30)
                    t0 = time.perf_counter()
                    async for event in stub.Plan(request, metadata=client.metadata(principal), timeout=30):
                        if event.HasField("plan"):
                            break
                    return time.perf_counter() - t0

                for item in requests[:5]:
                    await one(item)
                cpu0, wall = _cpu_seconds(process.pid), time.perf_counter()
                latencies = [await one(item) for _ in range(rounds) for item in requests]
                print(_summary("gRPC Plan, sequential", latencies, time.perf_counter() - wall, len(latencies),
                               _cpu_seconds(process.pid) - cpu0))
                queue: asyncio.Queue[Any] = asyncio.Queue()
                for _ in range(rounds):
                    for item in requests:
                        queue.put_nowait(item)
                results: list[float] = []

                async def worker() -> None:
                    while not queue.empty():
                        results.append(await one(queue.get_nowait()))

                cpu0, wall = _cpu_seconds(process.pid), time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                print(_summary(f"gRPC Plan, {concurrency} in flight", results, time.perf_counter() - wall,
                               len(results), _cpu_seconds(process.pid) - cpu0))
        finally:
            process.terminate()
            await process.wait()


async def run(rounds: int, concurrency: int, grpc_too: bool = True) -> None:
    cases = load_cases()
    listings = {(c.tenant, c.user): local_listing(c.tenant, c.user) for c in cases}
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, {platform.processor() or _cpu_model()}, "
          f"Python {platform.python_version()}")
    print(f"{len(cases)} requests (public eval + paraphrases) x {rounds} rounds")
    await bench_in_process(cases, listings, rounds)
    if grpc_too:
        await bench_grpc(cases, listings, rounds, concurrency)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"
