"""`agentmesh bench registry`: ListTools and Invoke latency through a registry process it starts, vs. the connector."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from google.protobuf import struct_pb2

from agentmesh.connector.v1 import connector_pb2, connector_service_pb2, connector_service_pb2_grpc
from agentmesh.registry.v1 import registry_service_pb2, registry_service_pb2_grpc
from connectors.common.sandbox import sandbox_classes, start_sandboxes
from connectors.common.server import create_connector_server
from connectors.registry.seed import seed_demo
from mesh import client
from mesh.backing import free_port, start_backing
from mesh.config import MeshConfig
from mesh.principal import KeyRing, Minter

ALICE = "alice.nguyen@acme.example"
GROUPS = ("Everyone", "Engineering", "VPN-Users", "Jira-Users")


def _vendors() -> dict[str, Any]:
    from connectors.jira.vendor import JiraVendor
    from connectors.okta.vendor import OktaVendor
    from connectors.salesforce.vendor import SalesforceVendor
    from connectors.servicenow.vendor import ServiceNowVendor

    return {"okta": OktaVendor(), "servicenow": ServiceNowVendor(), "jira": JiraVendor(),
            "salesforce": SalesforceVendor()}


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


async def _timed(n: int, call: Callable[[int], Awaitable[Any]]) -> list[float]:
    samples: list[float] = []
    for i in range(n):
        started = time.perf_counter()
        await call(i)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def _concurrently(n: int, concurrency: int, call: Callable[[int], Awaitable[Any]]) -> tuple[list[float], float]:
    samples: list[float] = []

    async def worker() -> None:
        samples.extend(await _timed(max(n // concurrency, 1) * 4, call))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, len(samples) / (time.perf_counter() - started)


async def _start_registry(root: Path, keyring: KeyRing, app_dsn: str,
                          admin_dsn: str) -> tuple[asyncio.subprocess.Process, str]:
    """The registry in its own process, as `agentmesh up` runs it (the bench process hosts the connectors)."""
    port = free_port()
    env = {**os.environ, "AGENTMESH_PORT": str(port), "AGENTMESH_DATABASE_URL": app_dsn,
           "AGENTMESH_DATABASE_ADMIN_URL": admin_dsn, "AGENTMESH_JWKS_PATH": str(keyring.jwks_path),
           "AGENTMESH_STATE_DIR": str(root), "AGENTMESH_SIGNING_KEYS_DIR": str(keyring.folder),
           "AGENTMESH_WATCH_INTERVAL_S": "3600", "AGENTMESH_LOG_LEVEL": "WARNING"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "connectors.registry.server", env=env,
                                                stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        while b"AGENTMESH_LISTENING" not in await proc.stdout.readline():
            if proc.returncode is not None:
                raise RuntimeError("the registry exited while starting")
    return proc, f"127.0.0.1:{port}"


def _row(name: str, samples: list[float]) -> str:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return (f"{name:<44} n={len(samples):<5} p50 {cuts[49]:7.2f} ms  p95 {cuts[94]:7.2f} ms  "
            f"p99 {cuts[98]:7.2f} ms  mean {statistics.fmean(samples):7.2f} ms")


async def run(n: int, concurrency: int) -> list[str]:
    """Starts PostgreSQL, the sandboxes, the connectors and a registry; measures; stops everything."""
    root = Path(tempfile.mkdtemp(prefix="agentmesh-bench-registry-"))
    backing = start_backing(root / "backing")
    keyring = KeyRing(root / "keys").ensure()
    minter = Minter(keyring)
    sandboxes = await start_sandboxes([cls() for cls in sandbox_classes().values()])
    vendors = _vendors()
    mesh = MeshConfig(state_dir=root, jwks_path=keyring.jwks_path, port=0)
    connectors = {name: await create_connector_server(mesh, vendor) for name, vendor in vendors.items()}
    registry, address = await _start_registry(root, keyring, backing.app_dsn, backing.admin_dsn)
    endpoints: dict[str, Any] = {"services": {"registry": address,
                                              **{f"connector-{k}": f"127.0.0.1:{r.port}"
                                                 for k, r in connectors.items()}},
                                 "sandboxes": sandboxes.base_urls, "sandbox_admin": sandboxes.admin_urls}
    lines: list[str] = []
    try:
        await seed_demo(endpoints, minter)
        async with client.channel(endpoints["services"]["registry"]) as chan, \
                client.channel(endpoints["services"]["connector-okta"]) as okta_chan, \
                aiohttp.ClientSession() as http:
            stub = registry_service_pb2_grpc.RegistryServiceStub(chan)
            okta = connector_service_pb2_grpc.ConnectorServiceStub(okta_chan)
            async with http.post(f"{sandboxes.base_urls['okta']['acme']}/__sandbox/tokens",
                                 json={"tenant": "acme", "user": ALICE}) as resp:
                token = (await resp.json())["access_token"]

            def who() -> Any:
                return client.metadata(minter.mint_user("acme", ALICE, GROUPS))

            async def invoke(tool: str, args: dict[str, Any], key: str = "") -> Any:
                request = registry_service_pb2.InvokeRequest(tool=tool, arguments=_struct(args), idempotency_key=key)
                try:
                    return await stub.Invoke(request, metadata=who(), timeout=5)
                except grpc.aio.AioRpcError as err:
                    return err

            for _ in range(20):  # warm channels, pools and caches
                await invoke("okta.get_user", {"user": "me"})
            lines.append(_row("ListTools", await _timed(n, lambda i: stub.ListTools(
                registry_service_pb2.ListToolsRequest(), metadata=who(), timeout=5))))
            direct = await _timed(n, lambda i: okta.Invoke(connector_service_pb2.InvokeRequest(
                action="get_user", arguments=_struct({"user": ALICE}),
                credential=connector_pb2.Credential(kind=connector_pb2.CREDENTIAL_KIND_USER, token=token,
                                                    scheme="Bearer"),
                instance=connector_pb2.InstanceSettings(base_url=sandboxes.base_urls["okta"]["acme"])),
                metadata=who(), timeout=5))
            through = await _timed(n, lambda i: invoke("okta.get_user", {"user": "me"}))
            lines.append(_row("okta.get_user, connector called directly", direct))
            lines.append(_row("okta.get_user through registry.Invoke", through))
            lines.append(f"{'registry share of an Invoke (p50 difference)':<44} "
                         f"{statistics.median(through) - statistics.median(direct):7.2f} ms")
            lines.append(_row("Invoke denied by policy (no connector call)", await _timed(
                n, lambda i: invoke("okta.reset_password", {"user": "bob.smith@acme.example"}))))
            lines.append(_row("Invoke WRITE servicenow.create_incident", await _timed(
                n, lambda i: invoke("servicenow.create_incident", {"short_description": f"bench {i}"},
                                    uuid.uuid4().hex))))
            key = uuid.uuid4().hex
            await invoke("servicenow.create_incident", {"short_description": "bench replay"}, key)
            lines.append(_row("Invoke WRITE replayed from the idempotency record", await _timed(
                n, lambda i: invoke("servicenow.create_incident", {"short_description": "bench replay"}, key))))
            for label, call in (
                    ("ListTools", lambda i: stub.ListTools(registry_service_pb2.ListToolsRequest(), metadata=who(),
                                                           timeout=5)),
                    ("Invoke denied by policy", lambda i: invoke("okta.reset_password",
                                                                 {"user": "bob.smith@acme.example"})),
                    ("okta.get_user through registry.Invoke", lambda i: invoke("okta.get_user", {"user": "me"}))):
                samples, rate = await _concurrently(n, concurrency, call)
                lines.append(_row(f"{label}, {concurrency} callers", samples))
                lines.append(f"{'  throughput':<44} {rate:7.0f} calls/s")
    finally:
        registry.terminate()
        await registry.wait()
        for running in connectors.values():
            await running.stop(0)
        for vendor in vendors.values():
            await vendor.close()
        await sandboxes.close()
        backing.stop()
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=300, help="calls per measurement")
    parser.add_argument("--concurrency", type=int, default=50)


async def command(args: argparse.Namespace) -> int:
    for line in await run(args.n, args.concurrency):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    raise SystemExit(asyncio.run(command(parser.parse_args())))
