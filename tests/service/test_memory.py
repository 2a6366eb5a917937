"""MemoryService over real channels against real Redis and PostgreSQL: TTLs, atomic working state, recall,
isolation, erasure and the context window manager."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import redis.asyncio as redis
from google.protobuf import duration_pb2, struct_pb2

from agentmesh.common.v1 import common_pb2
from agentmesh.memory.v1 import memory_service_pb2 as pb
from agentmesh.memory.v1 import memory_service_pb2_grpc
from memory import keys
from memory.config import MemoryConfig
from memory.server import create_memory_server
from mesh import client, embeddings, tokens
from mesh.errors import details_of
from mesh.principal import METADATA_KEY, Minter, Principal

PAIRS = Path(__file__).resolve().parents[1] / "data" / "recall-pairs.jsonl"
TIMEOUT = 30.0


@pytest.fixture(scope="module")
async def memory(backing, mesh_config):
    config = MemoryConfig(state_dir=mesh_config.state_dir, jwks_path=mesh_config.jwks_path, port=0,
                          redis_url=backing.redis_url, database_url=backing.app_dsn,
                          database_admin_url=backing.admin_dsn, purge_interval_s=0)
    running = await create_memory_server(config)
    chan = client.channel(f"127.0.0.1:{running.port}")
    yield memory_service_pb2_grpc.MemoryServiceStub(chan), config
    await chan.close()
    await running.stop(0)


@pytest.fixture
async def rds(backing):
    conn = redis.Redis.from_url(backing.redis_url)
    yield conn
    await conn.aclose()


@pytest.fixture
async def admin(backing):
    conn = await asyncpg.connect(backing.admin_dsn)
    yield conn
    await conn.close()


def tenant() -> str:
    return "t" + uuid.uuid4().hex[:10]


def md(p: Principal) -> tuple[tuple[str, str], ...]:
    return client.metadata(p)


def turn(role: str, text: str) -> common_pb2.Turn:
    return common_pb2.Turn(role=role, text=text)


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


async def fails(call: Any) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return details_of(info.value)


# -- sessions ------------------------------------------------------------------------------------------------


async def test_session_turns_are_kept_24h_and_refreshed_on_append(memory, minter: Minter, rds) -> None:
    stub, _ = memory
    t = tenant()
    alice = minter.mint_user(t, "alice@example.com")
    for i, (role, text) in enumerate([("user", "my VPN keeps dropping"), ("assistant", "I opened INC0010042."),
                                      ("user", "thanks")]):
        resp = await stub.AppendTurn(pb.AppendTurnRequest(session_id="slack:C1:1700.1", turn=turn(role, text)),
                                     metadata=md(alice), timeout=TIMEOUT)
        assert resp.turn_count == i + 1
    listed = await stub.ListTurns(pb.ListTurnsRequest(session_id="slack:C1:1700.1"), metadata=md(alice),
                                  timeout=TIMEOUT)
    assert [(x.role, x.text) for x in listed.turns] == [("user", "my VPN keeps dropping"),
                                                        ("assistant", "I opened INC0010042."), ("user", "thanks")]
    assert all(x.create_time.seconds > 0 for x in listed.turns)
    last = await stub.ListTurns(pb.ListTurnsRequest(session_id="slack:C1:1700.1", limit=1), metadata=md(alice),
                                timeout=TIMEOUT)
    assert [x.text for x in last.turns] == ["thanks"]

    key = keys.session_key(t, "alice@example.com", "slack:C1:1700.1")
    assert 24 * 3600 - 60 < await rds.ttl(key) <= 24 * 3600
    await rds.expire(key, 5)
    await stub.AppendTurn(pb.AppendTurnRequest(session_id="slack:C1:1700.1", turn=turn("user", "one more")),
                          metadata=md(alice), timeout=TIMEOUT)
    assert await rds.ttl(key) > 24 * 3600 - 60
    assert key.startswith(f"am:{{{t}}}:")  # hash-tagged by tenant: one slot per tenant on a cluster


async def test_sessions_are_per_tenant_and_user(memory, minter: Minter) -> None:
    stub, _ = memory
    t, other = tenant(), tenant()
    alice = minter.mint_user(t, "alice@example.com")
    await stub.AppendTurn(pb.AppendTurnRequest(session_id="shared-id", turn=turn("user", "my secret plan")),
                          metadata=md(alice), timeout=TIMEOUT)
    for p in (minter.mint_user(t, "bob@example.com"), minter.mint_user(other, "alice@example.com")):
        listed = await stub.ListTurns(pb.ListTurnsRequest(session_id="shared-id"), metadata=md(p), timeout=TIMEOUT)
        assert list(listed.turns) == []
        ctx = await stub.BuildContext(pb.BuildContextRequest(session_id="shared-id", request="what was my plan?",
                                                             budget_tokens=500), metadata=md(p), timeout=TIMEOUT)
        assert "secret" not in ctx.text


# -- working state -------------------------------------------------------------------------------------------


async def test_working_state_merges_keys_and_lives_one_hour(memory, minter: Minter, rds) -> None:
    stub, _ = memory
    t = tenant()
    alice = minter.mint_user(t, "alice@example.com")
    empty = await stub.GetWorkingState(pb.GetWorkingStateRequest(run_id="run-1"), metadata=md(alice),
                                       timeout=TIMEOUT)
    assert empty.version == 0 and dict(empty.state.fields) == {}
    v1 = await stub.UpdateWorkingState(pb.UpdateWorkingStateRequest(run_id="run-1", values=struct(
        {"s1": {"status": "ok", "key": "INC0010042"}})), metadata=md(alice), timeout=TIMEOUT)
    v2 = await stub.UpdateWorkingState(pb.UpdateWorkingStateRequest(run_id="run-1", values=struct(
        {"s2": {"status": "running"}})), metadata=md(alice), timeout=TIMEOUT)
    assert (v1.version, v2.version) == (1, 2)
    got = await stub.GetWorkingState(pb.GetWorkingStateRequest(run_id="run-1"), metadata=md(alice), timeout=TIMEOUT)
    assert got.version == 2
    assert {k: dict(v.struct_value) for k, v in got.state.fields.items()} == {
        "s1": {"status": "ok", "key": "INC0010042"}, "s2": {"status": "running"}}
    assert 3600 - 60 < await rds.ttl(keys.run_key(t, "alice@example.com", "run-1")) <= 3600
    bob = minter.mint_user(t, "bob@example.com")
    theirs = await stub.GetWorkingState(pb.GetWorkingStateRequest(run_id="run-1"), metadata=md(bob),
                                        timeout=TIMEOUT)
    assert theirs.version == 0 and dict(theirs.state.fields) == {}


async def test_concurrent_steps_lose_no_writes(memory, minter: Minter) -> None:
    stub, _ = memory
    alice = minter.mint_user(tenant(), "alice@example.com")
    await asyncio.gather(*[
        stub.UpdateWorkingState(pb.UpdateWorkingStateRequest(run_id="r", values=struct({f"s{i}": {"n": i}})),
                                metadata=md(alice), timeout=TIMEOUT) for i in range(60)])
    got = await stub.GetWorkingState(pb.GetWorkingStateRequest(run_id="r"), metadata=md(alice), timeout=TIMEOUT)
    assert got.version == 60
    assert sorted(got.state.fields) == sorted(f"s{i}" for i in range(60))

    async def increment() -> int:
        conflicts = 0
        while True:
            cur = await stub.GetWorkingState(pb.GetWorkingStateRequest(run_id="counter"), metadata=md(alice),
                                             timeout=TIMEOUT)
            n = cur.state.fields["n"].number_value if "n" in cur.state.fields else 0
            try:
                await stub.UpdateWorkingState(pb.UpdateWorkingStateRequest(
                    run_id="counter", values=struct({"n": n + 1}), expected_version=cur.version),
                    metadata=md(alice), timeout=TIMEOUT)
                return conflicts
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.ABORTED
                conflicts += 1

    # The first write has expected_version 0 (unconditional), so seed the counter before racing.
    await stub.UpdateWorkingState(pb.UpdateWorkingStateRequest(run_id="counter", values=struct({"n": 0})),
                                  metadata=md(alice), timeout=TIMEOUT)
    conflicts = await asyncio.gather(*[increment() for _ in range(25)])
    got = await stub.GetWorkingState(pb.GetWorkingStateRequest(run_id="counter"), metadata=md(alice),
                                     timeout=TIMEOUT)
    assert got.state.fields["n"].number_value == 25
    print(f"compare-and-set: 25 concurrent increments, {sum(conflicts)} conflicts retried, none lost")


async def test_stale_version_is_refused_with_the_current_one(memory, minter: Minter) -> None:
    stub, _ = memory
    alice = minter.mint_user(tenant(), "alice@example.com")
    for _ in range(2):
        await stub.UpdateWorkingState(pb.UpdateWorkingStateRequest(run_id="r", values=struct({"a": 1})),
                                      metadata=md(alice), timeout=TIMEOUT)
    err = await fails(stub.UpdateWorkingState(pb.UpdateWorkingStateRequest(
        run_id="r", values=struct({"a": 2}), expected_version=1), metadata=md(alice), timeout=TIMEOUT))
    assert err.code == grpc.StatusCode.ABORTED and err.metadata["current_version"] == "2"


async def test_operator_replay_reaches_the_users_working_state(memory, minter: Minter) -> None:
    stub, _ = memory
    t = tenant()
    alice = minter.mint_user(t, "alice@example.com")
    await stub.UpdateWorkingState(pb.UpdateWorkingStateRequest(run_id="r9", values=struct({"s1": "done"})),
                                  metadata=md(alice), timeout=TIMEOUT)
    replay = minter.mint_operator("ops@example.com", tenant=t, on_behalf_of="alice@example.com", run_id="r9")
    got = await stub.GetWorkingState(pb.GetWorkingStateRequest(run_id="r9"), metadata=md(replay), timeout=TIMEOUT)
    assert got.state.fields["s1"].string_value == "done"
    anyone = minter.mint_operator("ops@example.com")
    err = await fails(stub.GetWorkingState(pb.GetWorkingStateRequest(run_id="r9"), metadata=md(anyone),
                                           timeout=TIMEOUT))
    assert err.code == grpc.StatusCode.PERMISSION_DENIED


# -- long-term memory ----------------------------------------------------------------------------------------


async def test_recall_finds_paraphrases_top1_at_least_90_percent(memory, minter: Minter) -> None:
    """Every fact of the labelled set stored for one user; each paraphrase must bring its own fact first.

    Pairs marked `hard` swap every content word for a synonym; their figure is printed, not asserted."""
    stub, _ = memory
    pairs = [json.loads(line) for line in PAIRS.read_text().splitlines() if line.strip()]
    alice = minter.mint_user(tenant(), "alice@example.com")
    ids: dict[str, str] = {}
    for pair in pairs:
        if pair["fact"] not in ids:
            resp = await stub.Remember(pb.RememberRequest(text=pair["fact"], kind=pair["kind"]), metadata=md(alice),
                                       timeout=TIMEOUT)
            ids[pair["fact"]] = resp.fact.id
    assert len(set(ids.values())) == len(ids)
    figures = {}
    for hard in (False, True):
        chosen = [p for p in pairs if p.get("hard", False) == hard]
        hits, misses = 0, []
        for pair in chosen:
            resp = await stub.Recall(pb.RecallRequest(query=pair["query"], top_k=3), metadata=md(alice),
                                     timeout=TIMEOUT)
            assert len(resp.facts) == 3 and resp.facts[0].score >= resp.facts[1].score >= resp.facts[2].score
            if resp.facts[0].id == ids[pair["fact"]]:
                hits += 1
            else:
                misses.append(f"{pair['query']!r} -> {resp.facts[0].text!r}")
        figures[hard] = (hits, len(chosen), misses)
    hits, total, misses = figures[False]
    print(f"recall top-1 over {len(ids)} facts: paraphrases {hits}/{total} = {hits / total:.1%} "
          f"(misses: {misses}); synonym-only paraphrases {figures[True][0]}/{figures[True][1]} = "
          f"{figures[True][0] / figures[True][1]:.1%}")
    assert total >= 50 and hits / total >= 0.9


async def test_recall_is_isolated_by_tenant_and_user(memory, minter: Minter) -> None:
    stub, _ = memory
    t, other = tenant(), tenant()
    alice, bob = minter.mint_user(t, "alice@example.com"), minter.mint_user(t, "bob@example.com")
    await stub.Remember(pb.RememberRequest(text="My default Jira project is ENG.", kind="preference"),
                        metadata=md(alice), timeout=TIMEOUT)
    op = minter.mint_operator("ops@example.com", tenant=t)
    await stub.Remember(pb.RememberRequest(text="The company VPN client is GlobalProtect.", kind="preference",
                                           tenant_wide=True), metadata=md(op), timeout=TIMEOUT)
    query = pb.RecallRequest(query="which Jira project and VPN do I use?", top_k=10)
    mine = await stub.Recall(query, metadata=md(alice), timeout=TIMEOUT)
    assert sorted(f.text for f in mine.facts) == ["My default Jira project is ENG.",
                                                  "The company VPN client is GlobalProtect."]
    theirs = await stub.Recall(query, metadata=md(bob), timeout=TIMEOUT)
    assert [f.text for f in theirs.facts] == ["The company VPN client is GlobalProtect."]
    elsewhere = await stub.Recall(query, metadata=md(minter.mint_user(other, "alice@example.com")), timeout=TIMEOUT)
    assert list(elsewhere.facts) == []
    err = await fails(stub.Remember(pb.RememberRequest(text="x y z", kind="preference", tenant_wide=True),
                                    metadata=md(alice), timeout=TIMEOUT))
    assert err.code == grpc.StatusCode.PERMISSION_DENIED


async def test_row_level_security_holds_for_the_app_role_itself(memory, minter: Minter, backing) -> None:
    stub, _ = memory
    t = tenant()
    await stub.Remember(pb.RememberRequest(text="I'm on a ThinkPad.", kind="preference"),
                        metadata=md(minter.mint_user(t, "alice@example.com")), timeout=TIMEOUT)
    conn = await asyncpg.connect(backing.app_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM memory.facts") == 0  # no tenant set: nothing
        async with conn.transaction():
            await conn.execute("SELECT set_config('agentmesh.tenant', $1, true), "
                               "set_config('agentmesh.user', 'bob@example.com', true)", t)
            assert await conn.fetchval("SELECT count(*) FROM memory.facts WHERE user_email IS NOT NULL") == 0
        async with conn.transaction():
            await conn.execute("SELECT set_config('agentmesh.tenant', $1, true), "
                               "set_config('agentmesh.user', 'alice@example.com', true)", t)
            assert await conn.fetchval("SELECT count(*) FROM memory.facts") == 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with conn.transaction():
                await conn.execute("SELECT set_config('agentmesh.tenant', $1, true), "
                                   "set_config('agentmesh.user', 'alice@example.com', true)", t)
                await conn.execute("INSERT INTO memory.facts (tenant_id, user_email, kind, text, dedup_key, model, "
                                   "dimension, embedding, expire_time) VALUES ('someone-else', 'alice@example.com', "
                                   "'preference', 'x', 'x', 'm', 3, '[1,0,0]', now() + interval '1 day')")
    finally:
        await conn.close()


async def test_facts_expire_by_ttl_and_are_purged(memory, minter: Minter, admin, backing) -> None:
    stub, config = memory
    t = tenant()
    alice = minter.mint_user(t, "alice@example.com")
    kept = await stub.Remember(pb.RememberRequest(text="My timezone is Europe/Lisbon.", kind="preference"),
                               metadata=md(alice), timeout=TIMEOUT)
    expire = await admin.fetchval("SELECT expire_time FROM memory.facts WHERE id = $1", uuid.UUID(kept.fact.id))
    expected = datetime.now(UTC) + timedelta(seconds=config.memory_ttl_s)
    assert abs((expire - expected).total_seconds()) < 120
    short = await stub.Remember(pb.RememberRequest(text="I'm working from the Berlin office this week.",
                                                   kind="preference", ttl=duration_pb2.Duration(seconds=1)),
                                metadata=md(alice), timeout=TIMEOUT)
    query = pb.RecallRequest(query="where am I working from this week?", top_k=5)
    assert short.fact.id in [f.id for f in (await stub.Recall(query, metadata=md(alice), timeout=TIMEOUT)).facts]
    await asyncio.sleep(1.2)
    assert short.fact.id not in [f.id for f in (await stub.Recall(query, metadata=md(alice), timeout=TIMEOUT)).facts]
    from memory.facts import FactStore, create_pool

    pool = await create_pool(backing.app_dsn)
    try:
        assert await FactStore(pool, "all-MiniLM-L6-v2", 384).purge_expired() >= 1
    finally:
        await pool.close()
    rows = await admin.fetch("SELECT id::text FROM memory.facts WHERE tenant_id = $1", t)
    assert [r["id"] for r in rows] == [kept.fact.id]


async def test_user_turns_state_preferences_and_later_requests_use_them(memory, minter: Minter) -> None:
    stub, _ = memory
    alice = minter.mint_user(tenant(), "alice@example.com")
    resp = await stub.AppendTurn(pb.AppendTurnRequest(session_id="s1", turn=turn(
        "user", "My default Jira project is ENG. Also I'm on a ThinkPad, and my VPN keeps dropping.")),
        metadata=md(alice), timeout=TIMEOUT)
    assert sorted(f.text for f in resp.remembered) == ["The user's computer is a ThinkPad.",
                                                       "The user's default Jira project is ENG."]
    # A question states nothing; an assistant turn is never mined.
    resp = await stub.AppendTurn(pb.AppendTurnRequest(session_id="s1", turn=turn("user", "What is my project?")),
                                 metadata=md(alice), timeout=TIMEOUT)
    assert list(resp.remembered) == []
    # A new session, days later: the preference still shapes the context.
    ctx = await stub.BuildContext(pb.BuildContextRequest(session_id="s2", request="file a bug in my project",
                                                         budget_tokens=300), metadata=md(alice), timeout=TIMEOUT)
    assert ctx.context.facts[0].text == "The user's default Jira project is ENG."
    assert "ENG" in ctx.text and ctx.context.token_count == tokens.count(ctx.text) <= 300
    # The latest statement of a preference replaces the earlier one.
    await stub.AppendTurn(pb.AppendTurnRequest(session_id="s3", turn=turn("user", "My default project is OPS now")),
                          metadata=md(alice), timeout=TIMEOUT)
    recalled = await stub.Recall(pb.RecallRequest(query="default Jira project", top_k=10), metadata=md(alice),
                                 timeout=TIMEOUT)
    projects = [f.text for f in recalled.facts if "project" in f.text]
    assert projects == ["The user's default Jira project is OPS now."]


async def test_completed_runs_are_summarised_once_and_recalled(memory, minter: Minter) -> None:
    stub, _ = memory
    alice = minter.mint_user(tenant(), "alice@example.com", run_id="run-42")
    request = pb.RecordRunRequest(request="my VPN keeps dropping, open a ticket",
                                  tools=["servicenow.create_incident"], results=["created INC0010042"],
                                  outcome="answered")
    first = await stub.RecordRun(request, metadata=md(alice), timeout=TIMEOUT)
    again = await stub.RecordRun(request, metadata=md(alice), timeout=TIMEOUT)
    assert first.summary.id == again.summary.id and first.summary.kind == "summary"
    assert first.summary.text == ('Asked "my VPN keeps dropping, open a ticket" → servicenow.create_incident; '
                                  "answered: created INC0010042.")
    recalled = await stub.Recall(pb.RecallRequest(query="the ticket about my VPN last time", top_k=1),
                                 metadata=md(alice), timeout=TIMEOUT)
    assert recalled.facts[0].id == first.summary.id
    ctx = await stub.BuildContext(pb.BuildContextRequest(session_id="new", budget_tokens=400,
                                                         request="do it like last time for my VPN issue"),
                                  metadata=md(alice), timeout=TIMEOUT)
    assert "INC0010042" in ctx.text


async def test_runs_recorded_together_share_one_encoder_pass(memory, minter: Minter) -> None:
    # Recording a run is off the request's critical path: summaries arriving together are embedded in one pass.
    stub, _ = memory
    encoder = embeddings.get_encoder()
    systems = ["VPN", "laptop", "badge", "printer", "wifi", "email"]
    before = encoder.passes
    users = [minter.mint_user(tenant(), f"batch{i}@example.com", run_id=f"run-batch-{i}") for i in range(6)]
    recorded = await asyncio.gather(*(
        stub.RecordRun(pb.RecordRunRequest(request=f"my {thing} is broken, open a ticket",
                                           tools=["servicenow.create_incident"], results=[f"created INC00200{i}"],
                                           outcome="answered"), metadata=md(user), timeout=TIMEOUT)
        for i, (thing, user) in enumerate(zip(systems, users, strict=True))))
    assert encoder.passes - before == 1
    for i, (thing, user) in enumerate(zip(systems, users, strict=True)):
        assert f"INC00200{i}" in recorded[i].summary.text
        recalled = await stub.Recall(pb.RecallRequest(query=f"the ticket about my {thing}", top_k=1),
                                     metadata=md(user), timeout=TIMEOUT)
        assert recalled.facts[0].id == recorded[i].summary.id


# -- erasure -------------------------------------------------------------------------------------------------


async def _seed(stub: Any, p: Principal) -> None:
    for session in ("s1", "s2"):
        await stub.AppendTurn(pb.AppendTurnRequest(session_id=session, turn=turn("user", "I'm on a ThinkPad.")),
                              metadata=md(p), timeout=TIMEOUT)
    for run in ("r1", "r2"):
        await stub.UpdateWorkingState(pb.UpdateWorkingStateRequest(run_id=run, values=struct({"s1": "ok"})),
                                      metadata=md(p), timeout=TIMEOUT)
    for text in ("My timezone is Europe/Lisbon.", "I prefer Slack over email."):
        await stub.Remember(pb.RememberRequest(text=text, kind="preference"), metadata=md(p), timeout=TIMEOUT)


async def test_forget_user_leaves_nothing_behind(memory, minter: Minter, rds, admin) -> None:
    stub, _ = memory
    t = tenant()
    alice, bob = minter.mint_user(t, "alice@example.com"), minter.mint_user(t, "bob@example.com")
    await _seed(stub, alice)
    await _seed(stub, bob)
    resp = await stub.ForgetUser(pb.ForgetUserRequest(), metadata=md(alice), timeout=TIMEOUT)
    # 3 facts: the ThinkPad preference stated in the turns, and the two remembered.
    assert (resp.sessions_deleted, resp.working_states_deleted, resp.facts_deleted) == (2, 2, 3)
    left = [k.decode() async for k in rds.scan_iter(match=f"am:{{{t}}}:*")]
    assert left and not [k for k in left if keys.user_tag("alice@example.com") in k]
    assert await admin.fetchval("SELECT count(*) FROM memory.facts WHERE tenant_id = $1 AND user_email = $2",
                                t, "alice@example.com") == 0
    assert await admin.fetchval("SELECT count(*) FROM memory.facts WHERE tenant_id = $1 AND user_email = $2",
                                t, "bob@example.com") == 3
    listed = await stub.ListTurns(pb.ListTurnsRequest(session_id="s1"), metadata=md(bob), timeout=TIMEOUT)
    assert len(listed.turns) == 1
    again = await stub.ForgetUser(pb.ForgetUserRequest(), metadata=md(alice), timeout=TIMEOUT)
    assert (again.sessions_deleted, again.working_states_deleted, again.facts_deleted) == (0, 0, 0)


async def test_forget_user_is_the_users_own_or_an_operators(memory, minter: Minter) -> None:
    stub, _ = memory
    t = tenant()
    alice, bob = minter.mint_user(t, "alice@example.com"), minter.mint_user(t, "bob@example.com")
    await _seed(stub, bob)
    err = await fails(stub.ForgetUser(pb.ForgetUserRequest(user="bob@example.com"), metadata=md(alice),
                                      timeout=TIMEOUT))
    assert err.code == grpc.StatusCode.PERMISSION_DENIED
    op = minter.mint_operator("dpo@example.com")
    err = await fails(stub.ForgetUser(pb.ForgetUserRequest(user="bob@example.com"), metadata=md(op),
                                      timeout=TIMEOUT))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.field_violations[0][0] == "tenant_id"
    resp = await stub.ForgetUser(pb.ForgetUserRequest(user="Bob@Example.com", tenant_id=t), metadata=md(op),
                                 timeout=TIMEOUT)
    assert (resp.sessions_deleted, resp.working_states_deleted, resp.facts_deleted) == (2, 2, 3)


# -- context -------------------------------------------------------------------------------------------------

_TOPICS = [
    "My laptop fan is loud and the battery drains within two hours even when idle.",
    "I tried updating the BIOS but the update tool refused to run on battery power.",
    "Could you check whether my Okta account is locked after the failed logins this morning?",
    "The Salesforce opportunity for Globex needs its close date moved to next quarter.",
    "Please assign the Jira bug ENG-412 about the login page to Priya on the platform team.",
    "The VPN disconnects every ten minutes when I am on the office Wi-Fi network.",
]


async def test_context_never_exceeds_budget_and_condenses_older_turns(memory, minter: Minter) -> None:
    stub, _ = memory
    alice = minter.mint_user(tenant(), "alice@example.com", run_id="run-1")
    for i in range(60):
        role = "user" if i % 2 == 0 else "assistant"
        text = f"Turn {i}: " + " ".join(_TOPICS[(i + j) % len(_TOPICS)] for j in range(1 + i % 3))
        await stub.AppendTurn(pb.AppendTurnRequest(session_id="long", turn=turn(role, text)), metadata=md(alice),
                              timeout=TIMEOUT)
    await stub.UpdateWorkingState(pb.UpdateWorkingStateRequest(run_id="run-1", values=struct(
        {"s1": {"tool": "okta.get_user", "status": "ok"}})), metadata=md(alice), timeout=TIMEOUT)
    await stub.Remember(pb.RememberRequest(text="The user's VPN profile is Corp-Full-Tunnel.", kind="preference"),
                        metadata=md(alice), timeout=TIMEOUT)
    everything = None
    for budget in (1, 20, 60, 150, 400, 1000, 3000, 100_000):
        ctx = await stub.BuildContext(pb.BuildContextRequest(
            session_id="long", run_id="run-1", request="why does my VPN keep disconnecting?", budget_tokens=budget),
            metadata=md(alice), timeout=TIMEOUT)
        c = ctx.context
        assert c.token_count == tokens.count(ctx.text) <= budget and c.budget_tokens == budget
        assert ctx.encoding == "cl100k_base"
        if c.turns:
            texts = [t.text for t in c.turns]
            assert texts[-1].startswith("Turn 59:")  # the most recent turns, in order
            assert [int(t.split(":")[0][5:]) for t in texts] == list(range(60 - len(texts), 60))
        if budget >= 60:
            assert "okta.get_user" in ctx.text  # task state first
        if budget in (150, 400, 1000):  # the whole history takes about 2 500 tokens
            assert len(c.turns) < 60
            assert c.summary and ctx.condensed_turns == 60 - len(c.turns)
            assert c.facts and c.facts[0].text == "The user's VPN profile is Corp-Full-Tunnel."
            assert "VPN" in c.summary  # the summary favours what the request is about
            for line in c.summary.splitlines():
                assert line.split(": ", 1)[0] in ("user", "assistant")
        everything = ctx
    assert everything is not None and len(everything.context.turns) == 60 and not everything.context.summary


async def test_bad_requests_are_refused_with_field_violations(memory, minter: Minter) -> None:
    stub, _ = memory
    alice = minter.mint_user(tenant(), "alice@example.com")
    cases = [
        (stub.AppendTurn, pb.AppendTurnRequest(session_id="s", turn=turn("robot", "hi")), "turn.role"),
        (stub.AppendTurn, pb.AppendTurnRequest(session_id="", turn=turn("user", "hi")), "session_id"),
        (stub.AppendTurn, pb.AppendTurnRequest(session_id="s"), "turn"),
        (stub.AppendTurn, pb.AppendTurnRequest(session_id="s", turn=turn("user", "a\x00b")), "turn.text"),
        (stub.ListTurns, pb.ListTurnsRequest(session_id="s", limit=-1), "limit"),
        (stub.UpdateWorkingState, pb.UpdateWorkingStateRequest(run_id="r"), "values"),
        (stub.UpdateWorkingState, pb.UpdateWorkingStateRequest(run_id="r", values=struct({"a": 1}),
                                                               expected_version=-1), "expected_version"),
        (stub.Remember, pb.RememberRequest(text="x", kind="gossip"), "kind"),
        (stub.Remember, pb.RememberRequest(text="", kind="preference"), "text"),
        (stub.Remember, pb.RememberRequest(text="x" * 5000, kind="preference"), "text"),
        (stub.Remember, pb.RememberRequest(text="x", kind="summary", ttl=duration_pb2.Duration(seconds=-5)), "ttl"),
        (stub.Recall, pb.RecallRequest(query="vpn", top_k=1000), "top_k"),
        (stub.Recall, pb.RecallRequest(query=""), "query"),
        (stub.ForgetUser, pb.ForgetUserRequest(user="not an email"), "user"),
        (stub.BuildContext, pb.BuildContextRequest(session_id="s", request="x", budget_tokens=0), "budget_tokens"),
        (stub.GetWorkingState, pb.GetWorkingStateRequest(run_id="a\nb"), "run_id"),
        (stub.RecordRun, pb.RecordRunRequest(request="x", outcome="great"), "outcome"),
    ]
    for method, request, field in cases:
        err = await fails(method(request, metadata=md(alice), timeout=TIMEOUT))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT, (request, err)
        assert field in [f for f, _ in err.field_violations], (request, err.field_violations)
    # RecordRun needs a run id: from the request or the principal.
    bare = Principal(tenant(), "alice@example.com", request_id="rq", run_id="", expires_at=time.time() + 600)
    err = await fails(stub.RecordRun(pb.RecordRunRequest(request="x"), metadata=((METADATA_KEY, minter.mint(bare)),),
                                     timeout=TIMEOUT))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.field_violations[0][0] == "run_id"


async def test_special_token_text_is_counted_not_refused(memory, minter: Minter) -> None:
    stub, _ = memory
    alice = minter.mint_user(tenant(), "alice@example.com")
    await stub.AppendTurn(pb.AppendTurnRequest(session_id="s", turn=turn("user", "ignore <|endoftext|> please")),
                          metadata=md(alice), timeout=TIMEOUT)
    ctx = await stub.BuildContext(pb.BuildContextRequest(session_id="s", request="<|endoftext|>", budget_tokens=50),
                                  metadata=md(alice), timeout=TIMEOUT)
    assert "<|endoftext|>" in ctx.text and ctx.context.token_count <= 50
