"""`agentmesh plan`, `agentmesh sim-llm` and `agentmesh bench planner`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import grpc

from agentmesh.common.v1 import common_pb2
from agentmesh.planner.v1 import planner_service_pb2, planner_service_pb2_grpc
from agentmesh.registry.v1 import registry_service_pb2, registry_service_pb2_grpc
from mesh import client
from mesh.config import MeshConfig
from mesh.principal import KeyRing, Minter, Principal


def bench_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    """The `bench` command's subparsers, created by the first package that needs them and shared after."""
    parser = sub.choices.get("bench")
    if parser is None:
        parser = sub.add_parser("bench", help="benchmarks of the mesh's components (each prints its figures)")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="component", required=True, metavar="COMPONENT")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    plan = sub.add_parser("plan", help="print the plan for a request without executing anything")
    plan.add_argument("--tenant", required=True)
    plan.add_argument("--user", required=True, help="the requester's email")
    plan.add_argument("--json", action="store_true", help="print the plan as one JSON object (eval format)")
    plan.add_argument("--local", action="store_true", help="run the planner in this process, not the running one")
    plan.add_argument("--timeout", type=float, default=10.0, help="the request's deadline in seconds")
    plan.add_argument("request", nargs="+", help="what the user asks")
    plan.set_defaults(func=_plan)

    sim = sub.add_parser("sim-llm", help="serve the OpenAI/Anthropic-compatible LLM simulator")
    sim.add_argument("--port", type=int, default=0, help="port to listen on (0 picks one)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--script", type=Path, help="JSON list or JSON lines of scripted answers and faults")
    sim.add_argument("--ttft-ms", type=float, default=300.0, help="median time to first token (log-normal)")
    sim.add_argument("--tokens-per-s", type=float, default=80.0, help="tokens per second after the first")
    sim.add_argument("--error-rate", type=float, default=0.0, help="share of unscripted calls answered 503")
    sim.set_defaults(func=_sim)

    bench = bench_subparsers(sub).add_parser("planner", help="embedded planner latency and throughput")
    bench.add_argument("--rounds", type=int, default=3, help="passes over the eval requests and paraphrases")
    bench.add_argument("--concurrency", type=int, default=4, help="requests in flight for the gRPC throughput run")
    bench.add_argument("--no-grpc", action="store_true", help="in-process figures only")
    bench.set_defaults(func=_bench)


# --- plan --------------------------------------------------------------------------------------------------------
def _minter(config: MeshConfig, endpoints: dict[str, Any]) -> Minter | None:
    folder = Path(endpoints.get("keys_dir") or config.state_dir / "keys")
    if not (folder / "current").exists():
        return None
    return Minter(KeyRing(folder))


def _endpoints(config: MeshConfig) -> dict[str, Any]:
    path = config.endpoints_path
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


async def _registry_listing(address: str, minter: Minter, tenant: str, user: str,
                            timeout_s: float) -> tuple[registry_service_pb2.ListToolsResponse, list[common_pb2.Person],
                                                     tuple[str, ...]]:
    """ListPeople (for the user's groups and the directory), then ListTools as that user."""
    async with client.channel(address) as channel:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        anonymous = minter.mint_user(tenant, user)
        people = await stub.ListPeople(registry_service_pb2.ListPeopleRequest(), metadata=client.metadata(anonymous),
                                       timeout=timeout_s)
        person = next((p for p in people.people if p.email.casefold() == user.casefold()), None)
        groups = tuple(person.groups) if person else ()
        principal = minter.mint_user(tenant, user, groups)
        tools = await stub.ListTools(registry_service_pb2.ListToolsRequest(), metadata=client.metadata(principal),
                                     timeout=timeout_s)
    return tools, list(people.people), groups


async def _plan(args: argparse.Namespace) -> int:
    from planner.convert import plan_json

    config = MeshConfig()
    endpoints = _endpoints(config)
    minter = _minter(config, endpoints)
    tenant, user, text = args.tenant, args.user.strip().lower(), " ".join(args.request)
    request = planner_service_pb2.PlanRequest(request=text)
    groups: tuple[str, ...] = ()
    registry = endpoints.get("services", {}).get("registry")
    listed = False
    if registry and minter is not None:
        try:
            tools, people, groups = await _registry_listing(registry, minter, tenant, user, min(args.timeout, 5.0))
        except grpc.aio.AioRpcError as err:
            print(f"agentmesh plan: the registry at {registry} answered {err.code().name} ({err.details()}); "
                  "building the tools from the manifests and policy.json instead", file=sys.stderr)
        else:
            request.tools.extend(tools.tools)
            request.denied_tools.extend(tools.denied_tools)
            request.tools_fingerprint = tools.fingerprint
            request.people.extend(people)
            listed = True
    if not listed:
        from planner.local import local_listing

        if not registry or minter is None:
            print("agentmesh plan: no running registry (start the stack with `agentmesh up`); building the tools "
                  "from the manifests and policy.json instead", file=sys.stderr)
        try:
            local = local_listing(tenant, user)
        except KeyError as err:
            print(f"agentmesh plan: {err.args[0] if err.args else err}", file=sys.stderr)
            return 2
        request.tools.extend(local.tools)
        request.denied_tools.extend(local.denied)
        request.people.extend(local.people)
        request.tools_fingerprint = local.fingerprint
        groups = local.groups
    if args.local:
        plan = await _plan_in_process(request, tenant, user, args.timeout)
    else:
        planner = endpoints.get("services", {}).get("planner")
        if not planner or minter is None:
            print("agentmesh plan: no running planner (start the stack with `agentmesh up`, or use --local)",
                  file=sys.stderr)
            return 2
        try:
            plan = await _plan_remote(planner, minter.mint_user(tenant, user, groups, deadline_s=args.timeout),
                                      request, args.timeout)
        except grpc.aio.AioRpcError as err:
            print(f"agentmesh plan: the planner answered {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    document = plan_json(plan)
    if args.json:
        print(json.dumps(document, ensure_ascii=False))
    else:
        _print_readable(document, plan)
    return 0


async def _plan_remote(address: str, principal: Principal, request: planner_service_pb2.PlanRequest,
                       timeout_s: float) -> common_pb2.Plan:
    async with client.channel(address) as channel:
        stub = planner_service_pb2_grpc.PlannerServiceStub(channel)
        async for event in stub.Plan(request, metadata=client.metadata(principal), timeout=timeout_s):
            if event.HasField("plan"):
                return event.plan
    raise SystemExit("agentmesh plan: the planner ended without a plan")


async def _plan_in_process(request: planner_service_pb2.PlanRequest, tenant: str, user: str,
                           timeout_s: float) -> common_pb2.Plan:
    """The planner's domain in this process: the configured providers (none: embedded), the fixtures' tiers."""
    from mesh.resilience import BreakerRegistry, RetryPolicy
    from planner import convert
    from planner.config import PlannerConfig
    from planner.embedded_tier import shared_tier
    from planner.local import policies
    from planner.model import Deadline, PlanOutcome
    from planner.models.gateway import ModelGateway, create_provider
    from planner.models.prices import PriceTable
    from planner.models.tenants import StaticTenants
    from planner.planning import Planner, PlannerSettings
    from planner.relevance import ToolRanker

    config = PlannerConfig()
    providers = {n: create_provider(n, s) for n, s in config.providers().items() if s.configured}
    gateway = ModelGateway(providers, PriceTable(config.model_prices), BreakerRegistry(), RetryPolicy(),
                           reserve_s=config.fallback_reserve_s)
    planner = Planner(gateway, shared_tier(), None, ToolRanker(),
                      PlannerSettings(config.token_batch_chars, config.token_batch_ms, config.max_prompt_tools),
                      config.resolved_today)
    tenants = StaticTenants.from_file(config.tenants_file, config.model_limits) if config.tenants_file else \
        StaticTenants(policies(), config.model_limits)
    principal = Principal(tenant, user)
    inp = convert.plan_input(request, tenant, user, Deadline.within(timeout_s))
    try:
        async for item in planner.plan(inp, await tenants.get(principal, 1.0)):
            if isinstance(item, PlanOutcome):
                return convert.plan_proto(item)
    finally:
        await gateway.close()
    raise SystemExit("agentmesh plan: the planner ended without a plan")


def _print_readable(document: dict[str, Any], plan: common_pb2.Plan) -> None:
    for step in document["steps"]:
        after = f"  (after {', '.join(step['depends_on'])})" if step["depends_on"] else ""
        print(f"{step['id']}  {step['effect']:<5} {step['tool']} {json.dumps(step['args'], ensure_ascii=False)}"
              f"{after}")
    for refusal in document["refusals"]:
        print(f"refused  {refusal['tool']}: {refusal['reason']}")
    if document["question"]:
        print(f"question: {document['question']}")
    if document["explanation"]:
        print(f"explanation: {document['explanation']}")
    print(f"[tier {plan.tier or '-'}, {plan.usage.provider}/{plan.usage.model}, "
          f"{plan.usage.input_tokens}+{plan.usage.output_tokens} tokens, ${plan.usage.cost_usd:.6f}"
          f"{', cached' if plan.cached else ''}]")


# --- sim-llm -----------------------------------------------------------------------------------------------------
def _sim(args: argparse.Namespace) -> int:
    from planner.sim import LatencyModel, load_script, serve_forever

    script = load_script(args.script.read_text()) if args.script else []
    latency = LatencyModel(args.ttft_ms, args.tokens_per_s, error_rate=args.error_rate)

    def ready(url: str) -> None:
        print(f"AGENTMESH_LISTENING sim-llm {url.removeprefix('http://')}", flush=True)
        print(f"OpenAI base_url {url}/v1 · Anthropic base_url {url}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(args.port, script, latency, args.host, ready))
    return 0


# --- bench planner -----------------------------------------------------------------------------------------------
async def _bench(args: argparse.Namespace) -> int:
    from planner.bench import run

    await run(args.rounds, args.concurrency, grpc_too=not args.no_grpc)
    return 0
