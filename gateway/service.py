"""AgentService: authenticates callers from metadata, turns ConverseRequest into an Ask, streams the run's events."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from agentmesh.agent.v1 import agent_service_pb2 as pb
from agentmesh.agent.v1 import agent_service_pb2_grpc as pb_grpc
from gateway.auth import Authenticator, AuthError, Caller, Credentials
from gateway.conversation import Ask, Confirmation, Conversations
from gateway.runlog import RUNNING, RunLog
from mesh.errors import MeshError, Reason
from mesh.server import ServiceSpec

SERVICE_NAME = "agentmesh.agent.v1.AgentService"
DOMAIN = "agentmesh.gateway"
MAX_ID = 128
_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]+$")
Violations = list[tuple[str, str]]


def _id(field: str, value: str, *, required: bool) -> Violations:
    if not value:
        return [(field, "is required")] if required else []
    if len(value) > MAX_ID:
        return [(field, f"must be at most {MAX_ID} characters")]
    if not _ID.match(value):
        return [(field, "may hold letters, digits and . _ : @ / + = - only")]
    return []


def converse_validator(max_chars: int) -> Any:
    """The ConverseRequest check the mesh interceptor runs before the handler."""
    def validate(r: pb.ConverseRequest) -> Violations:
        out = _id("session_id", r.session_id, required=False) + _id("request_id", r.request_id, required=False)
        confirming = r.HasField("confirmation")
        if confirming and r.text.strip():
            out.append(("text", "send either a request text or a confirmation, not both"))
        elif confirming:
            out += _id("confirmation.run_id", r.confirmation.run_id, required=True)
            out += _id("confirmation.step_id", r.confirmation.step_id, required=True)
        elif not r.text.strip():
            out.append(("text", "the request text is required (or a confirmation)"))
        elif len(r.text) > max_chars:
            out.append(("text", f"must be at most {max_chars} characters"))
        elif any(ord(c) < 32 and c not in "\t\n\r" for c in r.text):
            out.append(("text", "must not contain control characters"))
        return out

    return validate


def validate_watch(r: pb.WatchRunRequest) -> Violations:
    out = _id("run_id", r.run_id, required=True)
    if r.after_sequence < 0:
        out.append(("after_sequence", "must not be negative"))
    return out


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


# How long a shed client is told to wait before trying again.
SHED_RETRY_AFTER_S = 1.0


class AgentServicer(pb_grpc.AgentServiceServicer):
    """The AgentService handlers."""

    def __init__(self, auth: Authenticator, conversations: Conversations, runlog: RunLog, *,
                 max_in_flight: int = 256) -> None:
        self.auth = auth
        self.conversations = conversations
        self.runlog = runlog
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.shed = 0

    def _admit(self) -> None:
        """Load shedding: past `max_in_flight` open Converse streams this gateway answers OVERLOADED at once, with
        a retry delay, instead of queueing work the shared cores cannot finish before its deadline."""
        if self.in_flight >= self.max_in_flight:
            self.shed += 1
            raise MeshError(Reason.OVERLOADED, f"the gateway is at its limit of {self.max_in_flight} requests in "
                            f"flight; retry after {SHED_RETRY_AFTER_S:.0f} s", domain=DOMAIN,
                            metadata={"max_in_flight": str(self.max_in_flight)}, retry_after_s=SHED_RETRY_AFTER_S)

    async def _caller(self, context: grpc.aio.ServicerContext) -> Caller:
        try:
            return await self.auth.authenticate(Credentials.of(_metadata(context)))
        except AuthError as err:
            if err.tenant:
                self.conversations.background(self.conversations.audit_refusal(err.tenant, err.user, err, "grpc"))
            raise

    async def Converse(self, request: pb.ConverseRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ConverseResponse]:
        started = time.perf_counter()
        self._admit()
        self.in_flight += 1
        try:
            caller = await self._caller(context)
            confirmation = None
            if request.HasField("confirmation"):
                c = request.confirmation
                confirmation = Confirmation(c.run_id, c.step_id, c.approved)
            stream = await self.conversations.converse(
                caller, Ask(request.text.strip(), request.session_id, request.request_id, confirmation),
                started=started, deadline_s=context.time_remaining())
            async for event in stream:
                yield event
            if stream.error is not None:
                raise stream.error
        finally:
            self.in_flight -= 1

    async def WatchRun(self, request: pb.WatchRunRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[pb.WatchRunResponse]:
        caller = await self._caller(context)
        meta = await self.runlog.meta(caller.tenant, request.run_id)
        if meta is None or meta.owner != caller.user:
            raise MeshError(Reason.NOT_FOUND, f"no run {request.run_id} of yours is known (runs are kept an hour)",
                            domain=DOMAIN, metadata={"run_id": request.run_id})
        seen = request.after_sequence
        if meta.state != RUNNING and seen >= meta.sequence:
            return
        async for sequence, data in self.runlog.follow(caller.tenant, request.run_id, seen):
            if sequence > 0:
                event = pb.ConverseResponse.FromString(data)
                seen = sequence
                yield pb.WatchRunResponse(event=event)
                kind = event.WhichOneof("event")
                if kind == "final":
                    return
                if kind != "approval_needed":
                    continue
            # Idle, or a pause: the watch ends once the run stopped moving (paused or ended) and all is seen.
            now = await self.runlog.meta(caller.tenant, request.run_id)
            if now is None or (now.state != RUNNING and seen >= now.sequence):
                return


def agent_spec(servicer: AgentServicer, max_request_chars: int) -> ServiceSpec:
    """The AgentService spec: not principal-authenticated (the gateway authenticates its callers itself)."""
    return ServiceSpec(SERVICE_NAME, servicer, pb_grpc.add_AgentServiceServicer_to_server,
                       validators={"Converse": converse_validator(max_request_chars), "WatchRun": validate_watch},
                       authenticated=False)
