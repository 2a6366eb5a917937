"""The mesh runtime over real channels: health, reflection, principal checks, deadlines, validation, drain."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agentmesh.connector.v1 import connector_pb2, connector_service_pb2, connector_service_pb2_grpc
from connectors.common.server import create_connector_server
from connectors.common.service import ActionResult, CallContext
from mesh import client
from mesh.errors import details_of
from mesh.principal import KeyRing, Minter, Principal

SLOW_S = 0.5


class EchoVendor:
    """A vendor whose one action echoes its arguments (slowly when asked), to exercise the runtime."""

    manifest: dict[str, Any] = {
        "connector": "echo", "version": "1", "display_name": "Echo",
        "actions": [{
            "name": "echo", "description": "Echoes.", "effect": "WRITE", "scopes": [], "examples": ["a", "b", "c"],
            "arguments_schema": {"type": "object", "additionalProperties": False, "required": ["text"],
                                 "properties": {"text": {"type": "string", "maxLength": 10},
                                                "slow": {"type": "boolean", "default": False}}},
            "result_schema": {"type": "object"},
        }],
    }

    def __init__(self) -> None:
        self.calls = 0

    async def invoke(self, ctx: CallContext) -> ActionResult:
        self.calls += 1
        if ctx.arguments["slow"]:
            await asyncio.sleep(SLOW_S)
        return ActionResult({"text": ctx.arguments["text"], "user": ctx.principal.user if ctx.principal else ""},
                            "echoed")

    async def close(self) -> None:
        return None


@pytest.fixture
async def echo(mesh_config):
    vendor = EchoVendor()
    running = await create_connector_server(mesh_config, vendor)
    chan = client.channel(f"127.0.0.1:{running.port}")
    yield running, chan, vendor
    await chan.close()
    await running.stop(0)


def _invoke_request(text: str = "hi", slow: bool = False, key: str = "k1") -> connector_service_pb2.InvokeRequest:
    args = struct_pb2.Struct()
    args.update({"text": text, "slow": slow})
    return connector_service_pb2.InvokeRequest(
        action="echo", arguments=args, idempotency_key=key,
        credential=connector_pb2.Credential(kind=connector_pb2.CREDENTIAL_KIND_USER, token="secret", scheme="Bearer"))


async def test_health_and_reflection(echo) -> None:
    running, chan, _ = echo
    health = health_pb2_grpc.HealthStub(chan)
    resp = await health.Check(health_pb2.HealthCheckRequest(service="agentmesh.connector.v1.ConnectorService"))
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(chan)

    async def requests():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for answer in stub.ServerReflectionInfo(requests()):
        names = {s.name for s in answer.list_services_response.service}
        assert "agentmesh.connector.v1.ConnectorService" in names
        assert "grpc.health.v1.Health" in names


async def test_valid_principal_reaches_handler(echo, minter: Minter) -> None:
    _, chan, _ = echo
    p = minter.mint_user("acme", "alice.nguyen@acme.example", ["Everyone"])
    resp = await connector_service_pb2_grpc.ConnectorServiceStub(chan).Invoke(
        _invoke_request(), metadata=client.metadata(p), timeout=5)
    assert resp.result["user"] == "alice.nguyen@acme.example"


def _expired(minter: Minter) -> str:
    p = Principal("acme", "alice@acme.example", (), "r", "run", "user", time.time() - 5)
    return minter.mint(p)


def _tampered(minter: Minter) -> str:
    token = minter.mint_user("acme", "alice@acme.example").token
    head, body, sig = token.split(".")
    return f"{head}.{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}.{sig}"


@pytest.mark.parametrize("make_token", [
    pytest.param(lambda m, tmp: "", id="missing"),
    pytest.param(lambda m, tmp: _expired(m), id="expired"),
    pytest.param(lambda m, tmp: _tampered(m), id="tampered"),
    pytest.param(lambda m, tmp: Minter(KeyRing(tmp).ensure()).mint_user("acme", "a@acme.example").token,
                 id="unknown-key"),
    pytest.param(lambda m, tmp: m.mint_operator("ops@agentmesh").token, id="wrong-kind"),
    pytest.param(lambda m, tmp: "not-a-jwt", id="garbage"),
])
async def test_bad_principals_are_refused_before_the_handler(echo, minter, tmp_path, make_token) -> None:
    _, chan, vendor = echo
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await connector_service_pb2_grpc.ConnectorServiceStub(chan).Invoke(
            _invoke_request(), metadata=(("x-agentmesh-principal", make_token(minter, tmp_path)),), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert details_of(info.value).reason == "PRINCIPAL_INVALID"
    assert vendor.calls == 0


async def test_deadline_is_required(echo, minter) -> None:
    _, chan, vendor = echo
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await connector_service_pb2_grpc.ConnectorServiceStub(chan).Invoke(
            _invoke_request(), metadata=client.metadata(minter.mint_user("acme", "a@acme.example")))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(info.value).reason == "DEADLINE_REQUIRED"
    assert vendor.calls == 0


async def test_deadline_is_enforced(echo, minter) -> None:
    _, chan, _ = echo
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await connector_service_pb2_grpc.ConnectorServiceStub(chan).Invoke(
            _invoke_request(slow=True), metadata=client.metadata(minter.mint_user("acme", "a@acme.example")),
            timeout=SLOW_S / 5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_validation_answers_field_violations(echo, minter) -> None:
    _, chan, vendor = echo
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await connector_service_pb2_grpc.ConnectorServiceStub(chan).Invoke(
            _invoke_request(text="far too long for ten", key=""),
            metadata=client.metadata(minter.mint_user("acme", "a@acme.example")), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = details_of(info.value)
    assert details.reason == "VALIDATION_FAILED"
    fields = {f for f, _ in details.field_violations}
    assert fields == {"idempotency_key", "arguments.text"}
    assert vendor.calls == 0


async def test_shutdown_drains_in_flight_call_and_reports_not_serving(echo, minter) -> None:
    running, chan, _ = echo
    stub = connector_service_pb2_grpc.ConnectorServiceStub(chan)
    call = asyncio.ensure_future(stub.Invoke(_invoke_request(slow=True),
                                             metadata=client.metadata(minter.mint_user("acme", "a@acme.example")),
                                             timeout=5))
    await asyncio.sleep(SLOW_S / 5)
    stopping = asyncio.ensure_future(running.stop(5, notice_s=SLOW_S / 2))
    await asyncio.sleep(0.02)
    health = health_pb2_grpc.HealthStub(chan)
    status = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
    assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
    resp = await call
    assert resp.result["text"] == "hi"
    await stopping
