"""Memory with the real registry as its peer: the tenant's memory TTL applies, and ForgetUser is audited."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from google.protobuf import duration_pb2, struct_pb2

from agentmesh.memory.v1 import memory_service_pb2 as pb
from agentmesh.memory.v1 import memory_service_pb2_grpc
from agentmesh.registry.v1 import registry_pb2, registry_service_pb2, registry_service_pb2_grpc
from memory.config import MemoryConfig
from memory.server import create_memory_server
from mesh import client
from mesh.principal import KeyRing, Minter

registry_server = pytest.importorskip("connectors.registry.server")
registry_config = pytest.importorskip("connectors.registry.config")

POLICY = {"connectors": ["okta"], "rules": [{"effect": "allow", "groups": ["Everyone"], "tools": ["okta.get_*"]}]}
TIMEOUT = 30.0


@pytest.fixture(scope="module")
async def peers(backing, keyring: KeyRing, minter: Minter, mesh_config, tmp_path_factory: pytest.TempPathFactory):
    config = registry_config.RegistryConfig(
        state_dir=tmp_path_factory.mktemp("registry-for-memory"), jwks_path=keyring.jwks_path, port=0,
        database_url=backing.app_dsn, database_admin_url=backing.admin_dsn, signing_keys_dir=keyring.folder,
        watch_interval_s=3600, callback_port=None)
    registry = await registry_server.create_registry_server(config)
    memory = await create_memory_server(MemoryConfig(
        state_dir=mesh_config.state_dir, jwks_path=mesh_config.jwks_path, port=0, redis_url=backing.redis_url,
        database_url=backing.app_dsn, database_admin_url=backing.admin_dsn, purge_interval_s=0,
        registry_addr=f"127.0.0.1:{registry.port}"))
    registry_chan = client.channel(f"127.0.0.1:{registry.port}")
    memory_chan = client.channel(f"127.0.0.1:{memory.port}")
    yield (registry_service_pb2_grpc.RegistryServiceStub(registry_chan),
           memory_service_pb2_grpc.MemoryServiceStub(memory_chan))
    await memory_chan.close()
    await registry_chan.close()
    await memory.stop(0)
    await registry.stop(0)


async def _tenant(registry, minter: Minter, memory_ttl: timedelta) -> str:
    tenant_id = "m" + uuid.uuid4().hex[:10]
    policy = struct_pb2.Struct()
    policy.update(POLICY)
    ttl = duration_pb2.Duration()
    ttl.FromTimedelta(memory_ttl)
    await registry.UpsertTenant(registry_service_pb2.UpsertTenantRequest(tenant=registry_pb2.Tenant(
        tenant_id=tenant_id, display_name="Memory Test", domain="example.com", policy=policy, memory_ttl=ttl)),
        metadata=client.metadata(minter.mint_operator("ops@example.com")), timeout=TIMEOUT)
    return tenant_id


async def test_facts_live_as_long_as_the_tenant_says(peers, minter: Minter, backing) -> None:
    registry, memory = peers
    tenant_id = await _tenant(registry, minter, timedelta(days=7))
    alice = minter.mint_user(tenant_id, "alice@example.com")
    fact = await memory.Remember(pb.RememberRequest(text="My default Jira project is ENG.", kind="preference"),
                                 metadata=client.metadata(alice), timeout=TIMEOUT)
    conn = await asyncpg.connect(backing.admin_dsn)
    try:
        expire = await conn.fetchval("SELECT expire_time FROM memory.facts WHERE id = $1", uuid.UUID(fact.fact.id))
    finally:
        await conn.close()
    assert abs((expire - (datetime.now(UTC) + timedelta(days=7))).total_seconds()) < 120


async def test_forget_user_is_audited_in_the_registry(peers, minter: Minter) -> None:
    registry, memory = peers
    tenant_id = await _tenant(registry, minter, timedelta(days=30))
    alice = minter.mint_user(tenant_id, "alice@example.com")
    await memory.AppendTurn(pb.AppendTurnRequest(session_id="s1", turn={"role": "user", "text": "I'm on a ThinkPad."}),
                            metadata=client.metadata(alice), timeout=TIMEOUT)
    erased = await memory.ForgetUser(pb.ForgetUserRequest(), metadata=client.metadata(alice), timeout=TIMEOUT)
    assert (erased.sessions_deleted, erased.facts_deleted) == (1, 1)
    dpo = minter.mint_operator("dpo@example.com")
    await memory.ForgetUser(pb.ForgetUserRequest(user="bob@example.com", tenant_id=tenant_id),
                            metadata=client.metadata(dpo), timeout=TIMEOUT)
    rows = await registry.ListAuditEvents(registry_service_pb2.ListAuditEventsRequest(tenant_id=tenant_id),
                                          metadata=client.metadata(minter.mint_operator("auditor@example.com")),
                                          timeout=TIMEOUT)
    forgotten = {(e.user, e.acting_identity, e.request_id): dict(e.detail) for e in rows.events
                 if e.kind == "forget_user"}
    assert forgotten[("alice@example.com", "", alice.request_id)] == {
        "sessions_deleted": 1.0, "working_states_deleted": 0.0, "facts_deleted": 1.0}
    assert ("bob@example.com", "dpo@example.com", dpo.request_id) in forgotten
