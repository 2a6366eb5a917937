"""Memory with OpenAI embeddings and an OpenAI summary model, through the openai SDK against a local server speaking
/v1/embeddings and /v1/chat/completions: embedding spaces stay apart, a provider failure is a retryable UNAVAILABLE,
model summaries are cached per session, checked against the budget and replaced by the extractive one on failure."""

from __future__ import annotations

import hashlib
import re
import uuid

import asyncpg
import grpc
import numpy as np
import pytest
import redis.asyncio as redis
from aiohttp import web

from agentmesh.memory.v1 import memory_service_pb2 as pb
from agentmesh.memory.v1 import memory_service_pb2_grpc
from memory.config import MemoryConfig
from memory.server import create_memory_server
from mesh import client
from mesh.errors import details_of
from mesh.principal import Minter

MODEL = "local-bag-of-words-64"
DIM = 64
TIMEOUT = 30.0


def bag_of_words(text: str, dim: int) -> list[float]:
    """A deterministic embedding: hashed word counts (texts sharing words are near)."""
    vector = np.zeros(dim)
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % dim] += 1.0
    return vector.tolist()


SUMMARY = "Alice's VPN drops every ten minutes; INC0010042 is open with Network Operations."


class OpenAIServer:
    """Answers POST /v1/embeddings and /v1/chat/completions as the OpenAI API does; `failing` makes embeddings
    answer 503, `summary` is what the chat model says (None: 503)."""

    def __init__(self) -> None:
        self.failing = False
        self.requests: list[dict] = []
        self.summary: str | None = SUMMARY
        self.chats: list[dict] = []

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.chats.append(body)
        if self.summary is None:
            return web.json_response({"error": {"message": "down", "type": "server_error"}}, status=503)
        return web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": self.summary}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if self.failing:
            return web.json_response({"error": {"message": "overloaded", "type": "server_error"}}, status=503)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dim = int(body.get("dimensions") or DIM)
        data = [{"object": "embedding", "index": i, "embedding": bag_of_words(text, dim)}
                for i, text in enumerate(inputs)]
        return web.json_response({"object": "list", "data": data, "model": body["model"],
                                  "usage": {"prompt_tokens": 1, "total_tokens": 1}})


@pytest.fixture(scope="module")
async def openai_memory(backing, mesh_config):
    fake = OpenAIServer()
    app = web.Application()
    app.router.add_post("/v1/embeddings", fake.embeddings)
    app.router.add_post("/v1/chat/completions", fake.chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    config = MemoryConfig(state_dir=mesh_config.state_dir, jwks_path=mesh_config.jwks_path, port=0,
                          redis_url=backing.redis_url, database_url=backing.app_dsn,
                          database_admin_url=backing.admin_dsn, purge_interval_s=0, embedding_provider="openai",
                          openai_base_url=f"http://127.0.0.1:{port}/v1", openai_api_key="sk-local",
                          openai_embedding_model=MODEL, openai_embedding_dimensions=DIM, openai_timeout_s=2,
                          summarizer="openai", openai_summary_model="local-summary")
    running = await create_memory_server(config)
    chan = client.channel(f"127.0.0.1:{running.port}")
    yield memory_service_pb2_grpc.MemoryServiceStub(chan), fake
    await chan.close()
    await running.stop(0)
    await runner.cleanup()


async def test_openai_embeddings_are_used_and_recorded_with_their_model(openai_memory, minter: Minter,
                                                                       backing) -> None:
    stub, fake = openai_memory
    tenant = "o" + uuid.uuid4().hex[:10]
    alice = minter.mint_user(tenant, "alice@example.com")
    for text in ("My default Jira project is ENG.", "I prefer Slack over email."):
        await stub.Remember(pb.RememberRequest(text=text, kind="preference"), metadata=client.metadata(alice),
                            timeout=TIMEOUT)
    found = await stub.Recall(pb.RecallRequest(query="which Jira project is my default?", top_k=1),
                              metadata=client.metadata(alice), timeout=TIMEOUT)
    assert [f.text for f in found.facts] == ["My default Jira project is ENG."]
    assert fake.requests[-1]["model"] == MODEL and fake.requests[-1]["dimensions"] == DIM
    conn = await asyncpg.connect(backing.admin_dsn)
    try:
        rows = await conn.fetch("SELECT DISTINCT model, dimension FROM memory.facts WHERE tenant_id = $1", tenant)
        indexes = await conn.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = 'memory' "
                                   "AND indexdef LIKE '%' || $1 || '%'", MODEL)
    finally:
        await conn.close()
    assert [(r["model"], r["dimension"]) for r in rows] == [(MODEL, DIM)]
    assert len(indexes) == 1  # the model's own HNSW index, created at start


async def test_two_embedding_spaces_are_never_mixed(openai_memory, minter: Minter, backing, mesh_config) -> None:
    stub, _ = openai_memory
    tenant = "o" + uuid.uuid4().hex[:10]
    alice = minter.mint_user(tenant, "alice@example.com")
    await stub.Remember(pb.RememberRequest(text="My laptop is a ThinkPad.", kind="preference"),
                        metadata=client.metadata(alice), timeout=TIMEOUT)
    local = await create_memory_server(MemoryConfig(
        state_dir=mesh_config.state_dir, jwks_path=mesh_config.jwks_path, port=0, redis_url=backing.redis_url,
        database_url=backing.app_dsn, database_admin_url=backing.admin_dsn, purge_interval_s=0))
    chan = client.channel(f"127.0.0.1:{local.port}")
    try:
        minilm = memory_service_pb2_grpc.MemoryServiceStub(chan)
        found = await minilm.Recall(pb.RecallRequest(query="My laptop is a ThinkPad.", top_k=5),
                                    metadata=client.metadata(alice), timeout=TIMEOUT)
        assert list(found.facts) == []
        # Forgetting the user erases facts of every embedding space.
        erased = await minilm.ForgetUser(pb.ForgetUserRequest(), metadata=client.metadata(alice), timeout=TIMEOUT)
        assert erased.facts_deleted == 1
    finally:
        await chan.close()
        await local.stop(0)


async def test_a_failing_provider_is_a_retryable_unavailable(openai_memory, minter: Minter) -> None:
    stub, fake = openai_memory
    alice = minter.mint_user("o" + uuid.uuid4().hex[:10], "alice@example.com")
    fake.failing = True
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Recall(pb.RecallRequest(query="anything new?"), metadata=client.metadata(alice),
                              timeout=TIMEOUT)
    finally:
        fake.failing = False
    details = details_of(info.value)
    assert details.code == grpc.StatusCode.UNAVAILABLE and details.reason == "UPSTREAM_UNAVAILABLE"
    assert details.retry_after_s is not None


async def _long_session(stub, alice, session: str) -> None:
    for i in range(40):
        text = (f"Turn {i}: the VPN dropped again at {i} past nine and the ticket still says new. "
                "I tried reconnecting on office Wi-Fi and at home.")
        await stub.AppendTurn(pb.AppendTurnRequest(session_id=session, turn={"role": "user" if i % 2 == 0
                                                                             else "assistant", "text": text}),
                              metadata=client.metadata(alice), timeout=TIMEOUT)


async def test_the_model_condenses_older_turns_once_per_session(openai_memory, minter: Minter, backing) -> None:
    stub, fake = openai_memory
    tenant = "o" + uuid.uuid4().hex[:10]
    alice = minter.mint_user(tenant, "alice@example.com")
    await _long_session(stub, alice, "s1")
    request = pb.BuildContextRequest(session_id="s1", request="is my VPN ticket moving?", budget_tokens=300)
    before = len(fake.chats)
    first = await stub.BuildContext(request, metadata=client.metadata(alice), timeout=TIMEOUT)
    second = await stub.BuildContext(request, metadata=client.metadata(alice), timeout=TIMEOUT)
    assert first.context.summary == second.context.summary == SUMMARY
    assert first.condensed_turns > 0 and first.context.token_count <= 300
    assert len(fake.chats) == before + 1  # the second context reused the session's cached summary
    assert fake.chats[-1]["model"] == "local-summary" and fake.chats[-1]["max_tokens"] <= 300
    assert "Turn 0:" in fake.chats[-1]["messages"][1]["content"]
    conn = redis.Redis.from_url(backing.redis_url)
    try:
        assert [k async for k in conn.scan_iter(match=f"am:{{{tenant}}}:summary:*")]
        await stub.ForgetUser(pb.ForgetUserRequest(), metadata=client.metadata(alice), timeout=TIMEOUT)
        assert [k async for k in conn.scan_iter(match=f"am:{{{tenant}}}:*")] == []
    finally:
        await conn.aclose()


async def test_an_overlong_or_failed_model_summary_gives_way_to_the_extractive_one(openai_memory,
                                                                                  minter: Minter) -> None:
    stub, fake = openai_memory
    alice = minter.mint_user("o" + uuid.uuid4().hex[:10], "alice@example.com")
    await _long_session(stub, alice, "s1")
    try:
        for summary in ("VPN " * 2000, None):
            fake.summary = summary
            answer = await stub.BuildContext(pb.BuildContextRequest(
                session_id="s1", request="is my VPN ticket moving?", budget_tokens=300),
                metadata=client.metadata(alice), timeout=TIMEOUT)
            assert answer.context.summary and answer.context.token_count <= 300
            assert all(line.startswith(("user: ", "assistant: ")) for line in answer.context.summary.splitlines())
    finally:
        fake.summary = SUMMARY
