"""A real connector process that gets SIGTERM mid-call reports NOT_SERVING, finishes the call, then exits."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import aiohttp
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentmesh.connector.v1 import connector_pb2, connector_service_pb2, connector_service_pb2_grpc
from connectors.common.sandbox import start_sandboxes
from connectors.okta.sandbox import OktaSandbox
from mesh import client
from mesh.backing import free_port

VENDOR_DELAY_MS = 800


async def _listening(port: int, proc: asyncio.subprocess.Process) -> None:
    async with client.channel(f"127.0.0.1:{port}") as chan:
        for _ in range(200):
            assert proc.returncode is None, "the connector exited while starting"
            try:
                await health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                return
            except Exception:
                await asyncio.sleep(0.05)
    raise AssertionError("the connector did not start")


async def test_sigterm_lets_the_in_flight_call_finish(keyring, minter, tmp_path) -> None:
    sandbox = OktaSandbox()
    sandboxes = await start_sandboxes([sandbox])
    port = free_port()
    env = {**os.environ, "AGENTMESH_PORT": str(port), "AGENTMESH_JWKS_PATH": str(keyring.jwks_path),
           "AGENTMESH_STATE_DIR": str(tmp_path), "AGENTMESH_SHUTDOWN_NOTICE_S": "0.3"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "connectors.okta.server", env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        await _listening(port, proc)
        admin = sandboxes.admin_urls["okta"]
        async with aiohttp.ClientSession() as http, http.put(
                f"{admin}/__sandbox/faults", json={"latency": {"fixed_ms": VENDOR_DELAY_MS}}) as resp:
            resp.raise_for_status()
        token, _ = sandbox.tokens.issue("acme", "alice.nguyen@acme.example")
        args = struct_pb2.Struct()
        args.update({"user": "alice.nguyen@acme.example"})
        request = connector_service_pb2.InvokeRequest(
            action="get_user", arguments=args,
            credential=connector_pb2.Credential(kind=connector_pb2.CREDENTIAL_KIND_USER, token=token, scheme="Bearer"),
            instance=connector_pb2.InstanceSettings(base_url=sandboxes.base_urls["okta"]["acme"]))
        async with client.channel(f"127.0.0.1:{port}") as chan:
            call = asyncio.ensure_future(connector_service_pb2_grpc.ConnectorServiceStub(chan).Invoke(
                request, metadata=client.metadata(minter.mint_user("acme", "alice.nguyen@acme.example")),
                timeout=10))
            await asyncio.sleep(VENDOR_DELAY_MS / 4000)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.1)
            status = await health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(), timeout=1)
            assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
            response = await call
        assert response.result["email"] == "alice.nguyen@acme.example"
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await sandboxes.close()


@pytest.mark.parametrize("retire_old", [False, True])
def test_two_keys_are_valid_during_rotation(tmp_path, retire_old) -> None:
    from mesh.principal import KeyRing, Minter, PrincipalError, Verifier

    ring = KeyRing(tmp_path).ensure()
    old_kid = ring.current_kid()
    old = Minter(ring).mint_user("acme", "alice.nguyen@acme.example")
    ring.rotate()
    new = Minter(ring).mint_user("acme", "alice.nguyen@acme.example")
    verifier = Verifier(jwks_path=ring.jwks_path)
    assert verifier.verify(new.token).user == "alice.nguyen@acme.example"
    if not retire_old:
        assert verifier.verify(old.token).user == "alice.nguyen@acme.example"
        return
    ring.retire(old_kid)
    with pytest.raises(PrincipalError):
        Verifier(jwks_path=ring.jwks_path).verify(old.token)
