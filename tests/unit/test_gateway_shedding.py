"""Load shedding at the gateway: past max_in_flight open Converse streams, OVERLOADED at once with a retry delay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from agentmesh.agent.v1 import agent_service_pb2 as pb
from gateway.auth import Caller
from gateway.service import SHED_RETRY_AFTER_S, AgentServicer
from mesh.errors import MeshError, Reason


class _Auth:
    async def authenticate(self, creds: Any, channel: str = "grpc") -> Caller:
        return Caller("acme", "alice.nguyen@acme.example", "Alice Nguyen", ())


class _Stream:
    """A run whose events arrive when the test releases them."""

    def __init__(self, release: asyncio.Event) -> None:
        self.release = release
        self.error = None

    async def __aiter__(self) -> AsyncIterator[pb.ConverseResponse]:
        yield pb.ConverseResponse(sequence=1)
        await self.release.wait()
        yield pb.ConverseResponse(sequence=2)


class _Conversations:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0

    async def converse(self, caller: Caller, ask: Any, **_: Any) -> _Stream:
        self.started += 1
        return _Stream(self.release)

    def background(self, work: Any) -> None:
        work.close()


class _Context:
    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", "Bearer test"),)

    def time_remaining(self) -> float:
        return 5.0


async def _drain(servicer: AgentServicer) -> list[int]:
    return [e.sequence async for e in servicer.Converse(pb.ConverseRequest(text="who is my manager?"), _Context())]


async def test_requests_past_the_limit_are_shed_and_admitted_again_once_one_ends() -> None:
    conversations = _Conversations()
    servicer = AgentServicer(_Auth(), conversations, runlog=None, max_in_flight=2)  # type: ignore[arg-type]
    open_runs = [asyncio.create_task(_drain(servicer)) for _ in range(2)]
    for _ in range(10):  # let both streams reach their first event
        await asyncio.sleep(0)
    assert conversations.started == 2
    assert servicer.in_flight == 2
    with pytest.raises(MeshError) as shed:
        await _drain(servicer)
    assert shed.value.reason is Reason.OVERLOADED and shed.value.code is grpc.StatusCode.UNAVAILABLE
    assert shed.value.retry_after_s == SHED_RETRY_AFTER_S and shed.value.metadata["max_in_flight"] == "2"
    assert conversations.started == 2 and servicer.shed == 1  # refused before any work started
    conversations.release.set()
    assert await asyncio.gather(*open_runs) == [[1, 2], [1, 2]]
    assert servicer.in_flight == 0
    assert await _drain(servicer) == [1, 2]
