"""What a chat surface shows of a run, folded from its events, and `relay`, which drives any Surface."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from google.protobuf import json_format

from agentmesh.agent.v1 import agent_service_pb2 as agent_pb2
from agentmesh.common.v1 import common_pb2

STATUS = {common_pb2.STEP_STATUS_OK: "ok", common_pb2.STEP_STATUS_DENIED: "denied",
          common_pb2.STEP_STATUS_FAILED: "failed", common_pb2.STEP_STATUS_SKIPPED: "skipped",
          common_pb2.STEP_STATUS_RUNNING: "running", common_pb2.STEP_STATUS_PENDING: "pending",
          common_pb2.STEP_STATUS_AWAITING_APPROVAL: "awaiting"}
OUTCOMES = {common_pb2.OUTCOME_ANSWERED: "answered", common_pb2.OUTCOME_DENIED: "denied",
            common_pb2.OUTCOME_NO_ACTION: "no_action", common_pb2.OUTCOME_FAILED: "failed"}
NOT_LINKED = "ACCOUNT_NOT_LINKED"


@dataclass
class StepView:
    """One plan step as shown: its tool, label, status and what came of it."""

    step_id: str
    tool: str
    label: str
    status: str = "pending"
    summary: str = ""
    error: str = ""


@dataclass
class Approval:
    """A step waiting for the user's confirmation."""

    run_id: str
    step_id: str
    tool: str
    prompt: str
    arguments: dict[str, object] = field(default_factory=dict)


@dataclass
class Progress:
    """The state of one run as a chat surface renders it."""

    request: str
    run_id: str = ""
    session_id: str = ""
    steps: list[StepView] = field(default_factory=list)
    note: str = ""  # the plan's question, explanation or refusals
    answer: str = ""
    outcome: str = ""
    approval: Approval | None = None
    links: dict[str, str] = field(default_factory=dict)  # connector -> URL at which the user links the account
    error: str = ""
    duration_s: float = 0.0

    def apply(self, event: agent_pb2.ConverseResponse) -> str:
        """Folds one event in; returns its kind."""
        kind = event.WhichOneof("event") or ""
        if kind == "accepted":
            self.run_id, self.session_id = event.accepted.run_id, event.accepted.session_id
        elif kind == "plan":
            self._plan(event.plan)
        elif kind == "step_started":
            self._step(event.step_started.step_id, event.step_started.tool).status = "running"
        elif kind == "step_finished":
            r = event.step_finished
            view = self._step(r.step_id, r.tool)
            view.status = STATUS.get(r.status, "failed")
            view.summary = r.summary
            if r.HasField("error") and r.error.reason:
                view.error = r.error.message or r.error.reason
                self._link(r.error.reason, dict(r.error.metadata))
        elif kind == "approval_needed":
            a = event.approval_needed
            self._step(a.step_id, a.tool).status = "awaiting"
            self.approval = Approval(a.run_id, a.step_id, a.tool, a.prompt or f"Run {a.tool}?",
                                     json_format.MessageToDict(a.arguments))
        elif kind == "answer_token":
            self.answer += event.answer_token
        elif kind == "error":
            self.error = event.error.message or event.error.reason
            self._link(event.error.reason, dict(event.error.metadata))
        elif kind == "final":
            self.answer = event.final.text or self.answer
            self.outcome = OUTCOMES.get(event.final.outcome, "failed")
            self.duration_s = event.final.duration.ToTimedelta().total_seconds()
            self.approval = None
        return kind

    def _plan(self, plan: common_pb2.Plan) -> None:
        known = {s.step_id: s for s in self.steps}
        self.steps = [known.get(s.id) or StepView(s.id, s.tool, s.description or s.tool) for s in plan.steps]
        notes = [plan.question, plan.explanation, *(f"{r.tool}: {r.reason}" for r in plan.refusals)]
        self.note = "\n".join(n for n in notes if n)

    def _step(self, step_id: str, tool: str) -> StepView:
        for view in self.steps:
            if view.step_id == step_id:
                return view
        view = StepView(step_id, tool, tool)
        self.steps.append(view)
        return view

    def _link(self, reason: str, metadata: dict[str, str]) -> None:
        if reason == NOT_LINKED and metadata.get("link_url"):
            self.links[metadata.get("connector", "account")] = metadata["link_url"]


class Surface(Protocol):
    """Where one conversation is shown: a Slack thread (a Teams conversation implements the same four calls)."""

    async def start(self, progress: Progress) -> None:
        """Shows that the request was taken (the message later updates go to)."""

    async def update(self, progress: Progress) -> None:
        """Shows the plan and each step's status so far (called throttled)."""

    async def ask(self, progress: Progress, approval: Approval) -> None:
        """Asks the user to confirm a step (buttons that come back as a confirmation)."""

    async def finish(self, progress: Progress) -> None:
        """Shows the final answer, the outcome and any account links."""


class Throttle:
    """Runs `action` at most once per interval: the latest state wins, a burst of changes costs one call."""

    def __init__(self, interval_s: float, action: Callable[[], Awaitable[None]]) -> None:
        self.interval_s = interval_s
        self.action = action
        self._last = float("-inf")
        self._dirty = False
        self._task: asyncio.Task[None] | None = None

    def poke(self) -> None:
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self._dirty:
            wait = self._last + self.interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._dirty = False
            self._last = time.monotonic()
            await self.action()

    async def stop(self) -> None:
        """Drops a pending update (the caller shows the final state itself)."""
        self._dirty = False
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


async def relay(events: AsyncIterable[agent_pb2.ConverseResponse], surface: Surface, progress: Progress,
                interval_s: float) -> None:
    """Drives a surface from a run's events until the run ends or pauses for a confirmation."""
    throttle = Throttle(interval_s, lambda: surface.update(progress))
    try:
        async for event in events:
            kind = progress.apply(event)
            if kind == "approval_needed" and progress.approval is not None:
                await throttle.stop()
                await surface.ask(progress, progress.approval)
            elif kind == "final":
                await throttle.stop()
                await surface.finish(progress)
            elif kind in ("plan", "step_started", "step_finished"):
                throttle.poke()
    finally:
        await throttle.stop()
