"""The request path under one deadline, streamed as events by a run task that outlives a broken client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from google.protobuf import duration_pb2, struct_pb2
from opentelemetry import trace

from agentmesh.agent.v1 import agent_service_pb2 as agent_pb2
from agentmesh.common.v1 import common_pb2
from agentmesh.executor.v1 import executor_pb2, executor_service_pb2
from agentmesh.memory.v1 import memory_service_pb2
from agentmesh.planner.v1 import planner_service_pb2
from agentmesh.registry.v1 import registry_pb2
from gateway.auth import Caller
from gateway.lookups import Lookups
from gateway.ratelimit import RateLimiter
from gateway.runlog import ENDED, PAUSED, RUNNING, RunLog, RunMeta, RunWriter
from mesh.client import Budget
from mesh.errors import MeshError, Reason
from mesh.principal import Minter, Principal

log = logging.getLogger("agentmesh.gateway")
_TRACER = trace.get_tracer("agentmesh.gateway")
DOMAIN = "agentmesh.gateway"
# Providers whose time is the platform's own (no model is waited on).
MODEL_FREE = frozenset({"", "embedded", "template", "templated", "cache"})
OUTCOME_NAMES = {common_pb2.OUTCOME_ANSWERED: "answered", common_pb2.OUTCOME_DENIED: "denied",
                 common_pb2.OUTCOME_NO_ACTION: "no_action", common_pb2.OUTCOME_FAILED: "failed"}
# Events a re-attaching client should find logged at once; the rest are written in batches.
URGENT = frozenset({"accepted", "approval_needed", "final", "error"})


class Peers(Protocol):
    """The peer calls of the request path (gateway.peers.Peers implements them over gRPC)."""

    async def build_context(self, who: Principal, request: memory_service_pb2.BuildContextRequest,
                            timeout_s: float) -> memory_service_pb2.BuildContextResponse: ...

    async def append_turn(self, who: Principal, session_id: str, turn: common_pb2.Turn,
                          timeout_s: float) -> None: ...

    async def record_run(self, who: Principal, request: memory_service_pb2.RecordRunRequest,
                         timeout_s: float) -> None: ...

    def plan(self, who: Principal, request: planner_service_pb2.PlanRequest,
             timeout_s: float) -> AsyncIterator[planner_service_pb2.PlanResponse]: ...

    def respond(self, who: Principal, request: planner_service_pb2.RespondRequest,
                timeout_s: float) -> AsyncIterator[planner_service_pb2.RespondResponse]: ...

    def execute(self, who: Principal, request: executor_service_pb2.ExecuteRequest,
                timeout_s: float) -> AsyncIterator[executor_service_pb2.ExecuteResponse]: ...

    def confirm(self, who: Principal, request: executor_service_pb2.ConfirmStepRequest,
                timeout_s: float) -> AsyncIterator[executor_service_pb2.ExecuteResponse]: ...

    async def audit(self, who: Principal, event: registry_pb2.AuditEvent, timeout_s: float) -> None: ...


@dataclass(frozen=True)
class Confirmation:
    """The user's answer to an approval request."""

    run_id: str
    step_id: str
    approved: bool


@dataclass(frozen=True)
class Ask:
    """One turn: a request text, or a confirmation of a paused run."""

    text: str = ""
    session_id: str = ""
    request_id: str = ""
    confirmation: Confirmation | None = None


@dataclass(frozen=True)
class Tuning:
    """The request path's knobs (from GatewayConfig)."""

    context_budget_tokens: int = 2000
    max_replans: int = 2
    background_timeout_s: float = 5.0


class RunStream:
    """The events of one Converse as they happen; ends after `final` or after `approval_needed` (a pause).
    `error` is set when the request failed (the events still end with a final)."""

    def __init__(self, run_id: str, session_id: str, request_id: str) -> None:
        self.run_id = run_id
        self.session_id = session_id
        self.request_id = request_id
        self.error: MeshError | None = None
        self._queue: asyncio.Queue[agent_pb2.ConverseResponse | None] = asyncio.Queue()

    def put(self, event: agent_pb2.ConverseResponse | None) -> None:
        self._queue.put_nowait(event)

    async def __aiter__(self) -> AsyncIterator[agent_pb2.ConverseResponse]:
        while True:
            event = await self._queue.get()
            if event is None:
                return
            yield event


@dataclass
class _Timeline:
    """Where a request's time went: waiting on models, waiting on vendors (on the critical path), and the rest, the
    platform's own overhead.

    Model wait is what the planner reports in `Usage.model_wait` for the Plan, each re-plan and the Respond: the
    time its provider calls were outstanding, not the calls' whole duration (building prompts, validating plans and
    the backoff between tries are the platform's). Vendor wait comes from each step's `vendor_wait`: the time its
    connector calls spent awaiting the vendor, summed over its attempts. A step says how long it waited, not when,
    so its wait is placed at the end of its interval, as the span [end - vendor_wait, end], and the union of the
    steps' spans is subtracted: parallel steps overlap, and the union, not the sum, is the time during which some
    step waited on a vendor.

    The approximation is in the placement only. A step alone, or steps whose intervals do not overlap, contribute
    exactly their vendor_wait. Where intervals overlap, a span may sit later than the real waiting by the platform's
    work after the vendor's last answer (the registry's audit row, the executor recording the output) and closes up
    the gaps within it (between a call's vendor requests, the backoff between attempts), so the overlap between two
    steps' waits can be misjudged by about that much. A step without `vendor_wait` (an executor that does not report
    it) counts its whole interval.
    """

    started: float
    model_s: float = 0.0
    step_spans: list[tuple[float, float]] = field(default_factory=list)

    def add_model(self, usage: common_pb2.Usage, call_s: float | None = None, cached: bool = False) -> None:
        """The model wait of a Plan, re-plan or Respond (`call_s`: the call's duration as the gateway saw it, which
        bounds the wait). From a planner that reports none, a call a model served counts whole."""
        if usage.HasField("model_wait"):
            waited = max(usage.model_wait.ToNanoseconds() / 1e9, 0.0)
            self.model_s += waited if call_s is None else min(waited, call_s)
        elif call_s is not None and usage.provider not in MODEL_FREE and not cached:
            self.model_s += call_s

    def add_steps(self, results: list[common_pb2.StepResult]) -> None:
        for r in results:
            if r.HasField("start_time") and r.HasField("end_time"):
                start = r.start_time.ToNanoseconds() / 1e9
                end = max(r.end_time.ToNanoseconds() / 1e9, start)
                if r.HasField("vendor_wait"):
                    start = max(start, end - r.vendor_wait.ToNanoseconds() / 1e9)
                self.step_spans.append((start, end))

    def vendor_s(self) -> float:
        """The union of the steps' vendor-wait spans: time during which at least one step waited on a vendor."""
        total, end = 0.0, float("-inf")
        for start, stop in sorted(self.step_spans):
            if stop <= end:
                continue
            total += stop - max(start, end)
            end = stop
        return total

    def overhead_s(self, now: float) -> float:
        return max(now - self.started - self.model_s - self.vendor_s(), 0.0)


def _duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


def add_usage(total: common_pb2.Usage, more: common_pb2.Usage) -> None:
    total.input_tokens += more.input_tokens
    total.output_tokens += more.output_tokens
    total.cost_usd += more.cost_usd
    if more.HasField("model_wait"):
        total.model_wait.FromNanoseconds(total.model_wait.ToNanoseconds() + more.model_wait.ToNanoseconds())
    if more.provider:
        total.provider, total.model = more.provider, more.model


def plan_outcome(plan: common_pb2.Plan) -> common_pb2.Outcome:
    """The outcome of a plan with no steps: refused, or a question or explanation."""
    return common_pb2.OUTCOME_DENIED if plan.refusals else common_pb2.OUTCOME_NO_ACTION


def _trace_id() -> str:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


def result_phrase(result: common_pb2.StepResult) -> str:
    """A short phrase of what a step did, for the run summary memory keeps."""
    status = common_pb2.StepStatus.Name(result.status).removeprefix("STEP_STATUS_").lower()
    text = result.summary or (result.error.reason if result.HasField("error") else "")
    return f"{result.tool} {status}: {text}"[:300] if text else f"{result.tool} {status}"


class _Run:
    """One Converse's emitter: sequence numbers, the live stream and the run log."""

    def __init__(self, stream: RunStream, writer: RunWriter, sequence: int) -> None:
        self.stream = stream
        self.writer = writer
        self.sequence = sequence

    def emit(self, **event: Any) -> agent_pb2.ConverseResponse:
        self.sequence += 1
        message = agent_pb2.ConverseResponse(sequence=self.sequence, **event)
        self.stream.put(message)
        self.writer.add(self.sequence, message.SerializeToString(), urgent=not URGENT.isdisjoint(event))
        return message


class Conversations:
    """Admits requests (rate limits), mints their principals and runs them in tasks that outlive a broken client."""

    def __init__(self, peers: Peers, lookups: Lookups, limiter: RateLimiter, minter: Minter, runlog: RunLog,
                 tuning: Tuning | None = None) -> None:
        self.peers = peers
        self.lookups = lookups
        self.limiter = limiter
        self.minter = minter
        self.runlog = runlog
        self.tuning = tuning or Tuning()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session_writes: dict[tuple[str, str], asyncio.Task[Any]] = {}

    # --- admission -----------------------------------------------------------------------------------------------
    async def converse(self, caller: Caller, ask: Ask, *, started: float | None = None,
                       deadline_s: float | None = None) -> RunStream:
        """Admits the request and starts its run; raises RATE_LIMITED (or a confirmation error) before anything
        is accepted. `deadline_s` is the client's own deadline, when shorter than the tenant's."""
        started = time.perf_counter() if started is None else started
        settings = await self.lookups.tenant(caller.tenant)
        verdict = await self.limiter.admit(caller.tenant, caller.user, settings.limits)
        request_id = ask.request_id or uuid.uuid4().hex
        if not verdict.allowed:
            retry_ms = str(int(verdict.retry_after_s * 1000))
            who = self.minter.mint_user(caller.tenant, caller.user, caller.groups, request_id=request_id)
            detail = {"limit": verdict.limit, "retry_after_ms": retry_ms}
            self.background(self._audit(who, "rate_limited", "denied", "RESOURCE_EXHAUSTED",
                                        Reason.RATE_LIMITED.value, detail))
            raise MeshError(Reason.RATE_LIMITED, f"too many requests ({verdict.limit.replace('_', ' ')} of tenant "
                            f"{caller.tenant}); retry after {verdict.retry_after_s:.3f} s", domain=DOMAIN,
                            metadata={"limit": verdict.limit, "retry_after_ms": retry_ms},
                            retry_after_s=verdict.retry_after_s)
        timeout = min(settings.timeout_s, deadline_s) if deadline_s else settings.timeout_s
        if ask.confirmation is not None:
            return await self._start_confirmation(caller, ask, ask.confirmation, request_id, started, timeout)
        run_id = uuid.uuid4().hex
        session_id = ask.session_id or uuid.uuid4().hex
        principal = self.minter.mint_user(caller.tenant, caller.user, caller.groups, deadline_s=timeout,
                                          request_id=request_id, run_id=run_id)
        stream = RunStream(run_id, session_id, request_id)
        meta = RunMeta(caller.user, session_id, ask.text, RUNNING, 0, caller.channel)
        run = _Run(stream, RunWriter(self.runlog, caller.tenant, run_id, meta), 0)
        self.background(self._traced("agentmesh.request", principal, self._run_request(
            caller, principal, ask.text, run, meta, Budget(timeout), started)))
        return stream

    async def _start_confirmation(self, caller: Caller, ask: Ask, answer: Confirmation, request_id: str,
                                  started: float, timeout_s: float) -> RunStream:
        meta = await self.runlog.meta(caller.tenant, answer.run_id)
        if meta is None or meta.owner != caller.user:
            raise MeshError(Reason.NOT_FOUND, f"no run {answer.run_id} of yours is waiting for a confirmation",
                            domain=DOMAIN, metadata={"run_id": answer.run_id},
                            field_violations=[("confirmation.run_id", "not a paused run of this user")])
        if meta.state != PAUSED:
            raise MeshError(Reason.VALIDATION_FAILED, f"run {answer.run_id} is not waiting for a confirmation "
                            f"(it is {meta.state})", domain=DOMAIN,
                            field_violations=[("confirmation.run_id", f"the run is {meta.state}")])
        if answer.step_id not in meta.pending:
            raise MeshError(Reason.VALIDATION_FAILED, f"run {answer.run_id} waits for a confirmation of "
                            f"{', '.join(meta.pending) or 'no step'}, not {answer.step_id}", domain=DOMAIN,
                            field_violations=[("confirmation.step_id", "not a step awaiting confirmation")])
        if not await self.runlog.claim(caller.tenant, answer.run_id, answer.step_id):
            raise MeshError(Reason.VALIDATION_FAILED, f"the confirmation of run {answer.run_id} was already "
                            "answered", domain=DOMAIN,
                            field_violations=[("confirmation.run_id", "already answered")])
        principal = self.minter.mint_user(caller.tenant, caller.user, caller.groups, deadline_s=timeout_s,
                                          request_id=request_id, run_id=answer.run_id)
        session_id = ask.session_id or meta.session_id
        stream = RunStream(answer.run_id, session_id, request_id)
        run = _Run(stream, RunWriter(self.runlog, caller.tenant, answer.run_id), meta.sequence)
        meta = replace(meta, session_id=session_id, state=RUNNING, pending=())
        await self.runlog.save_meta(caller.tenant, answer.run_id, meta)
        self.background(self._traced("agentmesh.confirmation", principal, self._run_confirmation(
            caller, principal, answer, run, meta, Budget(timeout_s), started)))
        return stream

    # --- the request path ------------------------------------------------------------------------------------------
    @staticmethod
    async def _traced(name: str, principal: Principal, work: Coroutine[Any, Any, None]) -> None:
        """One span around a run: a child of the caller's gRPC span, or the root of a Slack request's trace."""
        with _TRACER.start_as_current_span(name, attributes={
                "agentmesh.tenant": principal.tenant, "agentmesh.request_id": principal.request_id,
                "agentmesh.run_id": principal.run_id}):
            await work

    async def _run_request(self, caller: Caller, principal: Principal, text: str,
                           run: _Run, meta: RunMeta, budget: Budget, started: float) -> None:
        timeline = _Timeline(started)
        run.emit(accepted=agent_pb2.Accepted(request_id=principal.request_id, run_id=principal.run_id,
                                             session_id=meta.session_id, trace_id=_trace_id()))
        self.background(self._audit(principal, "request", "allowed", "OK", "",
                                    {"session_id": meta.session_id, "channel": caller.channel,
                                     "key_id": caller.key_id}))
        try:
            await self._session_settled(caller.tenant, meta.session_id)
            async with asyncio.timeout(budget.remaining()):
                context, listing, people = await asyncio.gather(
                    self.peers.build_context(principal, memory_service_pb2.BuildContextRequest(
                        session_id=meta.session_id, request=text, run_id=principal.run_id,
                        budget_tokens=self.tuning.context_budget_tokens), budget.remaining()),
                    self.lookups.tools(principal, budget.remaining()),
                    self.lookups.people(caller.tenant))
                self._write_turn(principal, meta.session_id, common_pb2.Turn(role="user", text=text,
                                                                            run_id=principal.run_id))
                plan = await self._plan(principal, run, timeline, budget, planner_service_pb2.PlanRequest(
                    request=text, tools=listing.tools, denied_tools=listing.denied_tools, context=context.context,
                    people=people.people, people_fingerprint=people.fingerprint,
                    tools_fingerprint=listing.fingerprint))
                usage = common_pb2.Usage()
                add_usage(usage, plan.usage)
                if not plan.steps:
                    await self._finish(caller, principal, run, meta, timeline, budget, text, plan, [],
                                       plan_outcome(plan), usage, context.context)
                    return
                execution = self.peers.execute(principal, executor_service_pb2.ExecuteRequest(
                    run_id=principal.run_id, request=text, plan=plan, context=context.context,
                    max_replans=self.tuning.max_replans), budget.remaining(reserve_s=_respond_reserve(budget)))
                await self._execution(caller, principal, run, meta, timeline, budget, text, plan,
                                      execution, context.context)
        except (MeshError, TimeoutError) as err:
            await self._fail(principal, run, meta, timeline, err)
        except Exception as err:  # a defect: the user still gets a final event
            log.exception("request failed", extra={"fields": {"run_id": principal.run_id}})
            await self._fail(principal, run, meta, timeline, err)

    async def _run_confirmation(self, caller: Caller, principal: Principal,
                                answer: Confirmation, run: _Run, meta: RunMeta, budget: Budget,
                                started: float) -> None:
        timeline = _Timeline(started)
        run.emit(accepted=agent_pb2.Accepted(request_id=principal.request_id, run_id=principal.run_id,
                                             session_id=meta.session_id, trace_id=_trace_id()))
        self.background(self._audit(principal, "confirmation", "allowed", "OK", "",
                                    {"session_id": meta.session_id, "step_id": answer.step_id,
                                     "approved": answer.approved, "channel": caller.channel}))
        try:
            async with asyncio.timeout(budget.remaining()):
                context = await self.peers.build_context(principal, memory_service_pb2.BuildContextRequest(
                    session_id=meta.session_id, request=meta.request, run_id=principal.run_id,
                    budget_tokens=self.tuning.context_budget_tokens), budget.remaining())
                execution = self.peers.confirm(principal, executor_service_pb2.ConfirmStepRequest(
                    run_id=answer.run_id, step_id=answer.step_id, approved=answer.approved),
                    budget.remaining(reserve_s=_respond_reserve(budget)))
                await self._execution(caller, principal, run, meta, timeline, budget, meta.request, None,
                                      execution, context.context)
        except (MeshError, TimeoutError) as err:
            await self._fail(principal, run, meta, timeline, err)
        except Exception as err:
            log.exception("confirmation failed", extra={"fields": {"run_id": principal.run_id}})
            await self._fail(principal, run, meta, timeline, err)

    async def _plan(self, principal: Principal, run: _Run, timeline: _Timeline, budget: Budget,
                    request: planner_service_pb2.PlanRequest) -> common_pb2.Plan:
        began = time.perf_counter()
        plan: common_pb2.Plan | None = None
        async for event in self.peers.plan(principal, request, budget.remaining()):
            if event.HasField("plan"):
                plan = event.plan
            elif event.token_delta:
                run.emit(plan_token=event.token_delta)
        if plan is None:
            raise MeshError(Reason.UPSTREAM_UNAVAILABLE, "the planner ended without a plan", domain=DOMAIN)
        timeline.add_model(plan.usage, time.perf_counter() - began, plan.cached)
        run.emit(plan=plan)
        return plan

    async def _execution(self, caller: Caller, principal: Principal, run: _Run,
                         meta: RunMeta, timeline: _Timeline, budget: Budget, text: str,
                         plan: common_pb2.Plan | None, events: AsyncIterator[executor_service_pb2.ExecuteResponse],
                         context: common_pb2.Context) -> None:
        results: dict[str, common_pb2.StepResult] = {}
        finished: executor_pb2.Run | None = None
        approvals: list[agent_pb2.ApprovalNeeded] = []
        async for event in events:
            kind = event.WhichOneof("event")
            if kind == "step_started":
                s = event.step_started
                run.emit(step_started=agent_pb2.StepStarted(step_id=s.step_id, tool=s.tool, arguments=s.arguments))
            elif kind == "step_finished":
                results[event.step_finished.step_id] = event.step_finished
                run.emit(step_finished=event.step_finished)
            elif kind == "approval_needed":
                # Shown once the run has paused (below), so that an answer never finds it still running.
                a = event.approval_needed
                approvals.append(agent_pb2.ApprovalNeeded(run_id=a.run_id or principal.run_id, step_id=a.step_id,
                                                          tool=a.tool, arguments=a.arguments, prompt=a.prompt))
            elif kind == "plan_revised":
                plan = event.plan_revised
                timeline.add_model(plan.usage)  # the re-plan's model wait (the executor waited for it, no step ran)
                run.emit(plan=plan)
            elif kind == "run_finished":
                finished = event.run_finished.run
        if finished is None:
            raise MeshError(Reason.UPSTREAM_UNAVAILABLE, "the executor ended the run's stream without its end",
                            domain=DOMAIN)
        if approvals or finished.state == executor_pb2.RUN_STATE_AWAITING_APPROVAL:
            await self.runlog.save_meta(caller.tenant, principal.run_id, replace(
                meta, state=PAUSED, sequence=run.sequence + len(approvals),
                pending=tuple(a.step_id for a in approvals) or _awaiting(finished)))
            for approval in approvals:
                run.emit(approval_needed=approval)
            await run.writer.close()
            run.stream.put(None)
            return
        # Only the steps that ran during this request wait on its clock; a confirmation's run also lists those that
        # ran before the pause, in an earlier request.
        timeline.add_steps(list(results.values()))
        for step in finished.steps:
            results.setdefault(step.step_id, step)
        ordered = [results[s.step_id] for s in finished.steps if s.step_id in results] or list(results.values())
        usage = common_pb2.Usage()
        add_usage(usage, finished.usage)
        outcome = finished.outcome or common_pb2.OUTCOME_FAILED
        await self._finish(caller, principal, run, meta, timeline, budget, text,
                           finished.plan if finished.HasField("plan") else plan, ordered, outcome, usage, context)

    async def _finish(self, caller: Caller, principal: Principal, run: _Run, meta: RunMeta, timeline: _Timeline,
                      budget: Budget, text: str, plan: common_pb2.Plan | None, results: list[common_pb2.StepResult],
                      outcome: common_pb2.Outcome, usage: common_pb2.Usage, context: common_pb2.Context) -> None:
        began = time.perf_counter()
        answer_text, parts = "", []
        answer_usage: common_pb2.Usage | None = None
        async for event in self.peers.respond(principal, planner_service_pb2.RespondRequest(
                request=text, plan=plan, results=results, outcome=outcome, context=context), budget.remaining()):
            if event.HasField("answer"):
                answer_text, answer_usage = event.answer.text, event.answer.usage
            elif event.text_delta:
                parts.append(event.text_delta)
                run.emit(answer_token=event.text_delta)
        answer_text = answer_text or "".join(parts)
        if answer_usage is not None:
            add_usage(usage, answer_usage)
            timeline.add_model(answer_usage, time.perf_counter() - began)
        now = time.perf_counter()
        final = agent_pb2.Final(outcome=outcome, text=answer_text, usage=usage, run_id=principal.run_id,
                                overhead=_duration(timeline.overhead_s(now)),
                                duration=_duration(now - timeline.started),
                                steps=[common_pb2.StepTiming(step_id=r.step_id, tool=r.tool, status=r.status,
                                                             latency=r.latency) for r in results])
        self._write_turn(principal, meta.session_id, common_pb2.Turn(role="assistant", text=answer_text or "-",
                                                                    run_id=principal.run_id))
        run.emit(final=final)
        run.stream.put(None)
        self.background(self._after(caller, principal, run, meta, text, results, outcome))

    async def _fail(self, principal: Principal, run: _Run, meta: RunMeta, timeline: _Timeline,
                    err: BaseException) -> None:
        failure = err if isinstance(err, MeshError) else (
            MeshError(Reason.DEADLINE, "the request's deadline ran out", domain=DOMAIN)
            if isinstance(err, TimeoutError) else MeshError(Reason.INTERNAL, "internal error", domain=DOMAIN))
        run.stream.error = failure
        now = time.perf_counter()
        run.emit(error=agent_pb2.Error(code=failure.code.name, reason=failure.reason.value, message=failure.message,
                                       metadata={k: str(v) for k, v in failure.metadata.items()}))
        run.emit(final=agent_pb2.Final(outcome=common_pb2.OUTCOME_FAILED, text=_failure_text(failure),
                                       run_id=principal.run_id, duration=_duration(now - timeline.started),
                                       overhead=_duration(timeline.overhead_s(now))))
        run.stream.put(None)
        await run.writer.close()
        with contextlib.suppress(Exception):
            await self.runlog.save_meta(principal.tenant, principal.run_id, replace(
                meta, state=ENDED, sequence=run.sequence, pending=()))

    # --- after the answer ----------------------------------------------------------------------------------------
    async def _after(self, caller: Caller, principal: Principal, run: _Run, meta: RunMeta, text: str,
                     results: list[common_pb2.StepResult], outcome: common_pb2.Outcome) -> None:
        await run.writer.close()
        await self.runlog.save_meta(caller.tenant, principal.run_id, replace(
            meta, state=ENDED, sequence=run.sequence, pending=()))
        await self.peers.record_run(principal, memory_service_pb2.RecordRunRequest(
            run_id=principal.run_id, request=text[:4000], tools=[r.tool for r in results][:50],
            results=[result_phrase(r) for r in results][:50], outcome=OUTCOME_NAMES.get(outcome, "failed")),
            self.tuning.background_timeout_s)

    def _write_turn(self, principal: Principal, session_id: str, turn: common_pb2.Turn) -> None:
        """Appends a turn in the background; the session's next request waits for it (turns stay in order)."""
        key = (principal.tenant, session_id)
        before = self._session_writes.get(key)

        async def write() -> None:
            if before is not None:
                with contextlib.suppress(Exception):
                    await before
            await self.peers.append_turn(principal, session_id, turn, self.tuning.background_timeout_s)

        task = self.background(write())
        self._session_writes[key] = task
        task.add_done_callback(lambda t: self._session_writes.pop(key, None)
                               if self._session_writes.get(key) is t else None)

    async def _session_settled(self, tenant: str, session_id: str) -> None:
        pending = self._session_writes.get((tenant, session_id))
        if pending is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(pending), 1.0)

    async def _audit(self, principal: Principal, kind: str, outcome: str, code: str, reason: str,
                     detail: dict[str, Any]) -> None:
        event = registry_pb2.AuditEvent(kind=kind, outcome=outcome, code=code, reason=reason, trace_id=_trace_id(),
                                        run_id=principal.run_id, detail=_struct(detail))
        await self.peers.audit(principal, event, self.tuning.background_timeout_s)

    async def audit_refusal(self, tenant: str, user: str, err: MeshError, channel: str) -> None:
        """Audits an authentication refusal for a tenant whose key was good (under the gateway's operator)."""
        event = registry_pb2.AuditEvent(user=user, kind="request_refused", outcome="denied", code=err.code.name,
                                        reason=err.reason.value, trace_id=_trace_id(),
                                        detail=_struct({"cause": err.metadata.get("cause", ""), "channel": channel}))
        await self.peers.audit(self.lookups.operator(tenant), event, self.tuning.background_timeout_s)

    # --- background work ---------------------------------------------------------------------------------------------
    def background(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Runs work that must not hold up the user (audit rows, memory writes); failures are logged."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background work failed: %r", task.exception())

    async def drain(self, timeout_s: float) -> None:
        """Lets running requests and background work finish (then cancels what is left)."""
        if self._tasks:
            _done, pending = await asyncio.wait(list(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()


def _awaiting(run: executor_pb2.Run) -> tuple[str, ...]:
    return tuple(s.step_id for s in run.steps if s.status == common_pb2.STEP_STATUS_AWAITING_APPROVAL)


def _respond_reserve(budget: Budget) -> float:
    """Budget kept back from execution so that the answer can still be written when the steps run long."""
    return min(1.0, budget.remaining() * 0.2)


def _failure_text(err: MeshError) -> str:
    link = err.metadata.get("link_url")
    suffix = f" Link your account: {link}" if link else ""
    return f"The request failed ({err.reason.value}): {err.message}.{suffix}"


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out

