"""`agentmesh bench load`: open-loop Poisson load through AgentService on a mesh of processes it starts."""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# realistic: the LLM simulator plans and answers, the sandboxes inject vendor latency (log-normal, like a real
# deployment); capacity: the embedded planner and no vendor latency, swept over rates to find where overhead p99 stays
# under 100 ms. Both run as a generated tenant of 1000+ users; a benchmark prints figures and asserts nothing.
REALISTIC, CAPACITY = "realistic", "capacity"
BENCH_TENANT = "bench"
_ID_FIELDS = ("okta_id", "slack_user_id", "jira_account_id", "servicenow_sys_id")
OVERHEAD_TARGET_MS = 100.0
# The mix: about 70 % of requests need one tool, 30 % two or three; every request is about the requester.
ONE_TOOL = ("Who is my manager?", "What groups am I in?", "Which apps do I have access to?",
            "Show me my open incidents", "Show me my open Jira issues", "What approvals are waiting for me?")
MULTI_TOOL = ("What's on my plate in Jira and ServiceNow?", "Who is my manager and what groups am I in?",
              "My VPN keeps dropping, open a ticket and tell me who my manager is",
              "Who is my manager, what groups am I in and which apps do I have access to?")
MULTI_SHARE = 0.3
VENDORS = ("servicenow", "jira", "okta")
BENCH_PROCESS = "bench (load, sandboxes, LLM simulator)"
NOT_PLATFORM = frozenset({"postgres", "redis", BENCH_PROCESS})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=(REALISTIC, CAPACITY), default=REALISTIC)
    parser.add_argument("--rate", type=float, default=50.0, help="arrivals per second (realistic mode)")
    parser.add_argument("--rates", default="10,20,30,40,60,80",
                        help="comma-separated arrival rates swept in capacity mode")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds per rate")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load before measuring")
    parser.add_argument("--users", type=int, default=1000, help="people in the generated bench tenant")
    parser.add_argument("--channels", type=int, default=8, help="gRPC channels the load is spread over")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--deadline", type=float, default=15.0,
                        help="the bench tenant's request deadline in seconds (long, so that tails are measured)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")


# --- the simulated deployment's latencies ------------------------------------------------------------------------
@dataclass(frozen=True)
class LogNormal:
    """A log-normal latency by its median and 99th percentile (ms)."""

    median_ms: float
    p99_ms: float

    @property
    def sigma(self) -> float:
        return math.log(max(self.p99_ms, self.median_ms) / self.median_ms) / 2.326


# Plan: time to the first token, then ~80 tool-call tokens at 400 tokens/s (median ≈ 1.2 s, p99 < 3 s).
PLAN_TTFT = LogNormal(1000.0, 2000.0)
PLAN_TOKENS_PER_S = 400.0
# Respond: time to the first token, then the answer streamed at ~50 tokens/s (median ≈ 0.9 s, p99 < 2 s; the
# simulator's answers are short, so the first token carries most of it).
RESPOND_TTFT = LogNormal(850.0, 1700.0)
RESPOND_TOKENS_PER_S = 50.0
VENDOR = LogNormal(400.0, 2000.0)


# --- the generated bench tenant ----------------------------------------------------------------------------------
def bench_fixture(users: int, seed: int) -> dict[str, Any]:
    """A generated tenant (connectors.common.fixturegen) grown to `users` people: the generator's name pool holds
    676 people, so the rest are numbered copies of its staff (same groups, own ids in every system)."""
    from connectors.common.fixturegen import generate_tenant

    fixture = generate_tenant(seed, tenant_id=BENCH_TENANT, people=min(users, 600))
    rng = random.Random(f"{seed}:more people")  # not the generator's sequence: its ids must not come again
    staff = [u for u in fixture["users"][4:] if u["okta_status"] == "ACTIVE"]
    taken = {u[k] for u in fixture["users"] for k in _ID_FIELDS}

    def fresh(prefix: str, alphabet: str, size: int) -> str:
        while True:
            value = prefix + "".join(rng.choice(alphabet) for _ in range(size))
            if value not in taken:
                taken.add(value)
                return value

    hexdigits, alnum = "0123456789abcdef", "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    for n in range(len(fixture["users"]), users):
        model = rng.choice(staff)
        first, last = model["first_name"], f"{model['last_name']}{n}"
        fixture["users"].append({
            **model, "email": f"{first}.{last}@{BENCH_TENANT}.example".lower(), "last_name": last,
            "groups": list(model["groups"]), "servicenow_roles": list(model["servicenow_roles"]),
            "okta_id": fresh("00u", hexdigits, 17), "slack_user_id": fresh("U", alnum, 10),
            "jira_account_id": fresh("", hexdigits, 24), "servicenow_sys_id": fresh("", hexdigits, 32),
            "salesforce_user_id": None, "salesforce_profile": None})
    return fixture


def bench_policy(mode: str) -> dict[str, Any]:
    """Everyone may use the tools of the mix; limits far above the load (throttling is tested elsewhere)."""
    tiers = {t: f"sim:sim-{t}" for t in ("fast", "mid", "power")} if mode == REALISTIC else \
        {t: "embedded" for t in ("fast", "mid", "power")}
    return {"connectors": list(VENDORS), "rules": [{"effect": "allow", "groups": ["Everyone"], "tools": ["*"]}],
            "model_tiers": tiers, "rate_limits": {"tenant_rps": 100_000, "user_per_minute": 100_000}}


# --- the LLM simulator with separate plan and respond latencies --------------------------------------------------
_PROFILE: contextvars.ContextVar[str] = contextvars.ContextVar("bench_llm_profile", default="respond")


def bench_simulator(seed: int) -> Any:
    """planner.sim's simulator with one latency model for planning calls and another for answers; its plans come
    from the embedded planner once per request text, re-addressed to each requester (a remote model costs this
    machine no CPU, so the simulated one should not either)."""
    from planner.sim import LatencyModel, LLMSimulator, embedded_plan_maker

    make = embedded_plan_maker()
    plans: dict[str, str] = {}
    template = "bench.requester@bench.example"

    def plan_maker(planning: Mapping[str, Any]) -> dict[str, Any]:
        request, requester = str(planning.get("request", "")), str(planning.get("requester", ""))
        if request not in plans:
            plans[request] = json.dumps(make({**planning, "requester": template}))
        made: dict[str, Any] = json.loads(plans[request].replace(template, requester))
        return made

    class BenchSimulator(LLMSimulator):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(LatencyModel(RESPOND_TTFT.median_ms, RESPOND_TOKENS_PER_S, RESPOND_TTFT.sigma),
                             plan_maker, seed)
            self.plan_latency = LatencyModel(PLAN_TTFT.median_ms, PLAN_TOKENS_PER_S, PLAN_TTFT.sigma)
            self.durations: dict[str, list[float]] = {"plan": [], "respond": []}

        def _profile(self) -> Any:
            return self.plan_latency if _PROFILE.get() == "plan" else self.latency

        async def _openai(self, request: Any) -> Any:
            from aiohttp import web

            began = time.perf_counter()
            try:
                body = await request.json()
                kind = "plan" if body.get("tools") else "respond"
                _PROFILE.set(kind)
                answer = await super()._openai(request)
            except ConnectionError:  # the planner gave up on the call (its deadline); nobody reads an answer
                return web.Response(status=499)
            self.durations[kind].append(time.perf_counter() - began)
            return answer

        async def _delay_first(self) -> None:
            await asyncio.sleep(self._profile().ttft_s(self._rng))

        def _chunks(self, text: str) -> list[tuple[str, float]]:
            size = 16  # characters: about four tokens
            pieces = [text[i:i + size] for i in range(0, len(text), size)] or [""]
            pause = (size / 4) / max(self._profile().tokens_per_s, 0.001)
            return [(piece, pause if i else 0.0) for i, piece in enumerate(pieces)]

    return BenchSimulator()


# --- the mesh, as processes ------------------------------------------------------------------------------------
@dataclass
class Deployment:
    """The processes of a bench mesh and what the load needs of it."""

    state: Path
    endpoints: dict[str, Any]
    processes: dict[str, subprocess.Popen[bytes]]
    backing: Any
    sandboxes: Any
    simulator: Any
    api_key: str = ""
    people: list[str] = field(default_factory=list)

    def pids(self) -> dict[str, list[int]]:
        """Service processes, and Redis and PostgreSQL (with the postmaster's backends)."""
        import psutil

        out: dict[str, list[int]] = {name: [p.pid] for name, p in self.processes.items()}
        out[BENCH_PROCESS] = [os.getpid()]
        for proc in self.backing.processes:
            name = "postgres" if "postgres" in " ".join(map(str, proc.args)) else "redis"
            try:
                children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                children = []
            out[name] = [proc.pid, *children]
        return out

    async def close(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        await self.sandboxes.close()
        if self.simulator is not None:
            await self.simulator.stop()
        self.backing.stop()


def _service_env(deploy_state: Path, backing: Any, ports: dict[str, int], name: str, extra: dict[str, str],
                 jwks: Path) -> dict[str, str]:
    env = {**os.environ, "AGENTMESH_STATE_DIR": str(deploy_state), "AGENTMESH_JWKS_PATH": str(jwks),
           "AGENTMESH_REDIS_URL": backing.redis_url, "AGENTMESH_DATABASE_URL": backing.app_dsn,
           "AGENTMESH_DATABASE_ADMIN_URL": backing.admin_dsn, "AGENTMESH_HOST": "127.0.0.1",
           "AGENTMESH_PORT": str(ports[name]), "AGENTMESH_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
           "HF_HUB_OFFLINE": "1"}
    env.pop("AGENTMESH_METRICS_PORT", None)
    for peer in ("registry", "memory", "planner", "executor"):
        env[f"AGENTMESH_{peer.upper()}_ADDR"] = f"127.0.0.1:{ports[peer]}"
    env.update(extra)
    return env


def _spawn(module: str, log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`python -m <module>` with its output in log_path (the child owns the file)."""
    with log_path.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", module], stdout=out, stderr=subprocess.STDOUT, env=env)


async def deploy(mode: str, users: int, seed: int, deadline_s: float) -> Deployment:
    """Backing services, sandboxes (with the bench tenant), the LLM simulator and every service as a process."""
    from connectors.common.sandbox import Faults, load_fixtures, sandbox_classes, start_sandboxes
    from mesh.backing import free_port, start_backing
    from mesh.principal import KeyRing
    from mesh.stack import SERVICES, wait_serving

    state = Path(tempfile.mkdtemp(prefix="agentmesh-bench-"))
    ring = KeyRing(state / "keys").ensure()
    print(f"bench: state in {state}; starting Redis and PostgreSQL", file=sys.stderr, flush=True)
    backing = await asyncio.to_thread(start_backing, state / "backing")
    fixtures = {**load_fixtures(), BENCH_TENANT: bench_fixture(users, seed)}
    sandboxes = await start_sandboxes([cls(fixtures) for cls in sandbox_classes().values()])
    for sandbox in sandboxes.sandboxes.values():
        sandbox.faults = Faults(latency={"median_ms": VENDOR.median_ms, "p99_ms": VENDOR.p99_ms}) \
            if mode == REALISTIC else Faults()
    simulator = None
    extra: dict[str, dict[str, str]] = {"executor": {"AGENTMESH_MAX_PARALLEL_PER_TENANT": "1024"},
                                        # the planner's per-tenant model limits (default 600 calls/min) off
                                        "planner": {"AGENTMESH_PLAN_CACHE_TTL_S": "0", "AGENTMESH_MODEL_LIMITS":
                                                    json.dumps({"requests_per_minute": 0, "daily_tokens": 10**12})}}
    if mode == REALISTIC:
        simulator = bench_simulator(seed)
        url = await simulator.start()
        extra["planner"]["AGENTMESH_MODEL_PROVIDERS"] = json.dumps(
            {"sim": {"kind": "openai", "base_url": f"{url}/v1", "api_key": "sim", "timeout_s": 30}})
    services = [s for s in SERVICES if s.present]
    ports = {s.name: free_port() for s in services}
    logs = state / "logs"
    logs.mkdir()
    processes = {service.name: _spawn(service.module, logs / f"{service.name}.log",
                                      _service_env(state, backing, ports, service.name, extra.get(service.name, {}),
                                                   ring.jwks_path)) for service in services}
    endpoints: dict[str, Any] = {
        "services": {name: f"127.0.0.1:{port}" for name, port in ports.items()},
        "sandboxes": sandboxes.base_urls, "sandbox_admin": sandboxes.admin_urls, "jwks_path": str(ring.jwks_path),
        "keys_dir": str(ring.folder), "redis_url": backing.redis_url, "database_url": backing.app_dsn,
        "database_admin_url": backing.admin_dsn, "state_dir": str(state)}
    deployment = Deployment(state, endpoints, processes, backing, sandboxes, simulator)
    try:
        print("bench: waiting for every service to be SERVING", file=sys.stderr, flush=True)
        await wait_serving(endpoints["services"], timeout_s=240)
        await seed_bench(deployment, fixtures[BENCH_TENANT], mode, deadline_s)
    except BaseException:
        await deployment.close()
        raise
    return deployment


async def seed_bench(deployment: Deployment, fixture: dict[str, Any], mode: str, deadline_s: float) -> None:
    """The bench tenant through the registry's admin RPCs (tenant, directory, connectors, every user linked) and an
    API key that may assert its users."""
    from google.protobuf import duration_pb2, timestamp_pb2

    from agentmesh.common.v1 import common_pb2
    from agentmesh.connector.v1 import connector_pb2
    from agentmesh.registry.v1 import registry_service_pb2, registry_service_pb2_grpc
    from connectors.registry.directory import person_from_fixture
    from connectors.registry.seed import registration, tenant_message
    from gateway.seed import ensure_keys
    from mesh import client
    from mesh.principal import KeyRing, Minter

    minter = Minter(KeyRing(Path(deployment.endpoints["keys_dir"])))
    meta = client.metadata(minter.mint_operator("bench@agentmesh"))
    tenant = tenant_message(BENCH_TENANT, fixture, bench_policy(mode))
    tenant.request_timeout.CopyFrom(duration_pb2.Duration(seconds=int(deadline_s)))
    people = [person_from_fixture(u) for u in fixture["users"]]
    print(f"bench: seeding tenant {BENCH_TENANT} with {len(people)} people", file=sys.stderr, flush=True)
    async with client.channel(deployment.endpoints["services"]["registry"]) as chan:
        stub = registry_service_pb2_grpc.RegistryServiceStub(chan)
        await stub.UpsertTenant(registry_service_pb2.UpsertTenantRequest(tenant=tenant), metadata=meta, timeout=10)
        await stub.ImportDirectory(registry_service_pb2.ImportDirectoryRequest(tenant_id=BENCH_TENANT, people=[
            common_pb2.Person(email=p.email, name=p.name, first_name=p.first_name, last_name=p.last_name,
                              groups=list(p.groups), title=p.title, department=p.department, manager=p.manager,
                              system_ids=p.system_ids) for p in people]), metadata=meta, timeout=30)
        gate = asyncio.Semaphore(16)

        async def link(vendor: str, email: str) -> None:
            token, info = deployment.sandboxes.sandboxes[vendor].tokens.issue(BENCH_TENANT, email,
                                                                              ttl_s=24 * 3600)
            expire = timestamp_pb2.Timestamp()
            expire.FromSeconds(int(info.expires_at))
            async with gate:
                await stub.PutCredential(registry_service_pb2.PutCredentialRequest(
                    tenant_id=BENCH_TENANT, connector=vendor, user=email,
                    credential=connector_pb2.Credential(kind=connector_pb2.CREDENTIAL_KIND_USER, token=token,
                                                        scheme="Bearer"),
                    refresh_token=info.refresh_token or "", expire_time=expire), metadata=meta, timeout=10)

        for vendor in VENDORS:
            await stub.RegisterConnector(registry_service_pb2.RegisterConnectorRequest(registration=registration(
                BENCH_TENANT, vendor, deployment.endpoints["services"][f"connector-{vendor}"],
                deployment.sandboxes.base_urls[vendor][BENCH_TENANT], fixture)), metadata=meta, timeout=10)
            await asyncio.gather(*(link(vendor, p.email) for p in people))
    keys = await ensure_keys(deployment.endpoints["database_url"], deployment.endpoints["database_admin_url"],
                             (BENCH_TENANT,), {})
    deployment.api_key = keys[BENCH_TENANT]
    deployment.people = [p.email for p in people]


# --- the load ------------------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One request as the client saw it."""

    sent: float
    text: str = ""
    first_event_s: float | None = None
    end_to_end_s: float | None = None
    error: str = ""
    outcome: str = ""
    overhead_s: float | None = None
    steps: int = 0
    step_latencies: list[float] = field(default_factory=list)
    step_errors: list[str] = field(default_factory=list)


async def run_load(deployment: Deployment, rate: float, seconds: float, channels: int, seed: int) -> list[Sample]:
    """Open-loop Poisson arrivals for `seconds`; waits for every request sent to finish."""
    import grpc

    from agentmesh.agent.v1 import agent_service_pb2 as pb
    from agentmesh.agent.v1 import agent_service_pb2_grpc as pb_grpc
    from gateway.client import outcome_name
    from mesh import client as mesh_client

    rng = random.Random(seed)
    chans = [mesh_client.channel(deployment.endpoints["services"]["gateway"]) for _ in range(channels)]
    stubs = [pb_grpc.AgentServiceStub(c) for c in chans]
    samples: list[Sample] = []

    async def one(index: int, user: str, text: str) -> None:
        sample = Sample(sent=time.perf_counter(), text=text)
        samples.append(sample)
        metadata = (("authorization", f"Bearer {deployment.api_key}"), ("x-agentmesh-user", user))
        try:
            call = stubs[index % len(stubs)].Converse(pb.ConverseRequest(text=text), metadata=metadata, timeout=60)
            async for event in call:
                now = time.perf_counter() - sample.sent
                if sample.first_event_s is None:
                    sample.first_event_s = now
                if event.HasField("step_finished"):
                    result = event.step_finished
                    sample.steps += 1
                    sample.step_latencies.append(result.latency.ToNanoseconds() / 1e9)
                    if result.HasField("error") and result.error.reason:
                        sample.step_errors.append(f"{result.tool} {result.error.reason}")
                if event.HasField("final"):
                    sample.end_to_end_s = now
                    sample.outcome = outcome_name(event.final.outcome)
                    sample.overhead_s = event.final.overhead.ToNanoseconds() / 1e9
        except grpc.aio.AioRpcError as err:
            sample.error = err.code().name

    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    at = start
    index = 0
    while True:
        at += rng.expovariate(rate)
        if at - start >= seconds:
            break
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        text = rng.choice(MULTI_TOOL) if rng.random() < MULTI_SHARE else rng.choice(ONE_TOOL)
        tasks.append(asyncio.create_task(one(index, rng.choice(deployment.people), text)))
        index += 1
    await asyncio.gather(*tasks)
    for chan in chans:
        await chan.close()
    return samples


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(math.ceil(q / 100 * len(ordered)) - 1, 0)
    return ordered[min(rank, len(ordered) - 1)]


def cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    import psutil

    out: dict[str, float] = {}
    for name, group in pids.items():
        total = 0.0
        for pid in group:
            try:
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
        out[name] = total
    return out


def summarize(samples: list[Sample], seconds: float, cpu: dict[str, float]) -> dict[str, Any]:
    done = [s for s in samples if s.end_to_end_s is not None and not s.error]
    errors = [s for s in samples if s.error or s.end_to_end_s is None]
    ms = 1000.0

    def p(values: list[float], q: float) -> float | None:
        found = percentile(values, q)
        return round(found * ms, 1) if found is not None else None

    e2e = [s.end_to_end_s for s in done if s.end_to_end_s is not None]
    first = [s.first_event_s for s in samples if s.first_event_s is not None]
    overhead = [s.overhead_s for s in done if s.overhead_s is not None]
    steps = [lat for s in done for lat in s.step_latencies]
    platform_cpu = sum(v for k, v in cpu.items() if k not in NOT_PLATFORM)
    outcomes: dict[str, int] = {}
    for s in done:
        outcomes[s.outcome] = outcomes.get(s.outcome, 0) + 1
    return {
        "requests": len(samples), "achieved_rps": round(len(samples) / seconds, 1),
        "end_to_end_ms": {"p50": p(e2e, 50), "p95": p(e2e, 95), "p99": p(e2e, 99)},
        "first_event_ms": {"p50": p(first, 50), "p99": p(first, 99)},
        "overhead_ms": {"p50": p(overhead, 50), "p99": p(overhead, 99)},
        "step_ms": {"p50": p(steps, 50), "p99": p(steps, 99)},
        "error_rate": round(len(errors) / len(samples), 4) if samples else None,
        "errors": sorted({s.error or "no final" for s in errors}),
        "outcomes": outcomes,
        "failed_requests": {t: sum(1 for s in done if s.outcome == "failed" and s.text == t)
                            for t in sorted({s.text for s in done if s.outcome == "failed"})},
        "step_errors": {e: sum(1 for s in done for x in s.step_errors if x == e)
                        for e in sorted({x for s in done for x in s.step_errors})},
        "steps_per_request": {str(n): sum(1 for s in done if s.steps == n) for n in sorted({s.steps for s in done})},
        "cpu_s_per_request": round(platform_cpu / len(samples), 4) if samples else None,
        "cpu_s_per_request_by_process": {k: round(v / len(samples), 4) for k, v in sorted(cpu.items())}
        if samples else {},
    }


async def measure(deployment: Deployment, rate: float, seconds: float, warmup: float, channels: int,
                  seed: int) -> dict[str, Any]:
    if warmup > 0:
        await run_load(deployment, rate, warmup, channels, seed + 1)
    if deployment.simulator is not None:
        for durations in deployment.simulator.durations.values():
            durations.clear()
    pids = deployment.pids()
    before = cpu_seconds(pids)
    samples = await run_load(deployment, rate, seconds, channels, seed)
    after = cpu_seconds(pids)
    result = summarize(samples, seconds, {k: after[k] - before.get(k, 0.0) for k in after})
    result["rate"] = rate
    if deployment.simulator is not None:
        result["model_ms"] = {kind: {"p50": _ms(percentile(v, 50)), "p99": _ms(percentile(v, 99))}
                              for kind, v in deployment.simulator.durations.items()}
    return result


def _ms(value: float | None) -> float | None:
    return round(value * 1000, 1) if value is not None else None


def machine() -> dict[str, Any]:
    import psutil

    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model or platform.processor(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version(),
            "kernel": platform.release()}


def report(results: dict[str, Any], out: Any = sys.stdout) -> None:
    print(f"machine: {json.dumps(results['machine'])}", file=out)
    for run in results["runs"]:
        print(f"\nrate {run['rate']}/s for {results['duration_s']} s ({results['mode']}): {run['requests']} requests,"
              f" {run['achieved_rps']}/s achieved", file=out)
        for key in ("end_to_end_ms", "first_event_ms", "overhead_ms", "step_ms", "model_ms"):
            if key in run:
                print(f"  {key:<16} {json.dumps(run[key])}", file=out)
        print(f"  error_rate       {run['error_rate']} {run['errors']}", file=out)
        print(f"  outcomes         {json.dumps(run['outcomes'])}; steps/request "
              f"{json.dumps(run['steps_per_request'])}", file=out)
        if run["failed_requests"]:
            print(f"  failed outcomes  {json.dumps(run['failed_requests'])}", file=out)
        if run["step_errors"]:
            print(f"  step errors      {json.dumps(run['step_errors'])}", file=out)
        print(f"  cpu s/request    {run['cpu_s_per_request']} (the mesh's service processes) "
              f"{json.dumps(run['cpu_s_per_request_by_process'])}", file=out)
    if results["mode"] == CAPACITY:
        under = [r["rate"] for r in results["runs"] if (r["overhead_ms"]["p99"] or 1e9) < OVERHEAD_TARGET_MS
                 and not r["error_rate"]]
        print(f"\nhighest rate with overhead p99 < {OVERHEAD_TARGET_MS:.0f} ms and no errors: "
              f"{max(under) if under else 'none of the rates tried'}", file=out)


async def command(args: argparse.Namespace) -> int:
    deployment = await deploy(args.mode, args.users, args.seed, args.deadline)
    try:
        rates = [args.rate] if args.mode == REALISTIC else [float(r) for r in args.rates.split(",") if r.strip()]
        runs: list[dict[str, Any]] = []
        for rate in rates:
            print(f"bench: {rate}/s for {args.duration} s (after {args.warmup} s of warm-up)", file=sys.stderr,
                  flush=True)
            runs.append(await measure(deployment, rate, args.duration, args.warmup, args.channels,
                                      args.seed + len(runs)))
        results = {"mode": args.mode, "duration_s": args.duration, "users": len(deployment.people),
                   "machine": machine(), "runs": runs, "run_id": uuid.uuid4().hex[:8],
                   "command": " ".join(["agentmesh", *sys.argv[1:]])}
        if args.json:
            print(json.dumps(results, indent=2))
        else:
            report(results)
    finally:
        await deployment.close()
    return 0
