"""The connector conformance kit: checks that any ConnectorService server behaves as agentmesh expects."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jsonschema
from google.protobuf import json_format, struct_pb2

from agentmesh.connector.v1 import connector_pb2, connector_service_pb2, connector_service_pb2_grpc
from mesh import client
from mesh.errors import details_of
from mesh.principal import Minter

CALL_TIMEOUT_S = 10.0


@dataclass
class Profile:
    """What the kit needs to exercise a connector: where its vendor is, a user's credential and sample calls.

    `read` and `write` are {"action": name, "arguments": {...}}: a READ that succeeds for the user, and a WRITE
    that succeeds once and creates or changes something (it is called twice with one idempotency key).
    `tenant` and `user` name the principal the kit mints (the target must trust the kit's JWKS).
    """

    tenant: str
    user: str
    instance: dict[str, Any]
    credential: dict[str, Any]
    read: dict[str, Any]
    write: dict[str, Any]
    groups: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Profile:
        return cls(**json.loads(path.read_text()))


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str = ""


class Conformance:
    """Runs every check against one target; each check returns what it saw."""

    def __init__(self, target: str, profile: Profile, minter: Minter) -> None:
        self.target = target
        self.profile = profile
        self.minter = minter
        self.manifest: connector_pb2.Manifest | None = None

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        p = self.minter.mint_user(self.profile.tenant, self.profile.user, self.profile.groups)
        return client.metadata(p)

    def _request(self, action: str, arguments: dict[str, Any], key: str = "",
                 credential: dict[str, Any] | None = None) -> connector_service_pb2.InvokeRequest:
        args = struct_pb2.Struct()
        args.update(arguments)
        cred = connector_pb2.Credential()
        json_format.ParseDict(self.profile.credential if credential is None else credential, cred)
        inst = connector_pb2.InstanceSettings()
        json_format.ParseDict(self.profile.instance, inst)
        return connector_service_pb2.InvokeRequest(action=action, arguments=args, idempotency_key=key,
                                                   credential=cred, instance=inst)

    async def run(self) -> list[CheckResult]:
        checks: list[tuple[str, Callable[[connector_service_pb2_grpc.ConnectorServiceStub], Awaitable[str]]]] = [
            ("describe returns a manifest with valid JSON Schemas and >= 3 examples per action", self.check_describe),
            ("every action rejects bad arguments with INVALID_ARGUMENT and field violations", self.check_bad_arguments),
            ("a call without a credential is refused", self.check_no_credential),
            ("a call without a principal is refused with UNAUTHENTICATED", self.check_no_principal),
            ("a rejected vendor token maps to UNAUTHENTICATED", self.check_vendor_unauthenticated),
            ("a READ succeeds and its result matches the result schema", self.check_read),
            ("a WRITE repeated with one idempotency key has one effect", self.check_idempotent_write),
            ("a deadline shorter than the work is honoured (DEADLINE_EXCEEDED, not a hang)", self.check_deadline),
        ]
        results: list[CheckResult] = []
        async with client.channel(self.target) as chan:
            stub = connector_service_pb2_grpc.ConnectorServiceStub(chan)
            for name, check in checks:
                try:
                    results.append(CheckResult(name, True, await check(stub)))
                except AssertionError as err:
                    results.append(CheckResult(name, False, str(err)))
                except grpc.aio.AioRpcError as err:
                    results.append(CheckResult(name, False, f"{err.code().name}: {err.details()}"))
        return results

    async def _describe(self, stub: connector_service_pb2_grpc.ConnectorServiceStub) -> connector_pb2.Manifest:
        if self.manifest is None:
            resp = await stub.Describe(connector_service_pb2.DescribeRequest(), metadata=self._metadata(),
                                       timeout=CALL_TIMEOUT_S)
            self.manifest = resp.manifest
        return self.manifest

    def _action(self, name: str) -> connector_pb2.Action:
        assert self.manifest is not None
        for action in self.manifest.actions:
            if action.name == name:
                return action
        raise AssertionError(f"the manifest has no action {name!r}")

    async def check_describe(self, stub: connector_service_pb2_grpc.ConnectorServiceStub) -> str:
        manifest = await self._describe(stub)
        assert manifest.connector and manifest.version, "connector and version are required"
        assert manifest.actions, "the manifest lists no actions"
        for action in manifest.actions:
            for which in ("arguments_schema", "result_schema"):
                schema = json_format.MessageToDict(getattr(action, which))
                try:
                    jsonschema.Draft202012Validator.check_schema(schema)
                except jsonschema.SchemaError as err:
                    raise AssertionError(f"{action.name}.{which}: {err.message}") from None
                assert schema.get("type") == "object", f"{action.name}.{which} must describe an object"
            assert action.effect in (1, 2), f"{action.name}: effect must be READ or WRITE"
            assert len(action.examples) >= 3, f"{action.name}: {len(action.examples)} examples (need >= 3)"
        return f"{len(manifest.actions)} actions"

    async def check_bad_arguments(self, stub: connector_service_pb2_grpc.ConnectorServiceStub) -> str:
        manifest = await self._describe(stub)
        cases = 0
        for action in manifest.actions:
            schema = json_format.MessageToDict(action.arguments_schema)
            for bad in _bad_arguments(schema):
                key = f"conformance-{uuid.uuid4().hex}"
                try:
                    await stub.Invoke(self._request(action.name, bad, key), metadata=self._metadata(),
                                      timeout=CALL_TIMEOUT_S)
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (
                        f"{action.name}({bad}) answered {err.code().name}, not INVALID_ARGUMENT")
                    assert details_of(err).field_violations, f"{action.name}({bad}): no field violations"
                    cases += 1
                    continue
                raise AssertionError(f"{action.name} accepted bad arguments {bad}")
        return f"{cases} bad calls refused"

    async def check_no_credential(self, stub: connector_service_pb2_grpc.ConnectorServiceStub) -> str:
        read = self.profile.read
        try:
            await stub.Invoke(self._request(read["action"], read["arguments"], credential={}),
                              metadata=self._metadata(), timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED), err.code().name
            return err.code().name
        raise AssertionError("a call without a credential succeeded")

    async def check_no_principal(self, stub: connector_service_pb2_grpc.ConnectorServiceStub) -> str:
        read = self.profile.read
        try:
            await stub.Invoke(self._request(read["action"], read["arguments"]), timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err.code().name
            return err.code().name
        raise AssertionError("a call without a principal succeeded")

    async def check_vendor_unauthenticated(self, stub: connector_service_pb2_grpc.ConnectorServiceStub) -> str:
        read = self.profile.read
        forged = {**self.profile.credential, "token": "conformance-" + uuid.uuid4().hex}
        try:
            await stub.Invoke(self._request(read["action"], read["arguments"], credential=forged),
                              metadata=self._metadata(), timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED, f"{err.code().name}: {err.details()}"
            return details_of(err).reason
        raise AssertionError("a forged vendor token was accepted")

    async def check_read(self, stub: connector_service_pb2_grpc.ConnectorServiceStub) -> str:
        await self._describe(stub)
        read = self.profile.read
        resp = await stub.Invoke(self._request(read["action"], read["arguments"]), metadata=self._metadata(),
                                 timeout=CALL_TIMEOUT_S)
        result = json_format.MessageToDict(resp.result)
        schema = json_format.MessageToDict(self._action(read["action"]).result_schema)
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(_numbers(result, schema)))
        assert not errors, f"result does not match its schema: {errors[0].message}"
        assert resp.summary, "a result needs a one-line summary"
        return resp.summary

    async def check_idempotent_write(self, stub: connector_service_pb2_grpc.ConnectorServiceStub) -> str:
        write = self.profile.write
        key = f"conformance-{uuid.uuid4().hex}"
        first = await stub.Invoke(self._request(write["action"], write["arguments"], key),
                                  metadata=self._metadata(), timeout=CALL_TIMEOUT_S)
        second = await stub.Invoke(self._request(write["action"], write["arguments"], key),
                                   metadata=self._metadata(), timeout=CALL_TIMEOUT_S)
        assert not first.replayed, "the first call claims to be a replay"
        assert second.replayed, "the repeated call was not answered from the first result"
        assert json_format.MessageToDict(first.result) == json_format.MessageToDict(second.result), (
            "the repeated call returned a different result")
        return first.summary

    async def check_deadline(self, stub: connector_service_pb2_grpc.ConnectorServiceStub) -> str:
        read = self.profile.read
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await stub.Invoke(self._request(read["action"], read["arguments"]), metadata=self._metadata(),
                              timeout=0.001)
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err.code().name
            return f"answered in {1000 * (loop.time() - started):.0f} ms"
        return "completed within 1 ms"


def _bad_arguments(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Argument sets that violate a schema: an unknown field, a missing required field, a wrongly typed field."""
    props: dict[str, Any] = schema.get("properties", {})
    valid = {name: _sample(prop) for name, prop in props.items() if name in schema.get("required", [])}
    cases: list[dict[str, Any]] = [{**valid, "conformance_unknown_field": 1}]
    for name in schema.get("required", []):
        missing = copy.deepcopy(valid)
        missing.pop(name, None)
        cases.append(missing)
        break
    for name, prop in props.items():
        wrong: Any = {"nested": True} if prop.get("type") != "object" else "not an object"
        cases.append({**valid, name: wrong})
        break
    return cases


def _sample(prop: dict[str, Any]) -> Any:
    if "enum" in prop:
        return prop["enum"][0]
    kind = prop.get("type")
    if isinstance(kind, list):
        kind = kind[0]
    return {"integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}.get(kind or "", "x")


def _numbers(value: Any, schema: dict[str, Any]) -> Any:
    """Struct carries every number as a double; whole numbers are compared as integers."""
    if isinstance(value, dict):
        return {k: _numbers(v, schema) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v, schema) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
