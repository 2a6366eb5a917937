"""The ConnectorService every vendor connector serves: manifest, argument validation, dispatch, error mapping."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import jsonschema
from google.protobuf import json_format, struct_pb2

from agentmesh.common.v1 import common_pb2
from agentmesh.connector.v1 import connector_pb2, connector_service_pb2, connector_service_pb2_grpc
from mesh import principal as principal_mod
from mesh.errors import MeshError, Reason, invalid_argument
from mesh.server import ANY_KIND, ServiceSpec
from mesh.structs import whole_numbers

from . import vendorwait
from .http import VendorError, VendorUnavailable

log = logging.getLogger("agentmesh.connector")

SERVICE_NAME = "agentmesh.connector.v1.ConnectorService"
_DEADLINE_SLACK_S = 0.05


@dataclass
class CallContext:
    """Everything one action call knows: who, with which credential, on which instance, with which key."""

    action: str
    arguments: dict[str, Any]
    credential: connector_pb2.Credential
    instance: connector_pb2.InstanceSettings
    idempotency_key: str
    principal: principal_mod.Principal | None
    timeout_s: float


@dataclass
class ActionResult:
    """An action's result (matching its result schema), a one-line summary, and whether it was a replay."""

    result: dict[str, Any]
    summary: str
    replayed: bool = False


class Vendor(Protocol):
    """What a vendor package provides to the generic service."""

    manifest: dict[str, Any]  # {"connector", "version", "display_name", "actions": [...]}

    async def invoke(self, ctx: CallContext) -> ActionResult: ...

    async def close(self) -> None: ...


def manifest_proto(manifest: dict[str, Any]) -> connector_pb2.Manifest:
    out = connector_pb2.Manifest(connector=manifest["connector"], version=manifest["version"],
                                 display_name=manifest.get("display_name", manifest["connector"]))
    for action in manifest["actions"]:
        a = out.actions.add(name=action["name"], description=action["description"],
                            effect=common_pb2.Effect.Value(f"EFFECT_{action['effect']}"),
                            scopes=action.get("scopes", []), examples=action["examples"])
        a.arguments_schema.update(action["arguments_schema"])
        a.result_schema.update(action["result_schema"])
    return out


def _json_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        parts.append(missing)
    if error.validator == "additionalProperties" and "'" in error.message:
        parts.append(error.message.split("'")[1])
    return "arguments" + "".join(f".{p}" for p in parts if p)


def schema_violations(validator: jsonschema.Draft202012Validator, arguments: dict[str, Any]) -> list[tuple[str, str]]:
    """Field violations of arguments against an action's JSON Schema, one per problem, stable order."""
    errors = sorted(validator.iter_errors(arguments), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [(_json_path(e), e.message) for e in errors]


class ConnectorServicer(connector_service_pb2_grpc.ConnectorServiceServicer):
    """Translates ConnectorService protos to a Vendor's invoke() and its failures to statuses."""

    def __init__(self, vendor: Vendor) -> None:
        self.vendor = vendor
        self.domain = f"agentmesh.connector.{vendor.manifest['connector']}"
        self.actions = {a["name"]: a for a in vendor.manifest["actions"]}
        self.validators = {name: jsonschema.Draft202012Validator(a["arguments_schema"])
                           for name, a in self.actions.items()}
        self._manifest = manifest_proto(vendor.manifest)

    async def Describe(self, request: connector_service_pb2.DescribeRequest,
                       context: grpc.aio.ServicerContext) -> connector_service_pb2.DescribeResponse:
        return connector_service_pb2.DescribeResponse(manifest=self._manifest)

    def validate(self, request: connector_service_pb2.InvokeRequest) -> list[tuple[str, str]]:
        action = self.actions.get(request.action)
        if action is None:
            return [("action", f"unknown action {request.action!r}; this connector serves "
                               f"{', '.join(sorted(self.actions))}")]
        violations: list[tuple[str, str]] = []
        if not request.credential.token:
            violations.append(("credential.token", "a credential is required"))
        if action["effect"] == "WRITE" and not request.idempotency_key:
            violations.append(("idempotency_key", "WRITE actions require an idempotency key"))
        if len(request.idempotency_key) > 200:
            violations.append(("idempotency_key", "at most 200 characters"))
        arguments = json_format.MessageToDict(request.arguments)
        violations += schema_violations(self.validators[request.action], _with_defaults(action, arguments))
        return violations

    async def Invoke(self, request: connector_service_pb2.InvokeRequest,
                     context: grpc.aio.ServicerContext) -> connector_service_pb2.InvokeResponse:
        action = self.actions[request.action]
        arguments = _with_defaults(action, json_format.MessageToDict(request.arguments))
        arguments = whole_numbers(arguments)
        ctx = CallContext(request.action, arguments, request.credential, request.instance,
                          request.idempotency_key, _requester(principal_mod.current()),
                          context.time_remaining() or 10.0)
        with vendorwait.measuring() as waited:
            try:
                outcome = await self.vendor.invoke(ctx)
            except VendorUnavailable as err:
                remaining = context.time_remaining()
                if remaining is not None and remaining < _DEADLINE_SLACK_S:
                    # The vendor call was cut short by the caller's own deadline, not by the vendor.
                    await vendorwait.abort(context, MeshError(
                        Reason.DEADLINE, "the call's deadline ran out while the vendor was working",
                        domain=self.domain), waited.seconds)
                await vendorwait.abort(context, err.to_mesh(self.domain), waited.seconds)
            except VendorError as err:
                await vendorwait.abort(context, err.to_mesh(self.domain), waited.seconds)
            except MeshError as err:
                await vendorwait.abort(context, err, waited.seconds)
        result = struct_pb2.Struct()
        result.update(outcome.result)
        return connector_service_pb2.InvokeResponse(result=result, summary=outcome.summary,
                                                    replayed=outcome.replayed,
                                                    vendor_wait=vendorwait.duration(waited.seconds))


def _requester(p: principal_mod.Principal) -> principal_mod.Principal:
    """The user a call acts for: the user principal itself, or the user an operator replays for."""
    if p.kind != principal_mod.OPERATOR:
        return p
    if not p.on_behalf_of:
        raise MeshError(Reason.PRINCIPAL_INVALID, "an operator principal must name the user it acts for",
                        domain="agentmesh.connector")
    return dataclasses.replace(p, user=p.on_behalf_of, kind=principal_mod.USER)


def _with_defaults(action: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
    out = dict(arguments)
    for name, prop in action["arguments_schema"].get("properties", {}).items():
        if name not in out and "default" in prop:
            out[name] = prop["default"]
    return out




def connector_spec(vendor: Vendor) -> ServiceSpec:
    """The ServiceSpec to pass to mesh.server.serve for a vendor connector."""
    servicer = ConnectorServicer(vendor)
    return ServiceSpec(SERVICE_NAME, servicer, connector_service_pb2_grpc.add_ConnectorServiceServicer_to_server,
                       kinds={"Describe": ANY_KIND, "Invoke": ANY_KIND}, validators={"Invoke": servicer.validate})




__all__ = ["ActionResult", "CallContext", "ConnectorServicer", "MeshError", "Reason", "Vendor", "connector_spec",
           "invalid_argument", "schema_violations"]
