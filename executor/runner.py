"""The orchestration of a run: a plan's DAG over the ports, parallel steps, retries, breakers, approvals, re-plans."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from mesh.principal import Principal
from mesh.resilience import BreakerPolicy, BreakerRegistry, CircuitOpen, RetryPolicy, counts_against_breaker

from . import plans, references
from .model import (
    DEPENDENCY_FAILED,
    ApprovalNeeded,
    Effect,
    Event,
    Plan,
    PlanRevised,
    Run,
    RunFinished,
    RunStatus,
    StepError,
    StepFinished,
    StepStarted,
    StepState,
    StepStatus,
    idempotency_key,
)
from .outcome import outcome_of, owed_write
from .ports import (
    CatalogQuery,
    Clock,
    LeaseLost,
    OutputsQuery,
    Replanner,
    ReplanRequest,
    RunStore,
    StepOutput,
    StepRecord,
    SystemClock,
    ToolCall,
    ToolCatalog,
    ToolFailure,
    ToolInfo,
    ToolInvoker,
    ToolReply,
    WorkingMemory,
)

log = logging.getLogger("agentmesh.executor")

# Failures a planner can act on: the executor asks for a revised plan with the observations so far.
REPLANNABLE = frozenset({"NOT_FOUND", "AMBIGUOUS_PERSON", "UNKNOWN_PERSON", "VALIDATION_FAILED",
                         "AMBIGUOUS_REFERENCE", "CIRCUIT_OPEN"})
_REFERENCE_CODES = {"NOT_FOUND": "NOT_FOUND", "AMBIGUOUS_REFERENCE": "FAILED_PRECONDITION"}
_OUT_OF_TIME = StepError("DEADLINE_EXCEEDED", "DEADLINE", "the request's deadline ran out before this step could run")
_RUN_OUT_OF_TIME = StepError("DEADLINE_EXCEEDED", "DEADLINE",
                             "the request's deadline ran out before the run could finish")


@dataclass(frozen=True)
class Limits:
    """How much a run may do at once, how it retries, when breakers open, and the time it keeps back."""

    max_parallel_per_run: int = 4
    max_parallel_per_tenant: int = 16
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    reserve_s: float = 0.05  # kept back from every call's timeout for the executor's own bookkeeping
    min_call_s: float = 0.02  # a call with less time than this left is not started
    approval_timeout_s: float = 300.0
    min_replan_s: float = 0.2  # a re-plan is not asked for with less time than this left


class ActiveRun:
    """A run being executed in this process: its task, its cancel flag and the stream of its events."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.cancelled = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()

    @property
    def key(self) -> tuple[str, str]:
        return self.run.tenant, self.run.run_id

    def emit(self, event: Event) -> None:
        self._queue.put_nowait(event)

    def end(self, error: BaseException | None = None) -> None:
        self._queue.put_nowait(error)

    async def events(self) -> AsyncIterator[Event]:
        """The run's events until it ends or pauses; raises what stopped it abnormally."""
        while True:
            item = await self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class Engine:
    """Executes runs over the ports. One per executor process: breakers and tenant limits are shared by its runs."""

    def __init__(self, *, invoker: ToolInvoker, catalog: ToolCatalog, store: RunStore, memory: WorkingMemory,
                 replanner: Replanner | None = None, clock: Clock | None = None, limits: Limits | None = None,
                 rng: random.Random | None = None) -> None:
        self.invoker = invoker
        self.catalog = catalog
        self.store = store
        self.memory = memory
        self.replanner = replanner
        self.clock = clock or SystemClock()
        self.limits = limits or Limits()
        self.rng = rng or random.Random()
        self.breakers = BreakerRegistry(self.limits.breaker, self.clock.monotonic)
        self._tenant_slots: dict[str, asyncio.Semaphore] = {}
        self._active: dict[tuple[str, str], ActiveRun] = {}

    def tenant_slots(self, tenant: str) -> asyncio.Semaphore:
        slots = self._tenant_slots.get(tenant)
        if slots is None:
            slots = self._tenant_slots[tenant] = asyncio.Semaphore(self.limits.max_parallel_per_tenant)
        return slots

    def active(self, tenant: str, run_id: str) -> ActiveRun | None:
        return self._active.get((tenant, run_id))

    def active_runs(self) -> list[ActiveRun]:
        return list(self._active.values())

    async def tool_infos(self, principal: Principal, timeout_s: float) -> Mapping[str, ToolInfo]:
        """The registry's view of the user's tools (effects, confirmations), retried like a tool call."""
        deadline = self.clock.monotonic() + timeout_s
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - self.clock.monotonic()
            if remaining < self.limits.min_call_s:
                raise ToolFailure(StepError("DEADLINE_EXCEEDED", "DEADLINE", "the request's deadline ran out"))
            try:
                return await self.catalog.tools(CatalogQuery(principal, remaining))
            except ToolFailure as failure:
                err = failure.error
                delay = self.limits.retry.next_delay(attempt, err.code, err.reason, remaining - self.limits.min_call_s,
                                                     err.retry_after_s, self.rng)
                if delay is None:
                    raise
                await self.clock.sleep(delay)

    def new_steps(self, plan: Plan, infos: Mapping[str, ToolInfo], first_position: int) -> dict[str, StepState]:
        """Step states for a plan's steps: the side effect and the need for a confirmation come from the registry
        (a tool it does not offer keeps the plan's effect; the registry will refuse and audit the call)."""
        out: dict[str, StepState] = {}
        for offset, step in enumerate(plan.steps):
            info = infos.get(step.tool)
            effect = info.effect if info else (step.effect or Effect.READ)
            out[step.id] = StepState(step.id, step.tool, effect, round=plan.round, position=first_position + offset,
                                     planned=dict(step.arguments), depends_on=plans.dependencies(step),
                                     needs_approval=bool(info and info.confirm_before and effect is Effect.WRITE))
        return out

    def start(self, run: Run, principal: Principal, budget_s: float, *, context: object = None,
              allow_replan: bool = True, cancelled: bool = False, expiry: StepError | None = None,
              replaying: bool = False) -> ActiveRun:
        """Starts executing (or resuming) a run in the background; its events stream from the returned ActiveRun.
        The run goes on if the caller stops listening: it is durable, not tied to one stream. Steps the budget
        leaves no time for fail with `expiry` (default: the deadline ran out)."""
        active = ActiveRun(run)
        if cancelled:
            active.cancelled.set()
        execution = _Execution(self, active, principal, self.clock.monotonic() + budget_s, context,
                               allow_replan and self.replanner is not None, expiry, replaying)
        self._active[active.key] = active
        active.task = asyncio.create_task(execution.execute(), name=f"run {run.tenant}/{run.run_id}")
        active.task.add_done_callback(lambda _: self._forget(active))
        return active

    def _forget(self, active: ActiveRun) -> None:
        if self._active.get(active.key) is active:
            del self._active[active.key]

    async def close(self) -> None:
        tasks = [a.task for a in self._active.values() if a.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Execution:
    """One pass over a run: until it ends, pauses for an approval, or its lease is lost."""

    def __init__(self, engine: Engine, active: ActiveRun, principal: Principal, deadline: float, context: object,
                 allow_replan: bool, expiry: StepError | None, replaying: bool) -> None:
        self.engine = engine
        self.expiry = expiry
        self.replaying = replaying
        self.active = active
        self.run = active.run
        self.principal = principal
        self.deadline = deadline
        self.context = context
        self.allow_replan = allow_replan
        self.clock = engine.clock
        self.limits = engine.limits
        self.outputs: dict[str, Any] = {}
        self.released = False
        self.run_slots = asyncio.Semaphore(self.limits.max_parallel_per_run)

    # --- the loop ---------------------------------------------------------------------------------------------
    async def execute(self) -> None:
        try:
            await self._prepare()
            while True:
                await self._run_dag()
                if self._awaiting() and not self.active.cancelled.is_set():
                    await self._pause()
                    return
                if await self._replan():
                    continue
                await self._finish()
                return
        except LeaseLost:
            self.released = True  # not ours to release any more
            log.warning("lease lost; another executor has the run", extra={"fields": {
                "tenant": self.run.tenant, "run_id": self.run.run_id}})
            self.active.end(LeaseLost(f"run {self.run.run_id} moved to another executor"))
        except BaseException as err:
            if not isinstance(err, asyncio.CancelledError):
                log.exception("run failed unexpectedly", extra={"fields": {"run_id": self.run.run_id}})
            self.active.end(err)
            raise
        finally:
            await self._release()

    async def _release(self) -> None:
        """Lets go of the run before its end is announced, so that whoever hears it can take the run at once."""
        if self.released:
            return
        self.released = True
        self.engine._forget(self.active)
        try:
            await asyncio.shield(self.engine.store.release(self.run))
        except Exception:
            log.warning("could not release the run's lease; it will expire", exc_info=True)

    def remaining(self) -> float:
        return self.deadline - self.clock.monotonic()

    def _emit_step(self, step: StepState) -> None:
        self.active.emit(StepFinished(step.copy()))

    async def _save_step(self, step: StepState) -> None:
        await self.engine.store.save_step(StepRecord(self.run.tenant, self.run.run_id, step))

    async def _prepare(self) -> None:
        """Picks up where the run stood: steps caught mid-call run again (same arguments, same key), approved steps
        run, and successful steps whose outputs are gone are called again if a step still to run needs them."""
        try:
            self.outputs = await self.engine.memory.outputs(OutputsQuery(self.principal, self.run.run_id,
                                                                         max(self.remaining(), 0.05)))
        except Exception:
            log.warning("working memory unreadable; step outputs start empty", exc_info=True)
            self.outputs = {}
        steps = self.run.steps
        for step in steps.values():
            if step.status is StepStatus.RUNNING or (step.status is StepStatus.AWAITING_APPROVAL and step.approved):
                step.status = StepStatus.PENDING
        needed = {dep for s in steps.values() if not s.status.settled for dep in s.depends_on}
        for step_id in needed:
            dependency = steps.get(step_id)
            if dependency is not None and dependency.status is StepStatus.OK and step_id not in self.outputs:
                dependency.status = StepStatus.PENDING

    def _awaiting(self) -> list[StepState]:
        return [s for s in self.run.steps.values() if s.status is StepStatus.AWAITING_APPROVAL]

    async def _run_dag(self) -> None:
        running: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                await self._schedule(running)
                if not running:
                    return
                done, _ = await asyncio.wait(running.values(), return_when=asyncio.FIRST_COMPLETED)
                for step_id, task in list(running.items()):
                    if task in done:
                        del running[step_id]
                        task.result()
        finally:
            for task in running.values():
                task.cancel()
            if running:
                await asyncio.gather(*running.values(), return_exceptions=True)

    async def _schedule(self, running: dict[str, asyncio.Task[None]]) -> None:
        """Settles what can be settled without a call (skips, cancellations, expiry) and starts every ready step."""
        changed = True
        while changed:
            changed = False
            for step in self._current_steps():
                if step.status is not StepStatus.PENDING and not (
                        step.status is StepStatus.AWAITING_APPROVAL and self.active.cancelled.is_set()):
                    continue
                if step.step_id in running:
                    continue
                if self.active.cancelled.is_set():
                    await self._settle(step, StepStatus.SKIPPED,
                                       StepError("CANCELLED", "CANCELLED", "the run was cancelled before this step"))
                    changed = True
                    continue
                blocker = self._failed_dependency(step)
                if blocker is not None:
                    await self._settle(step, StepStatus.SKIPPED, StepError(
                        "FAILED_PRECONDITION", DEPENDENCY_FAILED,
                        f"skipped because step {blocker.step_id} ({blocker.tool}) was {blocker.status.value.lower()}",
                        {"dependency": blocker.step_id, "dependency_status": blocker.status.value}))
                    changed = True
                    continue
                if not self._dependencies_ok(step):
                    continue
                if self.remaining() < self.limits.min_call_s + self.limits.reserve_s:
                    await self._settle(step, StepStatus.FAILED, self.expiry or _OUT_OF_TIME)
                    changed = True
                    continue
                if step.needs_approval and not step.approved:
                    await self._ask_approval(step)
                    changed = True
                    continue
                running[step.step_id] = asyncio.create_task(self._run_step(step), name=f"step {step.step_id}")

    def _current_steps(self) -> list[StepState]:
        """Steps of the current plan, plus anything earlier still unsettled (a step awaiting approval)."""
        ids = {s.id for s in self.run.plan.steps}
        return sorted((s for s in self.run.steps.values() if s.step_id in ids or not s.status.settled),
                      key=lambda s: s.position)

    def _failed_dependency(self, step: StepState) -> StepState | None:
        for dep in step.depends_on:
            other = self.run.steps.get(dep)
            if other is not None and other.status.settled and other.status is not StepStatus.OK:
                return other
        return None

    def _dependencies_ok(self, step: StepState) -> bool:
        return all(self.run.steps[d].status is StepStatus.OK and d in self.outputs
                   for d in step.depends_on if d in self.run.steps)

    async def _settle(self, step: StepState, status: StepStatus, error: StepError | None) -> None:
        now = self.clock.now()
        step.status, step.error = status, error
        step.started_at = step.started_at or now
        step.ended_at = now
        await self._save_step(step)
        self._emit_step(step)

    # --- one step ------------------------------------------------------------------------------------------------
    def _resolve(self, step: StepState) -> dict[str, Any]:
        if step.arguments is None:
            step.arguments = references.resolve(step.planned, self.outputs)
        return step.arguments

    async def _ask_approval(self, step: StepState) -> None:
        try:
            arguments = self._resolve(step)
        except references.ReferenceFailure as err:
            await self._settle(step, StepStatus.FAILED,
                               StepError(_REFERENCE_CODES[err.reason], err.reason, err.message, err.metadata))
            return
        step.status = StepStatus.AWAITING_APPROVAL
        await self._save_step(step)
        shown = ", ".join(f"{k}={v}" for k, v in arguments.items())
        description = next((s.description for s in self.run.plan.steps if s.id == step.step_id and s.description), "")
        prompt = f"Confirm: {description or step.tool} ({shown})?"
        self.active.emit(ApprovalNeeded(self.run.run_id, step.step_id, step.tool, dict(arguments), prompt))

    async def _run_step(self, step: StepState) -> None:
        async with self.run_slots, self.engine.tenant_slots(self.run.tenant):
            if self.active.cancelled.is_set():
                await self._settle(step, StepStatus.SKIPPED,
                                   StepError("CANCELLED", "CANCELLED", "the run was cancelled before this step"))
                return
            step.started_at = self.clock.now()
            step.ended_at, step.error, step.vendor_wait_s = None, None, None
            try:
                arguments = self._resolve(step)
            except references.ReferenceFailure as err:
                await self._settle(step, StepStatus.FAILED,
                                   StepError(_REFERENCE_CODES[err.reason], err.reason, err.message, err.metadata))
                return
            step.status = StepStatus.RUNNING
            if step.effect is Effect.WRITE:
                step.idempotency_key = idempotency_key(self.run.tenant, self.run.run_id, step.step_id)
                await self._save_step(step)  # durable before the side effect is attempted
            try:
                reply = await self._call(step, arguments)
            except ToolFailure as failure:
                status = StepStatus.DENIED if failure.error.code == "PERMISSION_DENIED" else StepStatus.FAILED
                await self._settle(step, status, failure.error)
                return
            except Exception:
                log.exception("step call failed unexpectedly", extra={"fields": {"run_id": self.run.run_id,
                                                                                 "step_id": step.step_id}})
                await self._settle(step, StepStatus.FAILED, StepError("INTERNAL", "INTERNAL", "internal error"))
                return
            step.output = reply.result
            step.summary = reply.summary
            if reply.arguments:
                step.arguments = reply.arguments
            self.outputs[step.step_id] = reply.result
            await self._remember(step.step_id, reply.result)
            await self._settle(step, StepStatus.OK, None)

    async def _call(self, step: StepState, arguments: dict[str, Any]) -> ToolReply:
        """Calls the tool through its (tenant, connector) breaker, retrying retryable failures within the deadline.
        The breaker judges the call as the step sees it, after its retries: it opens when a system keeps failing
        its callers, not when retries are absorbing a flaky one."""
        connector = step.tool.split(".", 1)[0]
        self.active.emit(StepStarted(step.step_id, step.tool, dict(arguments), step.attempts + 1))
        try:
            permit = self.engine.breakers.get((self.run.tenant, connector)).acquire()
        except CircuitOpen as err:
            wait = max(err.retry_after_s, 0.0)
            raise ToolFailure(StepError(
                "UNAVAILABLE", "CIRCUIT_OPEN",
                f"{connector} is failing for this tenant (circuit open), so the call was not made; calls resume in "
                f"about {wait:.0f}s", {"connector": connector, "retry_after_s": f"{wait:.1f}"},
                retry_after_s=wait)) from None
        try:
            reply = await self._attempts(step, arguments)
        except ToolFailure as failure:
            if counts_against_breaker(failure.error.code, failure.error.reason):
                permit.failure()
            else:
                permit.success()  # the system answered; it refused this call
            raise
        except BaseException:
            permit.release()
            raise
        permit.success()
        return reply

    async def _attempts(self, step: StepState, arguments: dict[str, Any]) -> ToolReply:
        attempt = 0
        while True:
            attempt += 1
            timeout = self.remaining() - self.limits.reserve_s
            if timeout < self.limits.min_call_s:
                raise ToolFailure(StepError("DEADLINE_EXCEEDED", "DEADLINE", "the request's deadline ran out"))
            if attempt > 1:
                self.active.emit(StepStarted(step.step_id, step.tool, dict(arguments), step.attempts + 1))
            step.attempts += 1
            try:
                return await self._attempt(step, ToolCall(self.principal, step.tool, arguments,
                                                          step.idempotency_key, timeout))
            except ToolFailure as failure:
                error = failure.error
                left = self.remaining() - self.limits.reserve_s - self.limits.min_call_s
                delay = self.limits.retry.next_delay(attempt, error.code, error.reason, left, error.retry_after_s,
                                                     self.engine.rng)
                if delay is None:
                    raise
                await self.clock.sleep(delay)

    async def _attempt(self, step: StepState, call: ToolCall) -> ToolReply:
        """One call of a step. Its vendor wait joins the step's: as the registry reported it (at most the call's
        duration), or the whole call when it reported none. The backoff between attempts is not vendor time."""
        began = self.clock.monotonic()
        reported: float | None = None
        try:
            reply = await self.engine.invoker.invoke(call)
            reported = reply.vendor_wait_s
            return reply
        except ToolFailure as failure:
            reported = failure.vendor_wait_s
            raise
        finally:
            took = max(self.clock.monotonic() - began, 0.0)
            waited = took if reported is None else min(max(reported, 0.0), took)
            step.vendor_wait_s = (step.vendor_wait_s or 0.0) + waited

    async def _remember(self, step_id: str, output: dict[str, Any]) -> None:
        try:
            await self.engine.memory.put(StepOutput(self.principal, self.run.run_id, step_id, output,
                                                    max(self.remaining() - self.limits.reserve_s, 0.05)))
        except Exception:
            log.warning("could not record a step output in working memory", exc_info=True)

    # --- after the DAG ---------------------------------------------------------------------------------------
    async def _replan(self) -> bool:
        """Asks the planner for a revised plan when this round failed in a way it can act on; False when not."""
        run = self.run
        failures = [s for s in run.steps.values() if s.round == run.plan.round and s.status is StepStatus.FAILED
                    and s.error is not None and s.error.reason in REPLANNABLE]
        if (not failures or not self.allow_replan or self.engine.replanner is None or self.active.cancelled.is_set()
                or run.plan.round >= run.max_replans or self.remaining() < self.limits.min_replan_s):
            return False
        observations = tuple(s.copy() for s in sorted(run.steps.values(), key=lambda s: s.position))
        try:
            revised = await self.engine.replanner.replan(ReplanRequest(
                self.principal, run.request, run.plan, observations, self.remaining() - self.limits.reserve_s,
                self.context))
            revised = replace(revised, round=run.plan.round + 1)
            problems = plans.violations(revised, known=run.steps.keys(), prefix="revised_plan")
            if problems:
                log.warning("the planner's revision is invalid; keeping the run as it stands",
                            extra={"fields": {"run_id": run.run_id, "violations": problems}})
                return False
            revised = plans.merge_revision(run.steps, revised)
            infos = await self.engine.tool_infos(self.principal, self.remaining() - self.limits.reserve_s)
        except ToolFailure as failure:
            log.warning("re-plan failed: %s", failure)
            return False
        fresh = [s for s in revised.steps if s.id not in run.steps]
        states = self.engine.new_steps(revised.with_steps(tuple(fresh)), infos, len(run.steps))
        run.plan = revised
        run.usage = run.usage.plus(revised.usage)
        run.refused = run.refused or bool(revised.refusals)
        run.steps.update(states)
        await self.engine.store.save_run(run)
        for state in states.values():
            await self._save_step(state)
        self.active.emit(PlanRevised(revised))
        return True

    async def _pause(self) -> None:
        run = self.run
        run.status = RunStatus.AWAITING_APPROVAL
        run.approval_deadline = run.approval_deadline or self.clock.now() + self.limits.approval_timeout_s
        run.updated_at = self.clock.now()
        await self.engine.store.save_run(run)
        await self._release()
        self.active.emit(RunFinished(run.snapshot()))
        self.active.end()

    async def _finish(self) -> None:
        run = self.run
        run.error = None
        run.outcome = outcome_of(run.steps.values(), run.plan, run.refused)
        owed = owed_write(run.steps, replaying=self.replaying or bool(run.dead_letter_id))
        if self.active.cancelled.is_set():
            run.status = RunStatus.CANCELLED
        elif owed is not None:
            cause = owed.error or StepError("DEADLINE_EXCEEDED", "DEADLINE", "the run ended before this step ran")
            run.status = RunStatus.DEAD_LETTERED
            run.error = cause
            run.dead_letter_id = await self.engine.store.dead_letter(run)
            run.error = StepError(cause.code, cause.reason, (
                f"{owed.tool} ({owed.step_id}) could not be completed: {cause.message}. The request was put in the "
                f"dead-letter queue as {run.dead_letter_id}; replaying it re-sends the same idempotency keys, so "
                "nothing will be done twice."), {"dead_letter_id": run.dead_letter_id, "step_id": owed.step_id})
        elif any(s.status is StepStatus.FAILED and s.error is not None and s.error.reason == "DEADLINE"
                 for s in run.steps.values()):
            run.status = RunStatus.FAILED
            run.error = self.expiry or _RUN_OUT_OF_TIME
        elif run.outcome.value == "answered" and all(run.steps[s.id].status is StepStatus.OK
                                                     for s in run.plan.steps):
            run.status = RunStatus.SUCCEEDED
        else:
            run.status = RunStatus.COMPLETED
        run.approval_deadline = None
        run.updated_at = self.clock.now()
        await self.engine.store.save_run(run)
        await self._release()
        self.active.emit(RunFinished(run.snapshot()))
        self.active.end()
