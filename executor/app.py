"""The executor's use cases over the engine and the store: start, resume, confirm, cancel, replay, heartbeat, sweep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from mesh.errors import MeshError, Reason
from mesh.principal import Principal, PrincipalError, Verifier

from .model import (
    DEPENDENCY_FAILED,
    ApprovalNeeded,
    Event,
    Plan,
    Run,
    RunFinished,
    RunStatus,
    StepError,
    StepFinished,
    StepState,
    StepStatus,
)
from .outcome import TRANSIENT_CODES
from .ports import OutputsQuery, StepRecord, ToolFailure, ToolInfo
from .runner import ActiveRun, Engine
from .store import DeadLetter, PgRunStore, StoredRun

log = logging.getLogger("agentmesh.executor")
DOMAIN = "agentmesh.executor"
EXPIRED = StepError("DEADLINE_EXCEEDED", "DEADLINE",
                    "the requester's authorization expired before the run could be resumed; it ended here")


@dataclass(frozen=True)
class Timing:
    """How long leases last, how often they are renewed and orphans looked for, and what a resumed run gets."""

    lease_s: float = 5.0
    sweep_interval_s: float = 1.0
    resume_budget_s: float = 30.0  # a run taken over gets this long (within its principal's life) to finish
    sweep_batch: int = 50


class ExecutorApp:
    """What the ExecutorService does, without protos: every path that takes a run holds its lease first."""

    def __init__(self, engine: Engine, store: PgRunStore, verifier: Verifier, timing: Timing) -> None:
        self.engine = engine
        self.store = store
        self.verifier = verifier
        self.timing = timing
        self._tasks: list[asyncio.Task[None]] = []

    # --- Execute -------------------------------------------------------------------------------------------------
    async def execute(self, principal: Principal, run_id: str, request: str, plan: Plan, max_replans: int,
                      budget_s: float, context: object) -> AsyncIterator[Event]:
        """Starts the run, or — for a run id seen before — resumes it, shows how it ended, or shows it paused."""
        stored = await self._owned(principal, run_id, must_exist=False)
        if stored is None:
            infos = await self._tool_infos(principal, budget_s)
            run = Run(principal.tenant, run_id, principal.user, request, plan, max_replans=max_replans,
                      refused=bool(plan.refusals), usage=plan.usage, created_at=time.time(), updated_at=time.time())
            run.steps = self.engine.new_steps(plan, infos, 0)
            if await self.store.create(run, principal):
                return self.engine.start(run, principal, budget_s, context=context).events()
            stored = await self._owned(principal, run_id, must_exist=True)
            assert stored is not None
        run = stored.run
        if run.status.terminal:
            return _replay_ended(await self._with_outputs(run, principal, budget_s))
        if run.status is RunStatus.AWAITING_APPROVAL:
            return _replay_paused(await self._with_outputs(run, principal, budget_s))
        await self._claim(stored, principal)
        return self.engine.start(run, principal, budget_s, context=context,
                                 cancelled=stored.cancel_requested).events()

    async def _tool_infos(self, principal: Principal, budget_s: float) -> Mapping[str, ToolInfo]:
        try:
            return await self.engine.tool_infos(principal, budget_s)
        except ToolFailure as failure:
            reason = Reason.__members__.get(failure.error.reason, Reason.UPSTREAM_UNAVAILABLE)
            raise MeshError(reason, f"the registry could not list this user's tools: {failure.error.message}",
                            domain=DOMAIN, metadata=failure.error.metadata,
                            retry_after_s=failure.error.retry_after_s) from None

    # --- ConfirmStep -----------------------------------------------------------------------------------------------
    async def confirm(self, principal: Principal, run_id: str, step_id: str, approved: bool,
                      budget_s: float) -> AsyncIterator[Event]:
        """Answers a pending confirmation and runs the rest of the run."""
        stored = await self._owned(principal, run_id, must_exist=True)
        assert stored is not None
        run = stored.run
        step = run.steps.get(step_id)
        if step is None:
            raise MeshError(Reason.VALIDATION_FAILED, f"run {run_id} has no step {step_id!r}", domain=DOMAIN,
                            field_violations=[("step_id", f"no step {step_id!r} in run {run_id}")])
        if step.status is StepStatus.SKIPPED and step.error is not None \
                and step.error.reason == Reason.CONFIRMATION_TIMEOUT.value:
            raise MeshError(Reason.CONFIRMATION_TIMEOUT, f"the confirmation of {step.tool} timed out; the step was "
                            "skipped", domain=DOMAIN, metadata={"run_id": run_id, "step_id": step_id})
        if run.status is not RunStatus.AWAITING_APPROVAL or step.status is not StepStatus.AWAITING_APPROVAL:
            raise MeshError(Reason.VALIDATION_FAILED, f"step {step_id} is not awaiting a confirmation (it is "
                            f"{step.status.value.lower()})", domain=DOMAIN,
                            field_violations=[("step_id", "the step is not awaiting a confirmation")])
        await self._claim(stored, principal)
        changed: list[StepState] = []
        now = time.time()
        if run.approval_deadline is not None and run.approval_deadline < now:
            changed = _time_out(run)
        elif approved:
            step.approved = True
        else:
            step.status, step.ended_at = StepStatus.SKIPPED, now
            step.error = StepError("FAILED_PRECONDITION", Reason.CONFIRMATION_DECLINED.value,
                                   f"the user declined {step.tool}")
        if step.status.settled:
            changed = [step]
        run.status, run.approval_deadline = RunStatus.RUNNING, None
        for each in run.steps.values():
            await self.store.save_step(StepRecord(run.tenant, run.run_id, each))
        await self.store.save_run(run)
        return _chain([StepFinished(s.copy()) for s in changed],
                      self.engine.start(run, principal, budget_s, cancelled=stored.cancel_requested))

    # --- GetRun / CancelRun ----------------------------------------------------------------------------------------
    async def get(self, principal: Principal, run_id: str, budget_s: float) -> Run:
        """The run's state and steps; step outputs come from working memory while it keeps them (1 h)."""
        active = self.engine.active(principal.tenant, run_id)
        if active is not None and active.run.user == principal.user:
            return active.run.snapshot()
        stored = await self._owned(principal, run_id, must_exist=True)
        assert stored is not None
        return await self._with_outputs(stored.run, principal, budget_s)

    async def _with_outputs(self, run: Run, principal: Principal, budget_s: float) -> Run:
        try:
            outputs = await self.engine.memory.outputs(OutputsQuery(principal, run.run_id, budget_s))
        except Exception:
            log.warning("working memory unreadable; the run is shown without step outputs", exc_info=True)
            outputs = {}
        for step in run.steps.values():
            if step.status is StepStatus.OK:
                step.output = outputs.get(step.step_id)
        return run

    async def cancel(self, principal: Principal, run_id: str, budget_s: float) -> Run:
        """Stops a run between steps: steps not yet started are skipped. Waits (within the budget) for it to stop
        when it runs here; a run executing on another instance stops at that instance's next heartbeat."""
        stored = await self._owned(principal, run_id, must_exist=True)
        assert stored is not None
        if stored.run.status.terminal:
            return stored.run
        await self.store.request_cancel(principal.tenant, run_id)
        active = self.engine.active(principal.tenant, run_id)
        if active is None and await self.store.claim(principal.tenant, run_id, principal):
            fresh = await self.store.load(principal.tenant, run_id)
            assert fresh is not None
            active = self.engine.start(fresh.run, principal, budget_s, cancelled=True)
        if active is None:
            return stored.run
        active.cancelled.set()
        if active.task is not None:
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(active.task), budget_s)
        return active.run.snapshot()

    # --- dead letters ------------------------------------------------------------------------------------------
    async def dead_letter(self, dead_letter_id: str) -> tuple[DeadLetter, Run | None]:
        found = await self.store.find_dead_letters(dead_letter_id=dead_letter_id, limit=1)
        if not found:
            raise MeshError(Reason.NOT_FOUND, f"no dead letter {dead_letter_id!r}", domain=DOMAIN)
        stored = await self.store.load(found[0].tenant, found[0].run_id)
        return found[0], stored.run if stored else None

    async def replay(self, operator: Principal, dead_letter_id: str, budget_s: float) -> AsyncIterator[Event]:
        """Re-executes a dead-lettered run as the operator acting for its user: the same run, the same step ids and
        so the same idempotency keys; steps that succeeded are kept, steps left undone by transient failures run."""
        entry, run = await self.dead_letter(dead_letter_id)
        if (operator.tenant, operator.on_behalf_of.lower(), operator.run_id) != (entry.tenant, entry.user,
                                                                                  entry.run_id):
            raise MeshError(Reason.POLICY_DENIED, "a replay needs an operator principal minted for this dead letter "
                            f"(tenant {entry.tenant}, on_behalf_of {entry.user}, run_id {entry.run_id})",
                            domain=DOMAIN, metadata={"rule": "operator replay"})
        if entry.status == "resolved" or run is None:
            raise MeshError(Reason.VALIDATION_FAILED, f"dead letter {dead_letter_id} was already replayed to the "
                            "end", domain=DOMAIN, field_violations=[("dead_letter_id", "already resolved")])
        stored = await self.store.load(entry.tenant, entry.run_id)
        assert stored is not None
        await self._claim(stored, operator)
        run = stored.run
        for step in run.steps.values():
            if _undone(step.status, step.error):
                step.status, step.error, step.ended_at = StepStatus.PENDING, None, None
        run.status = RunStatus.RUNNING
        await self.store.start_replay(entry)
        for step in run.steps.values():
            await self.store.save_step(StepRecord(run.tenant, run.run_id, step))
        await self.store.save_run(run)
        return self.engine.start(run, operator, budget_s, allow_replan=False, replaying=True).events()

    # --- takeover -------------------------------------------------------------------------------------------------
    async def resume(self, tenant: str, run_id: str) -> ActiveRun | None:
        """Continues a run this executor just claimed as an orphan: with its stored principal while that lives,
        else ends it as failed (dead-lettered when it owes a WRITE). A paused run whose wait timed out has its
        pending confirmations skipped with CONFIRMATION_TIMEOUT, then runs to its end."""
        stored = await self.store.load(tenant, run_id)
        if stored is None or stored.run.status.terminal:
            return None
        run = stored.run
        if run.status is RunStatus.AWAITING_APPROVAL:
            _time_out(run)
            run.status, run.approval_deadline = RunStatus.RUNNING, None
            for step in run.steps.values():
                await self.store.save_step(StepRecord(tenant, run_id, step))
        try:
            principal = self.verifier.verify(stored.principal_token, frozenset({"user", "operator"}))
        except PrincipalError as err:
            log.warning("run %s taken over with an unusable principal (%s); ending it", run_id, err)
            principal = Principal(tenant, run.user, (), "", run_id, "user", stored.principal_expires_at)
            return self.engine.start(run, principal, 0.0, allow_replan=False, expiry=EXPIRED)
        budget = min(self.timing.resume_budget_s, principal.expires_at - time.time() - 1.0)
        if budget <= 0.1:
            return self.engine.start(run, principal, 0.0, allow_replan=False, expiry=EXPIRED)
        log.info("resuming run %s/%s taken over from an expired lease", tenant, run_id)
        return self.engine.start(run, principal, budget, cancelled=stored.cancel_requested,
                                 allow_replan=principal.kind == "user")

    async def sweep_once(self) -> int:
        claimed = await self.store.claim_orphans(self.timing.sweep_batch)
        for tenant, run_id in claimed:
            try:
                await self.resume(tenant, run_id)
            except Exception:
                log.exception("could not resume run %s/%s; its lease will expire and it is retried", tenant, run_id)
        return len(claimed)

    async def heartbeat_once(self) -> None:
        keys = [a.key for a in self.engine.active_runs()]
        if not keys:
            return
        for key in await self.store.renew(keys):
            active = self.engine.active(*key)
            if active is not None:
                active.cancelled.set()

    def start_background(self) -> None:
        """The heartbeat (renews this executor's leases, picks up cancellations) and the sweeper (takes over runs
        whose executor died)."""
        self._tasks = [asyncio.create_task(self._every(self.timing.lease_s / 3, self.heartbeat_once), name="heartbeat"),
                       asyncio.create_task(self._every(self.timing.sweep_interval_s, self.sweep_once), name="sweeper")]

    async def stop_background(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.engine.close()

    @staticmethod
    async def _every(interval_s: float, job: Callable[[], Awaitable[object]]) -> None:
        while True:
            try:
                await job()
            except Exception:
                log.exception("background job failed")
            await asyncio.sleep(interval_s)

    # --- helpers ------------------------------------------------------------------------------------------------
    async def _owned(self, principal: Principal, run_id: str, *, must_exist: bool) -> StoredRun | None:
        """The run, if it is the caller's (another user's run of the tenant is as good as absent)."""
        stored = await self.store.load(principal.tenant, run_id)
        if stored is not None and stored.run.user != principal.user:
            stored = None
        if stored is None and must_exist:
            raise MeshError(Reason.NOT_FOUND, f"no run {run_id!r}", domain=DOMAIN, metadata={"run_id": run_id})
        return stored

    async def _claim(self, stored: StoredRun, principal: Principal) -> None:
        run = stored.run
        if self.engine.active(run.tenant, run.run_id) is None and \
                await self.store.claim(run.tenant, run.run_id, principal):
            return
        left = max((stored.lease_expires_at or time.time()) - time.time(), 0.1)
        raise MeshError(Reason.IDEMPOTENCY_KEY_IN_FLIGHT, f"run {run.run_id} is being executed; retry shortly",
                        domain=DOMAIN, metadata={"run_id": run.run_id}, retry_after_s=min(left, self.timing.lease_s))


def _time_out(run: Run) -> list[StepState]:
    """Skips every step still waiting for a confirmation; returns them."""
    waiting = [s for s in run.steps.values() if s.status is StepStatus.AWAITING_APPROVAL]
    for step in waiting:
        step.status, step.ended_at = StepStatus.SKIPPED, time.time()
        step.error = StepError("FAILED_PRECONDITION", Reason.CONFIRMATION_TIMEOUT.value,
                               f"the confirmation of {step.tool} was not given in time")
    return waiting


def _undone(status: StepStatus, error: StepError | None) -> bool:
    if not status.settled:
        return True
    if error is None:
        return False
    return (status is StepStatus.FAILED and error.code in TRANSIENT_CODES) or \
        (status is StepStatus.SKIPPED and error.reason == DEPENDENCY_FAILED)


async def _chain(first: Sequence[Event], active: ActiveRun) -> AsyncIterator[Event]:
    for event in first:
        yield event
    async for event in active.events():
        yield event


async def _replay_ended(run: Run) -> AsyncIterator[Event]:
    for step in sorted(run.steps.values(), key=lambda s: s.position):
        yield StepFinished(step)
    yield RunFinished(run)


async def _replay_paused(run: Run) -> AsyncIterator[Event]:
    for step in sorted(run.steps.values(), key=lambda s: s.position):
        if step.status.settled:
            yield StepFinished(step)
        elif step.status is StepStatus.AWAITING_APPROVAL:
            yield ApprovalNeeded(run.run_id, step.step_id, step.tool, dict(step.arguments or {}),
                                 f"Confirm: {step.tool}?")
    yield RunFinished(run)
