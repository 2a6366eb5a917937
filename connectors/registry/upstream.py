"""gRPC calls from the registry to connectors: Describe (manifests), health, and Invoke with the call context."""

from __future__ import annotations

import time
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentmesh.common.v1 import common_pb2
from agentmesh.connector.v1 import connector_pb2, connector_service_pb2, connector_service_pb2_grpc
from connectors.common import vendorwait
from connectors.registry.invoke import ConnectorAnswer, ConnectorCall
from connectors.registry.registrations import Instance
from mesh import client
from mesh.errors import MeshError, Reason, details_of, from_details
from mesh.principal import METADATA_KEY
from mesh.structs import whole_numbers

CONNECTOR_SERVICE = "agentmesh.connector.v1.ConnectorService"
DOMAIN = "agentmesh.registry"


def manifest_dict(manifest: connector_pb2.Manifest) -> dict[str, Any]:
    """A Manifest proto as the registry stores it: effects as READ/WRITE, whole numbers as ints."""
    out: dict[str, Any] = {"connector": manifest.connector, "version": manifest.version,
                           "display_name": manifest.display_name, "actions": []}
    for action in manifest.actions:
        out["actions"].append({
            "name": action.name, "description": action.description,
            "effect": common_pb2.Effect.Name(action.effect).removeprefix("EFFECT_"),
            "arguments_schema": whole_numbers(json_format.MessageToDict(action.arguments_schema)),
            "result_schema": whole_numbers(json_format.MessageToDict(action.result_schema)),
            "scopes": list(action.scopes), "examples": list(action.examples)})
    return out


def instance_proto(instance: Instance) -> connector_pb2.InstanceSettings:
    return connector_pb2.InstanceSettings(base_url=instance.base_url, cloud_id=instance.cloud_id,
                                          instance_url=instance.instance_url, api_version=instance.api_version,
                                          extra=instance.extra)


def _metadata(token: str, request_id: str = "") -> tuple[tuple[str, str], ...]:
    meta = ((METADATA_KEY, token),)
    return (*meta, ("x-request-id", request_id)) if request_id else meta


class Upstream:
    """One channel per connector endpoint; every call states its timeout."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, endpoint: str) -> grpc.aio.Channel:
        chan = self._channels.get(endpoint)
        if chan is None:
            chan = self._channels[endpoint] = client.channel(endpoint)
        return chan

    async def describe(self, endpoint: str, token: str, timeout_s: float) -> dict[str, Any]:
        stub = connector_service_pb2_grpc.ConnectorServiceStub(self.channel(endpoint))
        try:
            answer = await stub.Describe(connector_service_pb2.DescribeRequest(), metadata=_metadata(token),
                                         timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            details = details_of(err)
            raise MeshError(Reason.UPSTREAM_UNAVAILABLE,
                            f"Describe at {endpoint} failed: {details.code.name} {details.message}", domain=DOMAIN,
                            metadata={"endpoint": endpoint, "code": details.code.name}) from None
        return manifest_dict(answer.manifest)

    async def healthy(self, endpoint: str, timeout_s: float) -> bool:
        stub = health_pb2_grpc.HealthStub(self.channel(endpoint))
        try:
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=CONNECTOR_SERVICE), timeout=timeout_s)
        except grpc.aio.AioRpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    async def invoke(self, call: ConnectorCall) -> ConnectorAnswer:
        arguments = struct_pb2.Struct()
        arguments.update(dict(call.arguments))
        kind = (connector_pb2.CREDENTIAL_KIND_SERVICE if call.credential.kind == "service"
                else connector_pb2.CREDENTIAL_KIND_USER)
        request = connector_service_pb2.InvokeRequest(
            action=call.action, arguments=arguments, idempotency_key=call.idempotency_key,
            credential=connector_pb2.Credential(kind=kind, token=call.credential.token,
                                                scheme=call.credential.scheme,
                                                service_identity=call.credential.service_identity),
            instance=instance_proto(call.registration.instance))
        stub = connector_service_pb2_grpc.ConnectorServiceStub(self.channel(call.registration.endpoint))
        began = time.perf_counter()
        try:
            answer = await stub.Invoke(request, metadata=_metadata(call.principal_token), timeout=call.timeout_s)
        except grpc.aio.AioRpcError as err:
            _count_vendor_wait(vendorwait.from_metadata(err.trailing_metadata()), began)
            raise from_details(details_of(err)) from None
        _count_vendor_wait(vendorwait.seconds_of(answer.vendor_wait), began)
        return ConnectorAnswer(whole_numbers(json_format.MessageToDict(answer.result)), answer.summary,
                               answer.replayed)

    async def close(self) -> None:
        for chan in self._channels.values():
            await chan.close()
        self._channels.clear()


def _count_vendor_wait(reported: float | None, began: float) -> None:
    """Adds a connector call's vendor wait to the Invoke's: as the connector reported it, or, when it reported none
    (zero or absent: a connector that does not measure), the whole connector call."""
    vendorwait.add(reported if reported else time.perf_counter() - began)
