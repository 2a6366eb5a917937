"""The executor's side effects, each behind one narrow port taking one typed input (Temporal's activity split)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from mesh.principal import Principal

from .model import Effect, Plan, Run, StepError, StepState


class ToolFailure(Exception):
    """A call through a port failed; `error` is what the refusing service reported, `vendor_wait_s` the time the
    failed tool call spent awaiting the vendor, when the registry reported it."""

    def __init__(self, error: StepError, vendor_wait_s: float | None = None) -> None:
        super().__init__(f"{error.code} {error.reason}: {error.message}")
        self.error = error
        self.vendor_wait_s = vendor_wait_s


class LeaseLost(Exception):
    """Another executor took the run over; this one must stop touching it."""


@dataclass(frozen=True)
class ToolInfo:
    """What the registry says of a tool for this user: its side effect, and whether the tenant wants a confirmation."""

    effect: Effect
    confirm_before: bool


@dataclass(frozen=True)
class ToolCall:
    """One tool call as the user: the idempotency key is set for WRITEs; timeout_s is what is left of the budget."""

    principal: Principal
    tool: str
    arguments: dict[str, Any]
    idempotency_key: str
    timeout_s: float


@dataclass(frozen=True)
class ToolReply:
    """A tool's result; `arguments` are the arguments as called (persons resolved to emails), when known;
    `vendor_wait_s` is the time the call spent awaiting the vendor, when the registry reported it."""

    result: dict[str, Any]
    summary: str
    replayed: bool = False
    arguments: dict[str, Any] | None = None
    vendor_wait_s: float | None = None


@dataclass(frozen=True)
class CatalogQuery:
    principal: Principal
    timeout_s: float


@dataclass(frozen=True)
class ReplanRequest:
    """What a planner needs to revise a plan: the request, the plan so far and every step's result so far."""

    principal: Principal
    request: str
    previous_plan: Plan
    observations: tuple[StepState, ...]
    timeout_s: float
    context: object = None  # what memory assembled for the first plan, passed through untouched


@dataclass(frozen=True)
class StepOutput:
    principal: Principal
    run_id: str
    step_id: str
    output: dict[str, Any]
    timeout_s: float


@dataclass(frozen=True)
class OutputsQuery:
    principal: Principal
    run_id: str
    timeout_s: float


@dataclass(frozen=True)
class StepRecord:
    tenant: str
    run_id: str
    step: StepState


class ToolInvoker(Protocol):
    async def invoke(self, call: ToolCall) -> ToolReply:
        """Runs the call or raises ToolFailure."""


class ToolCatalog(Protocol):
    async def tools(self, query: CatalogQuery) -> Mapping[str, ToolInfo]:
        """The tools this user may call, by name, or raises ToolFailure."""


class Replanner(Protocol):
    async def replan(self, request: ReplanRequest) -> Plan:
        """A revised plan, or raises ToolFailure."""


class WorkingMemory(Protocol):
    async def put(self, output: StepOutput) -> None:
        """Records one step's output in the run's working state."""

    async def outputs(self, query: OutputsQuery) -> dict[str, Any]:
        """Every recorded step output of a run, by step id."""


class RunStore(Protocol):
    async def save_run(self, run: Run) -> None:
        """Writes the run's state (not its steps); raises LeaseLost when this executor no longer holds the run."""

    async def save_step(self, record: StepRecord) -> None:
        """Writes one step's state; raises LeaseLost when this executor no longer holds the run."""

    async def dead_letter(self, run: Run) -> str:
        """Puts the run in the dead-letter queue (and notifies); returns the entry's id."""

    async def release(self, run: Run) -> None:
        """Gives up this executor's lease on the run (it ended or paused, or this executor is stopping)."""


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock epoch seconds (timestamps shown to users)."""

    def monotonic(self) -> float:
        """Seconds for deadlines and breakers."""

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class InProcessWorkingMemory:
    """Working state kept in this process, per run, for an hour (used when no memory service is configured: a run
    taken over by another executor then re-reads what it needs by calling its steps again, which is safe because
    READs change nothing and WRITEs replay their first result under the same idempotency key)."""

    def __init__(self, ttl_s: float = 3600.0, max_runs: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_runs = max_runs
        self._runs: OrderedDict[tuple[str, str], tuple[float, dict[str, Any]]] = OrderedDict()

    async def put(self, output: StepOutput) -> None:
        key = (output.principal.tenant, output.run_id)
        _, outputs = self._runs.pop(key, (0.0, {}))
        outputs[output.step_id] = output.output
        self._runs[key] = (time.monotonic() + self.ttl_s, outputs)
        while len(self._runs) > self.max_runs:
            self._runs.popitem(last=False)

    async def outputs(self, query: OutputsQuery) -> dict[str, Any]:
        entry = self._runs.get((query.principal.tenant, query.run_id))
        if entry is None or entry[0] < time.monotonic():
            return {}
        return dict(entry[1])
