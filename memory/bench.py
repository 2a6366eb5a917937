"""`agentmesh bench memory`: BuildContext latency with 10 000 long-term facts and a 50-turn session, real stores."""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import asyncpg
import numpy as np
from google.protobuf import struct_pb2

from agentmesh.common.v1 import common_pb2
from agentmesh.memory.v1 import memory_service_pb2 as pb
from agentmesh.memory.v1 import memory_service_pb2_grpc
from memory.config import MemoryConfig
from memory.facts import dedup_key
from memory.recording import run_summary
from memory.server import MemoryServer, create_memory_server
from mesh import client
from mesh.backing import start_backing
from mesh.principal import KeyRing, Minter

TENANT = "bench"
USER = "alice@bench.example"
_SYSTEMS = ["ServiceNow", "Jira", "Salesforce", "Okta"]
_THINGS = ["VPN", "laptop", "printer", "badge", "password", "monitor", "docking station", "Wi-Fi", "calendar",
           "mailbox", "headset", "license", "SSO login", "shared drive", "phone", "expense report", "renewal",
           "opportunity", "lead", "sprint board", "deployment", "pager", "access group", "contract"]
_VERBS = ["open a ticket about", "check the status of", "escalate", "close", "assign", "update", "comment on",
          "reset", "order a new", "find", "summarise", "reopen"]
_TOOLS = ["servicenow.create_incident", "servicenow.get_incident", "jira.create_issue", "jira.transition_issue",
          "salesforce.update_opportunity", "okta.reset_password", "okta.get_user", "servicenow.add_comment"]
_PREFERENCES = ["My default {s} project is {k}.", "I prefer {s} notifications for anything about my {t}.",
                "My {t} is managed in {s} under {k}.", "Always cc my manager when you touch my {t} in {s}.",
                "I'm on the {k} team and my {t} tickets go to {s}."]
_TURNS = ["My {t} stopped working again this morning, can you {v} it?",
          "I opened {n} in {s} for your {t}; it is assigned to the {k} team.",
          "Thanks. Also, who approves changes to my {t}?",
          "Your manager approves {t} changes; I can {v} the request if you like.",
          "Please {v} my {t} and tell me when it is done."]


def _facts(count: int, rng: random.Random) -> list[tuple[str, str]]:
    """Distinct (text, kind) facts: mostly run summaries, some preferences."""
    out: dict[str, str] = {}
    n = 0
    while len(out) < count:
        n += 1
        thing, system = rng.choice(_THINGS), rng.choice(_SYSTEMS)
        if rng.random() < 0.25:
            text = rng.choice(_PREFERENCES).format(s=system, t=thing, k=f"{thing[:3].upper()}{n % 97}")
            out.setdefault(text, "preference")
        else:
            request = f"{rng.choice(_VERBS)} my {thing}"
            result = f"{system} record {rng.choice(['INC', 'ENG-', 'RITM', 'OPP'])}{100000 + n}"
            out.setdefault(run_summary(request, rng.sample(_TOOLS, rng.randint(1, 3)), [result],
                                       rng.choice(["answered", "denied", "failed"])), "summary")
    return list(out.items())


def _text(template: str, rng: random.Random, n: int) -> str:
    return template.format(t=rng.choice(_THINGS), v=rng.choice(_VERBS), s=rng.choice(_SYSTEMS),
                           k=rng.choice(["Network", "Desk", "Platform"]), n=f"INC{10000 + n}")


async def _embed_cached(embed: Callable[[list[str]], Awaitable[np.ndarray]], texts: list[str],
                        cache: Path) -> np.ndarray:
    """Embeddings of the seed facts, kept in the state folder: a rerun skips minutes of encoding."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache / f"memory-facts-{len(texts)}-{digest}.npy"
    if path.exists():
        return np.load(path)
    vectors = await embed(texts)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


async def _seed(running: MemoryServer, stub: memory_service_pb2_grpc.MemoryServiceStub, minter: Minter,
                facts: int, turns: int, rng: random.Random, cache: Path) -> None:
    stores = running.resources.stores if running.resources else None
    assert stores is not None
    items = _facts(facts, rng)
    vectors = await _embed_cached(stores.embedder.embed, [t for t, _ in items], cache)
    batch = [(text, kind, vectors[i], dedup_key(kind, text)) for i, (text, kind) in enumerate(items)]
    for start in range(0, len(batch), 1000):
        await stores.facts.remember_many(TENANT, USER, batch[start:start + 1000], timedelta(days=30))
    alice = minter.mint_user(TENANT, USER, run_id="bench-run", deadline_s=3600)
    for i in range(turns):
        await stub.AppendTurn(pb.AppendTurnRequest(session_id="bench-session", turn=common_pb2.Turn(
            role="user" if i % 2 == 0 else "assistant", text=_text(_TURNS[i % len(_TURNS)], rng, i))),
            metadata=client.metadata(alice), timeout=30)
    state = struct_pb2.Struct()
    state.update({"s1": {"tool": "servicenow.get_incident", "status": "ok", "number": "INC0010042"},
                  "s2": {"tool": "okta.get_user", "status": "running"}})
    await stub.UpdateWorkingState(pb.UpdateWorkingStateRequest(run_id="bench-run", values=state),
                                  metadata=client.metadata(alice), timeout=30)


async def _analyze(admin_dsn: str) -> None:
    """Fresh planner statistics after the bulk load, as autovacuum would gather them in a running system."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute("ANALYZE memory.facts")
    finally:
        await conn.close()


async def _plan(dsn: str) -> str:
    """The index the recall query uses, from EXPLAIN, as the app role sees it."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('agentmesh.tenant', $1, true), set_config('agentmesh.user', $2, true)"
                               ", set_config('hnsw.iterative_scan', 'strict_order', true)", TENANT, USER)
            vector = "[" + ",".join(["0.05"] * 384) + "]"
            rows = await conn.fetch(
                "EXPLAIN SELECT id FROM memory.facts WHERE model = 'all-MiniLM-L6-v2' AND expire_time > now() "
                "AND tenant_id = $1 AND (user_email IS NULL OR user_email = $2) "
                "ORDER BY embedding::vector(384) <=> $3::text::vector LIMIT 5", TENANT, USER, vector)
        plan = "\n".join(r[0] for r in rows)
        return "HNSW index scan" if "facts_hnsw" in plan else "no HNSW index scan: " + rows[0][0].strip()
    finally:
        await conn.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def run(facts: int, turns: int, requests: int, budget: int, seed: int) -> int:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="agentmesh-bench-memory-") as folder:
        state = Path(folder)
        backing = start_backing(state / "backing")
        try:
            ring = KeyRing(state / "keys").ensure()
            config = MemoryConfig(state_dir=state, jwks_path=ring.jwks_path, port=0, redis_url=backing.redis_url,
                                  database_url=backing.app_dsn, database_admin_url=backing.admin_dsn,
                                  purge_interval_s=0, log_level="WARNING")
            running = await create_memory_server(config)
            chan = client.channel(f"127.0.0.1:{running.port}")
            stub = memory_service_pb2_grpc.MemoryServiceStub(chan)
            minter = Minter(ring)
            try:
                started = time.perf_counter()
                await _seed(running, stub, minter, facts, turns, rng, MemoryConfig().state_dir / "bench")
                await _analyze(backing.admin_dsn)
                print(f"seeded {facts} facts and a {turns}-turn session in {time.perf_counter() - started:.1f} s; "
                      f"recall plan: {await _plan(backing.app_dsn)}")
                alice = minter.mint_user(TENANT, USER, run_id="bench-run", deadline_s=3600)
                asks = [f"{rng.choice(_VERBS)} my {rng.choice(_THINGS)} in {rng.choice(_SYSTEMS)} (#{i})"
                        for i in range(requests + 20)]
                latencies: list[float] = []
                tokens_used: list[int] = []
                cpu_started = 0.0
                for i, ask in enumerate(asks):
                    if i == 20:
                        cpu_started = time.process_time()
                    t0 = time.perf_counter()
                    answer = await stub.BuildContext(pb.BuildContextRequest(
                        session_id="bench-session", run_id="bench-run", request=ask, budget_tokens=budget),
                        metadata=client.metadata(alice), timeout=10)
                    elapsed = (time.perf_counter() - t0) * 1000
                    if i >= 20:  # the first calls warm caches and connections
                        latencies.append(elapsed)
                        tokens_used.append(answer.context.token_count)
                cpu_ms = (time.process_time() - cpu_started) * 1000 / requests
                print(f"BuildContext over gRPC, {requests} requests, budget {budget} tokens "
                      f"(context {min(tokens_used)}-{max(tokens_used)} tokens, "
                      f"{answer.condensed_turns} older turns condensed):")
                print(f"  p50 {_percentile(latencies, 50):.1f} ms  p95 {_percentile(latencies, 95):.1f} ms  "
                      f"p99 {_percentile(latencies, 99):.1f} ms  max {max(latencies):.1f} ms  "
                      f"mean {statistics.fmean(latencies):.1f} ms")
                print(f"  CPU per call {cpu_ms:.1f} ms (client and server, this process; PostgreSQL and Redis apart)")
                print(f"  machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} "
                      f"(other processes competing for the cores inflate the tail)")
            finally:
                await chan.close()
                await running.stop(0)
        finally:
            backing.stop()
    return 0


async def command(args: argparse.Namespace) -> int:
    """The `agentmesh bench memory` command: prints itself, then the figures."""
    print(f"agentmesh bench memory --facts {args.facts} --turns {args.turns} --requests {args.requests} "
          f"--budget {args.budget} --seed {args.seed}")
    return await run(args.facts, args.turns, args.requests, args.budget, args.seed)
