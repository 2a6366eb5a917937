"""The executor's orchestration over in-process ports: parallelism, references, skips, retries, breakers, re-plans,
approvals, durability order and dead letters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from executor.convert import step_result
from executor.model import (
    ApprovalNeeded,
    Effect,
    Event,
    Outcome,
    Plan,
    PlannedStep,
    PlanRevised,
    Run,
    RunFinished,
    RunStatus,
    StepError,
    StepFinished,
    StepStarted,
    StepStatus,
    idempotency_key,
)
from executor.ports import (
    CatalogQuery,
    InProcessWorkingMemory,
    LeaseLost,
    ReplanRequest,
    StepRecord,
    SystemClock,
    ToolCall,
    ToolFailure,
    ToolInfo,
    ToolReply,
)
from executor.runner import Engine, Limits
from mesh.principal import Principal
from mesh.resilience import Backoff, BreakerPolicy, BreakerState, RetryPolicy

PRINCIPAL = Principal("acme", "alice.nguyen@acme.example", ("Everyone",), "req-1", "run-1", "user",
                      time.time() + 600, "", "token")


class FakeClock:
    """Monotonic time that only moves when someone sleeps (retries, backoff) or the test advances it."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return 1.7e9 + self.t

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)


Outcome_ = ToolReply | StepError | ToolFailure


@dataclass
class Invoker:
    """Answers each tool from a script: a list of replies/errors consumed per call (the last one repeats)."""

    script: dict[str, list[Outcome_]] = field(default_factory=dict)
    delay_s: float = 0.0
    calls: list[ToolCall] = field(default_factory=list)
    on_call: Callable[[ToolCall], None] | None = None

    async def invoke(self, call: ToolCall) -> ToolReply:
        self.calls.append(call)
        if self.on_call:
            self.on_call(call)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        answers = self.script.get(call.tool, [ToolReply({"ok": True}, "done")])
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, StepError):
            raise ToolFailure(answer)
        if isinstance(answer, ToolFailure):
            raise answer
        return answer

    def calls_to(self, tool: str) -> list[ToolCall]:
        return [c for c in self.calls if c.tool == tool]


class Catalog:
    def __init__(self, confirm: tuple[str, ...] = ()) -> None:
        self.confirm = confirm

    async def tools(self, query: CatalogQuery) -> Mapping[str, ToolInfo]:
        names = ["jira.search_issues", "jira.get_issue", "jira.assign_issue", "jira.create_issue",
                 "servicenow.get_incident", "servicenow.create_incident", "okta.get_user", "okta.add_user_to_group"]
        return {n: ToolInfo(Effect.READ if n.split(".")[1].startswith(("get", "search", "list")) else Effect.WRITE,
                            n in self.confirm) for n in names}


class Store:
    """Keeps what was saved, in order, as the PostgreSQL store would."""

    def __init__(self) -> None:
        self.saved: list[tuple[str, str, str]] = []  # (step id, status, key) per step save
        self.runs: list[RunStatus] = []
        self.dead: list[str] = []
        self.lost = False

    async def save_run(self, run: Run) -> None:
        if self.lost:
            raise LeaseLost("gone")
        self.runs.append(run.status)

    async def save_step(self, record: StepRecord) -> None:
        if self.lost:
            raise LeaseLost("gone")
        self.saved.append((record.step.step_id, record.step.status.value, record.step.idempotency_key))

    async def dead_letter(self, run: Run) -> str:
        self.dead.append(run.run_id)
        return f"dl-{run.run_id}"

    async def release(self, run: Run) -> None:
        return None


class Replanner:
    def __init__(self, plans: list[Plan]) -> None:
        self.plans = plans
        self.requests: list[ReplanRequest] = []

    async def replan(self, request: ReplanRequest) -> Plan:
        self.requests.append(request)
        return self.plans.pop(0)


FAST_RETRY = RetryPolicy(max_attempts=4, backoff=Backoff(base_s=0.01, cap_s=0.05), in_flight_wait_s=0.01)


def engine(invoker: Invoker, *, store: Store | None = None, replanner: Replanner | None = None,
           clock: Any = None, confirm: tuple[str, ...] = (), **limits: Any) -> Engine:
    return Engine(invoker=invoker, catalog=Catalog(confirm), store=store or Store(), memory=InProcessWorkingMemory(),
                  replanner=replanner, clock=clock or FakeClock(),
                  limits=Limits(retry=limits.pop("retry", FAST_RETRY), **limits))


def step(step_id: str, tool: str, deps: tuple[str, ...] = (), **arguments: Any) -> PlannedStep:
    return PlannedStep(step_id, tool, arguments, deps)


async def execute(eng: Engine, plan: Plan, *, run_id: str = "run-1", budget_s: float = 5.0,
                  run: Run | None = None, **kwargs: Any) -> tuple[Run, list[Event]]:
    if run is None:
        run = Run("acme", run_id, PRINCIPAL.user, "do it", plan)
        infos = await eng.tool_infos(PRINCIPAL, 1.0)
        run.steps = eng.new_steps(plan, infos, 0)
    active = eng.start(run, PRINCIPAL, budget_s, **kwargs)
    events = [e async for e in active.events()]
    assert isinstance(events[-1], RunFinished)
    return events[-1].run, events


def finished(events: list[Event]) -> dict[str, Any]:
    return {e.step.step_id: e.step for e in events if isinstance(e, StepFinished)}


async def test_three_independent_steps_overlap_in_time() -> None:
    invoker = Invoker(delay_s=0.05)
    plan = Plan(steps=(step("s1", "jira.get_issue", key="A-1"), step("s2", "jira.get_issue", key="A-2"),
                       step("s3", "okta.get_user", user="me")))
    run, events = await execute(engine(invoker, clock=SystemClock()), plan)
    steps = finished(events)
    assert {s.status for s in steps.values()} == {StepStatus.OK}
    assert max(s.started_at for s in steps.values()) < min(s.ended_at for s in steps.values())
    assert run.status is RunStatus.SUCCEEDED and run.outcome is Outcome.ANSWERED


async def test_parallelism_is_bounded_per_run() -> None:
    invoker = Invoker(delay_s=0.03)
    plan = Plan(steps=tuple(step(f"s{i}", "jira.get_issue", key=f"A-{i}") for i in range(4)))
    _, events = await execute(engine(invoker, clock=SystemClock(), max_parallel_per_run=2), plan)
    spans = sorted((s.started_at, s.ended_at) for s in finished(events).values())
    # With two slots the third step cannot start before one of the first two ended.
    assert spans[2][0] >= min(spans[0][1], spans[1][1])


async def test_references_are_resolved_from_earlier_outputs() -> None:
    invoker = Invoker(script={
        "jira.search_issues": [ToolReply({"issues": [{"key": "ENG-7", "summary": "flaky"}]}, "1 issue")],
        "jira.assign_issue": [ToolReply({"key": "ENG-7"}, "assigned",
                                        arguments={"key": "ENG-7", "assignee": "alice.nguyen@acme.example"})]})
    plan = Plan(steps=(step("s1", "jira.search_issues", text="flaky"),
                       step("s2", "jira.assign_issue", key="{{steps.s1.issues.key}}", assignee="me")))
    run, events = await execute(engine(invoker), plan)
    assert invoker.calls_to("jira.assign_issue")[0].arguments == {"key": "ENG-7", "assignee": "me"}
    assert finished(events)["s2"].arguments == {"key": "ENG-7", "assignee": "alice.nguyen@acme.example"}
    assert run.outcome is Outcome.ANSWERED


async def test_ambiguous_reference_fails_the_step_with_candidates() -> None:
    invoker = Invoker(script={"jira.search_issues": [
        ToolReply({"issues": [{"key": "ENG-1"}, {"key": "ENG-2"}]}, "2 issues")]})
    plan = Plan(steps=(step("s1", "jira.search_issues", text="checkout"),
                       step("s2", "jira.assign_issue", key="{{steps.s1.issues.key}}", assignee="me")))
    run, events = await execute(engine(invoker), plan)
    s2 = finished(events)["s2"]
    assert s2.status is StepStatus.FAILED and s2.error.reason == "AMBIGUOUS_REFERENCE"
    assert s2.error.metadata["candidates"] == "ENG-1, ENG-2"
    assert not invoker.calls_to("jira.assign_issue")
    assert run.outcome is Outcome.NO_ACTION


async def test_a_failed_step_skips_its_dependents_and_the_rest_goes_on() -> None:
    invoker = Invoker(script={"jira.get_issue": [StepError("NOT_FOUND", "NOT_FOUND", "no ENG-404")]})
    plan = Plan(steps=(step("s1", "jira.get_issue", key="ENG-404"),
                       step("s2", "jira.assign_issue", ("s1",), key="ENG-404", assignee="me"),
                       step("s3", "jira.create_issue", ("s2",), project="ENG", summary="x"),
                       step("s4", "okta.get_user", user="me")))
    run, events = await execute(engine(invoker), plan)
    steps = finished(events)
    assert steps["s1"].status is StepStatus.FAILED
    assert steps["s2"].status is StepStatus.SKIPPED and steps["s2"].error.metadata["dependency"] == "s1"
    assert steps["s3"].status is StepStatus.SKIPPED and steps["s3"].error.metadata["dependency"] == "s2"
    assert steps["s4"].status is StepStatus.OK
    assert run.outcome is Outcome.FAILED and run.status is RunStatus.COMPLETED


async def test_retry_then_success_keeps_the_idempotency_key() -> None:
    unavailable = StepError("UNAVAILABLE", "UPSTREAM_UNAVAILABLE", "503")
    invoker = Invoker(script={"servicenow.create_incident": [unavailable, unavailable,
                                                             ToolReply({"number": "INC1"}, "created")]})
    clock = FakeClock()
    plan = Plan(steps=(step("s1", "servicenow.create_incident", short_description="VPN"),))
    run, events = await execute(engine(invoker, clock=clock), plan)
    s1 = finished(events)["s1"]
    assert s1.status is StepStatus.OK and s1.attempts == 3
    keys = {c.idempotency_key for c in invoker.calls}
    assert keys == {idempotency_key("acme", "run-1", "s1")} and len(invoker.calls) == 3
    assert [e.attempt for e in events if isinstance(e, StepStarted)] == [1, 2, 3]
    assert len(clock.sleeps) == 2 and all(0 <= d <= FAST_RETRY.backoff.cap_s for d in clock.sleeps)


async def test_no_retry_on_permission_denied() -> None:
    invoker = Invoker(script={"jira.create_issue": [StepError("PERMISSION_DENIED", "VENDOR_DENIED", "403")]})
    run, events = await execute(engine(invoker), Plan(steps=(step("s1", "jira.create_issue", project="OPS"),)))
    s1 = finished(events)["s1"]
    assert s1.status is StepStatus.DENIED and s1.attempts == 1 and len(invoker.calls) == 1
    assert run.outcome is Outcome.DENIED and not run.dead_letter_id


async def test_rate_limit_waits_at_least_the_retry_info_delay() -> None:
    limited = StepError("RESOURCE_EXHAUSTED", "RATE_LIMITED", "429", retry_after_s=1.5)
    invoker = Invoker(script={"jira.get_issue": [limited, ToolReply({"key": "A"}, "ok")]})
    clock = FakeClock()
    _, events = await execute(engine(invoker, clock=clock), Plan(steps=(step("s1", "jira.get_issue", key="A"),)))
    assert finished(events)["s1"].status is StepStatus.OK
    assert clock.sleeps == [1.5]


async def test_a_steps_vendor_wait_sums_its_attempts_but_not_the_backoff() -> None:
    clock = FakeClock()
    limited = StepError("RESOURCE_EXHAUSTED", "RATE_LIMITED", "429", retry_after_s=1.5)
    invoker = Invoker(script={
        # The first call fails after 0.2 s of vendor time, the second answers after 0.25 s.
        "jira.get_issue": [ToolFailure(limited, vendor_wait_s=0.2), ToolReply({"key": "A"}, "ok", vendor_wait_s=0.25)],
        # A registry that reports no figure: the whole call counts.
        "okta.get_user": [ToolReply({"id": "u1"}, "ok")],
        # A figure larger than the call itself is bounded by the call.
        "servicenow.get_incident": [ToolReply({"number": "INC1"}, "ok", vendor_wait_s=7.0)]},
        on_call=lambda call: setattr(clock, "t", clock.t + 0.3))  # every call takes 0.3 s
    plan = Plan(steps=(step("s1", "jira.get_issue", key="A"), step("s2", "okta.get_user", ("s1",), user="me"),
                       step("s3", "servicenow.get_incident", ("s2",), number="INC1")))
    _, events = await execute(engine(invoker, clock=clock), plan)
    steps = finished(events)
    s1 = steps["s1"]
    assert s1.status is StepStatus.OK and s1.attempts == 2 and clock.sleeps == [1.5]
    assert s1.latency_s == pytest.approx(0.3 + 1.5 + 0.3)
    assert s1.vendor_wait_s == pytest.approx(0.45)
    assert step_result(s1).vendor_wait.ToNanoseconds() == 450_000_000
    assert steps["s2"].vendor_wait_s == pytest.approx(0.3) and steps["s3"].vendor_wait_s == pytest.approx(0.3)


async def test_a_step_that_makes_no_call_reports_no_vendor_wait() -> None:
    invoker = Invoker(script={"jira.get_issue": [StepError("NOT_FOUND", "NOT_FOUND", "no A-1")]})
    plan = Plan(steps=(step("s1", "jira.get_issue", key="A-1"),
                       step("s2", "jira.assign_issue", ("s1",), key="A-1", assignee="me")))
    _, events = await execute(engine(invoker), plan)
    s1, s2 = finished(events)["s1"], finished(events)["s2"]
    assert s1.vendor_wait_s == 0.0  # called; the fake clock did not move
    assert s2.status is StepStatus.SKIPPED and s2.vendor_wait_s is None
    assert not step_result(s2).HasField("vendor_wait") and step_result(s1).HasField("vendor_wait")


async def test_in_flight_key_is_retried_after_a_short_wait() -> None:
    in_flight = StepError("ABORTED", "IDEMPOTENCY_KEY_IN_FLIGHT", "in flight")
    invoker = Invoker(script={"jira.create_issue": [in_flight, ToolReply({"key": "ENG-9"}, "created")]})
    _, events = await execute(engine(invoker), Plan(steps=(step("s1", "jira.create_issue", project="ENG"),)))
    assert finished(events)["s1"].attempts == 2


async def test_retries_stop_before_the_deadline_and_a_write_left_undone_is_dead_lettered() -> None:
    invoker = Invoker(script={"jira.create_issue": [StepError("UNAVAILABLE", "UPSTREAM_UNAVAILABLE", "503")]})
    clock, store = FakeClock(), Store()
    slow_retry = RetryPolicy(max_attempts=50, backoff=Backoff(base_s=0.2, cap_s=0.4))
    start = clock.monotonic()
    run, events = await execute(engine(invoker, clock=clock, store=store, retry=slow_retry),
                                Plan(steps=(step("s1", "jira.create_issue", project="ENG"),)), budget_s=1.0)
    assert clock.monotonic() - start < 1.0
    assert 1 < finished(events)["s1"].attempts < 50
    assert run.status is RunStatus.DEAD_LETTERED and store.dead == ["run-1"]
    assert run.dead_letter_id in run.error.message and run.outcome is Outcome.FAILED


async def test_breaker_opens_under_full_failure_then_closes_after_a_half_open_probe() -> None:
    clock = FakeClock()
    down = StepError("UNAVAILABLE", "UPSTREAM_UNAVAILABLE", "503")
    invoker = Invoker(script={"jira.get_issue": [down]})
    eng = engine(invoker, clock=clock, retry=RetryPolicy(max_attempts=1),
                 breaker=BreakerPolicy(failure_rate=0.5, min_calls=3, window_s=60, cooldown_s=30))
    plan = Plan(steps=(step("s1", "jira.get_issue", key="A"),))
    for i in range(3):
        await execute(eng, plan, run_id=f"r{i}")
    assert eng.breakers.get(("acme", "jira")).state is BreakerState.OPEN
    run, events = await execute(eng, plan, run_id="r-open")
    s1 = finished(events)["s1"]
    assert s1.error.reason == "CIRCUIT_OPEN" and s1.error.code == "UNAVAILABLE" and s1.attempts == 0
    assert len(invoker.calls) == 3  # the open breaker did not call
    assert eng.breakers.get(("acme", "okta")).state is BreakerState.CLOSED  # per (tenant, connector)
    clock.t += 30
    invoker.script["jira.get_issue"] = [ToolReply({"key": "A"}, "ok")]
    run, events = await execute(eng, plan, run_id="r-probe")
    assert finished(events)["s1"].status is StepStatus.OK
    assert eng.breakers.get(("acme", "jira")).state is BreakerState.CLOSED


async def test_retries_absorbing_a_flaky_system_do_not_open_its_breaker() -> None:
    down = StepError("UNAVAILABLE", "UPSTREAM_UNAVAILABLE", "503")
    invoker = Invoker(script={"jira.get_issue": [down, down, ToolReply({"key": "A"}, "ok")] * 20})
    eng = engine(invoker, breaker=BreakerPolicy(failure_rate=0.5, min_calls=3, window_s=60, cooldown_s=30))
    for i in range(6):
        run, _ = await execute(eng, Plan(steps=(step("s1", "jira.get_issue", key="A"),)), run_id=f"f{i}")
        assert run.steps["s1"].status is StepStatus.OK and run.steps["s1"].attempts == 3
    assert eng.breakers.get(("acme", "jira")).state is BreakerState.CLOSED


async def test_replan_after_not_found_gives_changed_steps_new_ids_and_keeps_what_ran() -> None:
    invoker = Invoker(script={"okta.get_user": [ToolReply({"name": "Alice"}, "alice")],
                              "servicenow.get_incident": [StepError("NOT_FOUND", "NOT_FOUND", "no INC9"),
                                                          ToolReply({"number": "INC1"}, "found")]})
    first = Plan(steps=(step("s1", "okta.get_user", user="me"), step("s2", "servicenow.get_incident", number="INC9")))
    revised = Plan(steps=(step("s1", "okta.get_user", user="me"), step("s2", "servicenow.get_incident", number="INC1")))
    replanner = Replanner([revised])
    run, events = await execute(engine(invoker, replanner=replanner), first)
    assert len(replanner.requests) == 1
    observed = {s.step_id: s.status for s in replanner.requests[0].observations}
    assert observed == {"s1": StepStatus.OK, "s2": StepStatus.FAILED}
    [revision] = [e.plan for e in events if isinstance(e, PlanRevised)]
    assert [s.id for s in revision.steps] == ["s1", "s2-r1"] and revision.round == 1
    assert len(invoker.calls_to("okta.get_user")) == 1  # kept, not run again
    assert finished(events)["s2-r1"].status is StepStatus.OK
    assert run.outcome is Outcome.ANSWERED and run.steps["s2"].status is StepStatus.FAILED


async def test_replan_rounds_are_capped() -> None:
    invoker = Invoker(script={"servicenow.get_incident": [StepError("NOT_FOUND", "NOT_FOUND", "none")]})
    replanner = Replanner([Plan(steps=(step(f"s{i}", "servicenow.get_incident", number=f"INC{i}"),))
                           for i in range(5)])
    run, _ = await execute(engine(invoker, replanner=replanner),
                           Plan(steps=(step("s0", "servicenow.get_incident", number="INC0"),)))
    assert len(replanner.requests) == run.max_replans == 2
    assert run.outcome is Outcome.FAILED


async def test_confirmation_pauses_then_approval_resumes() -> None:
    store = Store()
    eng = engine(Invoker(), store=store, confirm=("okta.add_user_to_group",))
    plan = Plan(steps=(step("s1", "okta.add_user_to_group", group="Sales", user="me"),
                       step("s2", "okta.get_user", ("s1",), user="me")))
    run, events = await execute(eng, plan)
    [ask] = [e for e in events if isinstance(e, ApprovalNeeded)]
    assert ask.step_id == "s1" and ask.arguments == {"group": "Sales", "user": "me"}
    assert run.status is RunStatus.AWAITING_APPROVAL and store.runs[-1] is RunStatus.AWAITING_APPROVAL
    assert run.steps["s1"].status is StepStatus.AWAITING_APPROVAL and not eng.invoker.calls  # type: ignore[attr-defined]
    run.steps["s1"].approved = True
    run.status = RunStatus.RUNNING
    run, events = await execute(eng, plan, run=run)
    assert {k: s.status for k, s in finished(events).items()} == {"s1": StepStatus.OK, "s2": StepStatus.OK}
    assert run.outcome is Outcome.ANSWERED


async def test_declined_confirmation_skips_and_ends_with_no_action() -> None:
    eng = engine(Invoker(), confirm=("okta.add_user_to_group",))
    plan = Plan(steps=(step("s1", "okta.add_user_to_group", group="Sales", user="me"),))
    run, _ = await execute(eng, plan)
    s1 = run.steps["s1"]
    s1.status, s1.error = StepStatus.SKIPPED, StepError("FAILED_PRECONDITION", "CONFIRMATION_DECLINED", "declined")
    run, _ = await execute(eng, plan, run=run)
    assert run.outcome is Outcome.NO_ACTION and run.status is RunStatus.COMPLETED


async def test_a_write_is_saved_with_its_key_before_it_is_attempted() -> None:
    store = Store()
    seen: list[list[tuple[str, str, str]]] = []
    invoker = Invoker(on_call=lambda call: seen.append(list(store.saved)))
    await execute(engine(invoker, store=store),
                  Plan(steps=(step("s1", "jira.create_issue", project="ENG", summary="x"),)))
    key = idempotency_key("acme", "run-1", "s1")
    assert seen[0][-1] == ("s1", "RUNNING", key)
    assert store.saved[-1] == ("s1", "OK", key)


async def test_a_resumed_step_is_resent_with_its_saved_arguments_and_key() -> None:
    invoker = Invoker()
    eng = engine(invoker)
    plan = Plan(steps=(step("s1", "jira.create_issue", project="ENG", summary="{{steps.s0.x}}"),))
    run = Run("acme", "run-9", PRINCIPAL.user, "again", plan)
    run.steps = eng.new_steps(plan, await eng.tool_infos(PRINCIPAL, 1), 0)
    s1 = run.steps["s1"]
    s1.status, s1.arguments, s1.attempts = StepStatus.RUNNING, {"project": "ENG", "summary": "as sent"}, 1
    s1.idempotency_key = idempotency_key("acme", "run-9", "s1")
    run, _ = await execute(eng, plan, run=run)
    [call] = invoker.calls
    assert call.arguments == {"project": "ENG", "summary": "as sent"} and call.idempotency_key == s1.idempotency_key
    assert run.steps["s1"].attempts == 2


async def test_cancel_skips_steps_not_started() -> None:
    run, events = await execute(engine(Invoker()), Plan(steps=(step("s1", "jira.get_issue", key="A"),)),
                                cancelled=True)
    assert finished(events)["s1"].error.reason == "CANCELLED"
    assert run.status is RunStatus.CANCELLED and run.outcome is Outcome.NO_ACTION


async def test_a_lost_lease_stops_the_run_and_tells_the_listener() -> None:
    store = Store()
    eng = engine(Invoker(on_call=lambda _: setattr(store, "lost", True)), store=store)
    run = Run("acme", "run-1", PRINCIPAL.user, "x", Plan(steps=(step("s1", "jira.get_issue", key="A"),)))
    run.steps = eng.new_steps(run.plan, await eng.tool_infos(PRINCIPAL, 1), 0)
    active = eng.start(run, PRINCIPAL, 5.0)
    with pytest.raises(LeaseLost):
        async for _ in active.events():
            pass


async def test_tenant_slots_are_shared_by_runs_of_the_tenant() -> None:
    invoker = Invoker(delay_s=0.03)
    eng = engine(invoker, clock=SystemClock(), max_parallel_per_tenant=1)
    plan = Plan(steps=(step("s1", "jira.get_issue", key="A"),))
    results = await asyncio.gather(*(execute(eng, plan, run_id=f"t{i}") for i in range(2)))
    spans = sorted((r.steps["s1"].started_at, r.steps["s1"].ended_at) for r, _ in results)
    assert spans[1][0] >= spans[0][1]
