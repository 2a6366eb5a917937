"""An AgentService client (API key, end user) whose turn follows confirmations until the run ends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from agentmesh.agent.v1 import agent_service_pb2 as pb
from agentmesh.agent.v1 import agent_service_pb2_grpc as pb_grpc
from agentmesh.common.v1 import common_pb2
from mesh import client as mesh_client
from mesh.config import MeshConfig, read_endpoints
from mesh.errors import details_of

DEFAULT_TIMEOUT_S = 60.0
Confirm = Callable[[pb.ApprovalNeeded], Awaitable[bool]]


@dataclass
class Failure:
    """A Converse that ended in an error status (before or after events were sent)."""

    code: str
    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)
    retry_after_s: float | None = None

    @classmethod
    def of(cls, err: grpc.aio.AioRpcError) -> Failure:
        d = details_of(err)
        return cls(d.code.name, d.reason or d.code.name, d.message, d.metadata, d.retry_after_s)


@dataclass
class Turn:
    """Everything one turn produced: the events in order (confirmations included) and how it ended."""

    events: list[pb.ConverseResponse] = field(default_factory=list)
    failure: Failure | None = None

    @property
    def final(self) -> pb.Final | None:
        for event in reversed(self.events):
            if event.HasField("final"):
                return event.final
        return None


def gateway_target(endpoints: dict[str, Any], tenant: str) -> tuple[str, str]:
    """The gateway address and the tenant's API key from an endpoints file."""
    address = (endpoints.get("services") or {}).get("gateway")
    if not address:
        raise SystemExit("agentmesh: the endpoints file names no gateway; is the stack up (`agentmesh up`)?")
    key = (endpoints.get("api_keys") or {}).get(tenant)
    if not key:
        raise SystemExit(f"agentmesh: no API key for tenant {tenant!r} in the endpoints file; create one with "
                         f"`agentmesh keys create --tenant {tenant} --assert-users`")
    return str(address), str(key)


def load_endpoints(path: str | None) -> dict[str, Any]:
    """The endpoints file at `path`, or the state directory's (`agentmesh up` writes it)."""
    if path:
        data: dict[str, Any] = json.loads(Path(path).read_text())
        return data
    return read_endpoints(MeshConfig().state_dir)


class AgentClient:
    """One channel to the gateway; each call carries the API key and the end user."""

    def __init__(self, address: str, api_key: str) -> None:
        self.channel = mesh_client.channel(address)
        self.stub = pb_grpc.AgentServiceStub(self.channel)
        self.api_key = api_key

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def metadata(self, user: str = "", user_token: str = "") -> tuple[tuple[str, str], ...]:
        out = [("authorization", f"Bearer {self.api_key}")]
        if user_token:
            out.append(("x-agentmesh-user-token", user_token))
        elif user:
            out.append(("x-agentmesh-user", user))
        return tuple(out)

    def converse(self, request: pb.ConverseRequest, *, user: str = "", user_token: str = "",
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
        """The raw server stream (an aio call: iterate it; `.cancel()` ends it)."""
        return self.stub.Converse(request, metadata=self.metadata(user, user_token), timeout=timeout_s)

    def watch(self, run_id: str, after_sequence: int = 0, *, user: str = "", user_token: str = "",
              timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
        return self.stub.WatchRun(pb.WatchRunRequest(run_id=run_id, after_sequence=after_sequence),
                                  metadata=self.metadata(user, user_token), timeout=timeout_s)

    async def turn(self, text: str, *, user: str = "", user_token: str = "", session_id: str = "",
                   confirm: Confirm | None = None, on_event: Callable[[pb.ConverseResponse], None] | None = None,
                   timeout_s: float = DEFAULT_TIMEOUT_S) -> Turn:
        """Sends a request and answers each confirmation it asks for (declines without `confirm`)."""
        turn = Turn()
        request = pb.ConverseRequest(text=text, session_id=session_id)
        while True:
            pending: pb.ApprovalNeeded | None = None
            try:
                async for event in self._events(request, user, user_token, timeout_s):
                    turn.events.append(event)
                    if on_event is not None:
                        on_event(event)
                    if event.HasField("accepted"):
                        session_id = event.accepted.session_id
                    if event.HasField("approval_needed"):
                        pending = event.approval_needed
            except grpc.aio.AioRpcError as err:
                turn.failure = Failure.of(err)
                return turn
            if pending is None:
                return turn
            approved = await confirm(pending) if confirm is not None else False
            request = pb.ConverseRequest(session_id=session_id, confirmation=pb.Confirmation(
                run_id=pending.run_id, step_id=pending.step_id, approved=approved))

    async def _events(self, request: pb.ConverseRequest, user: str, user_token: str,
                      timeout_s: float) -> AsyncIterator[pb.ConverseResponse]:
        call = self.converse(request, user=user, user_token=user_token, timeout_s=timeout_s)
        async for event in call:
            yield event


def outcome_name(outcome: int) -> str:
    return common_pb2.Outcome.Name(outcome).removeprefix("OUTCOME_").lower() if outcome else "failed"
