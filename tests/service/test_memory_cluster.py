"""The same memory code on a real three-node Redis Cluster: hash-tagged keys keep every script and transaction of a
tenant in one slot, so sessions, atomic working state and ForgetUser work across tenants on different nodes."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from google.protobuf import struct_pb2
from redis.crc import key_slot

from agentmesh.memory.v1 import memory_service_pb2 as pb
from agentmesh.memory.v1 import memory_service_pb2_grpc
from memory import keys
from memory.config import MemoryConfig
from memory.server import create_memory_server
from mesh import client
from mesh.principal import Minter

TIMEOUT = 30.0


def _cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free too."""
    for _ in range(200):
        port = random.randint(20000, 55000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _start_cluster(folder: Path) -> tuple[list[int], list[subprocess.Popen[bytes]]]:
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        pytest.skip("redis-server and redis-cli are needed for a cluster")
    ports = [_cluster_port() for _ in range(3)]
    procs = []
    for port in ports:
        node = folder / str(port)
        node.mkdir(parents=True)
        procs.append(subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node),
                                       "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                       "--save", "", "--appendonly", "no", "--daemonize", "no"],
                                      stdout=subprocess.DEVNULL))
    deadline = time.monotonic() + 60
    for port in ports:
        while subprocess.run([cli, "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
            if time.monotonic() > deadline:
                raise RuntimeError("redis cluster nodes did not start")
            time.sleep(0.05)
    subprocess.run([cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports], "--cluster-replicas", "0",
                    "--cluster-yes"], check=True, capture_output=True, timeout=60)
    deadline = time.monotonic() + 60
    while b"cluster_state:ok" not in subprocess.run([cli, "-p", str(ports[0]), "cluster", "info"],
                                                    capture_output=True).stdout:
        if time.monotonic() > deadline:
            raise RuntimeError("redis cluster did not become ready")
        time.sleep(0.1)
    return ports, procs


@pytest.fixture(scope="module")
async def cluster_memory(backing, mesh_config, tmp_path_factory: pytest.TempPathFactory):
    ports, procs = _start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        running = await create_memory_server(MemoryConfig(
            state_dir=mesh_config.state_dir, jwks_path=mesh_config.jwks_path, port=0, redis_cluster=True,
            redis_url=f"redis://127.0.0.1:{ports[0]}/0", database_url=backing.app_dsn,
            database_admin_url=backing.admin_dsn, purge_interval_s=0))
        chan = client.channel(f"127.0.0.1:{running.port}")
        yield memory_service_pb2_grpc.MemoryServiceStub(chan), ports
        await chan.close()
        await running.stop(0)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


async def test_every_operation_works_on_a_cluster_for_tenants_on_different_nodes(cluster_memory,
                                                                                   minter: Minter) -> None:
    stub, _ = cluster_memory
    # Tenants whose slots fall in each third of the slot space, i.e. on each of the three nodes.
    tenants: list[str] = []
    thirds: dict[int, int] = {}
    while len(tenants) < 6:
        tenant = "c" + uuid.uuid4().hex[:10]
        third = key_slot(keys.session_key(tenant, "alice@example.com", "s1").encode()) * 3 // 16384
        if thirds.get(third, 0) < 2:
            thirds[third] = thirds.get(third, 0) + 1
            tenants.append(tenant)
        # Every key of a tenant shares its slot, whatever the user, session or run.
        same = (keys.session_key(tenant, "a@x", "s"), keys.run_key(tenant, "b@x", "r"),
                keys.user_index_key(tenant, "c@x"))
        assert len({key_slot(k.encode()) for k in same}) == 1

    async def exercise(tenant: str) -> None:
        alice = minter.mint_user(tenant, "alice@example.com")
        md = client.metadata(alice)
        await stub.AppendTurn(pb.AppendTurnRequest(session_id="s1", turn={"role": "user", "text": "I'm on a Mac."}),
                              metadata=md, timeout=TIMEOUT)
        values = [struct_pb2.Struct() for _ in range(10)]
        for i, value in enumerate(values):
            value.update({f"s{i}": "ok"})
        await asyncio.gather(*[stub.UpdateWorkingState(pb.UpdateWorkingStateRequest(run_id="r1", values=v),
                                                       metadata=md, timeout=TIMEOUT) for v in values])
        state = await stub.GetWorkingState(pb.GetWorkingStateRequest(run_id="r1"), metadata=md, timeout=TIMEOUT)
        assert state.version == 10 and len(state.state.fields) == 10
        turns = await stub.ListTurns(pb.ListTurnsRequest(session_id="s1"), metadata=md, timeout=TIMEOUT)
        assert [t.text for t in turns.turns] == ["I'm on a Mac."]
        erased = await stub.ForgetUser(pb.ForgetUserRequest(), metadata=md, timeout=TIMEOUT)
        assert (erased.sessions_deleted, erased.working_states_deleted, erased.facts_deleted) == (1, 1, 1)

    await asyncio.gather(*[exercise(t) for t in tenants])
