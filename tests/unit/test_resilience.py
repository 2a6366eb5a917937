"""The shared circuit breaker, backoff and retry classification (mesh/resilience.py), on a fake clock."""

from __future__ import annotations

import random

import pytest

from mesh.resilience import (
    Backoff,
    BreakerPolicy,
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
    RetryPolicy,
    counts_against_breaker,
    is_retryable,
)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


POLICY = BreakerPolicy(failure_rate=0.5, min_calls=4, window_s=10.0, cooldown_s=5.0, half_open_probes=1)


def _fail(breaker: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        breaker.acquire().failure()


def test_breaker_opens_under_full_failure_and_fails_fast() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(("acme", "jira"), POLICY, clock)
    _fail(breaker, 3)
    assert breaker.state is BreakerState.CLOSED  # below min_calls
    _fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen) as info:
        breaker.acquire()
    assert info.value.retry_after_s == pytest.approx(5.0)
    clock.t += 2
    with pytest.raises(CircuitOpen) as info:
        breaker.acquire()
    assert info.value.retry_after_s == pytest.approx(3.0)


def test_breaker_stays_closed_below_the_failure_rate() -> None:
    breaker = CircuitBreaker("k", POLICY, FakeClock())
    for _ in range(10):
        breaker.acquire().success()
        breaker.acquire().success()
        breaker.acquire().failure()
    assert breaker.state is BreakerState.CLOSED


def test_failures_outside_the_window_do_not_count() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("k", POLICY, clock)
    _fail(breaker, 3)
    clock.t += 11
    for _ in range(3):
        breaker.acquire().success()
    _fail(breaker, 1)
    assert breaker.state is BreakerState.CLOSED  # 1 failure of 4 in the window


def test_half_open_probe_success_closes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("k", POLICY, clock)
    _fail(breaker, 4)
    clock.t += 5
    assert breaker.state is BreakerState.HALF_OPEN
    probe = breaker.acquire()
    assert probe.probe
    with pytest.raises(CircuitOpen):
        breaker.acquire()  # only one probe at a time
    probe.success()
    assert breaker.state is BreakerState.CLOSED
    breaker.acquire().success()


def test_half_open_probe_failure_reopens_for_a_full_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("k", POLICY, clock)
    _fail(breaker, 4)
    clock.t += 5
    breaker.acquire().failure()
    assert breaker.state is BreakerState.OPEN
    clock.t += 4.9
    assert breaker.state is BreakerState.OPEN
    clock.t += 0.1
    assert breaker.state is BreakerState.HALF_OPEN


def test_released_probe_frees_its_slot_without_a_verdict() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("k", POLICY, clock)
    _fail(breaker, 4)
    clock.t += 5
    breaker.acquire().release()
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.acquire().success()
    assert breaker.state is BreakerState.CLOSED


def test_verdicts_of_calls_admitted_before_a_transition_are_ignored() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("k", POLICY, clock)
    slow = breaker.acquire()
    _fail(breaker, 4)
    clock.t += 5
    probe = breaker.acquire()
    slow.success()  # admitted while CLOSED: says nothing about the half-open probe
    assert breaker.state is BreakerState.HALF_OPEN
    probe.failure()
    assert breaker.state is BreakerState.OPEN


async def test_guard_counts_only_health_failures() -> None:
    breaker = CircuitBreaker("k", POLICY, FakeClock())

    class Refused(Exception):
        pass

    for _ in range(6):
        with pytest.raises(Refused):
            async with breaker.guard(lambda err: not isinstance(err, Refused)):
                raise Refused
    assert breaker.state is BreakerState.CLOSED  # refusals prove the peer answered: 6 successes
    for _ in range(6):
        with pytest.raises(RuntimeError):
            async with breaker.guard():
                raise RuntimeError
    assert breaker.state is BreakerState.OPEN


def test_registry_keeps_one_breaker_per_key() -> None:
    registry = BreakerRegistry(POLICY, FakeClock())
    a = registry.get(("acme", "jira"))
    _fail(a, 4)
    assert registry.get(("acme", "jira")) is a
    assert registry.get(("globex", "jira")).state is BreakerState.CLOSED
    assert registry.states() == {("acme", "jira"): BreakerState.OPEN, ("globex", "jira"): BreakerState.CLOSED}


@pytest.mark.parametrize(("code", "reason", "retry"), [
    ("UNAVAILABLE", "UPSTREAM_UNAVAILABLE", True),
    ("UNAVAILABLE", "", True),
    ("UNAVAILABLE", "CIRCUIT_OPEN", False),
    ("RESOURCE_EXHAUSTED", "RATE_LIMITED", True),
    ("ABORTED", "IDEMPOTENCY_KEY_IN_FLIGHT", True),
    ("ABORTED", "VENDOR_CONFLICT", False),
    ("INVALID_ARGUMENT", "VALIDATION_FAILED", False),
    ("PERMISSION_DENIED", "POLICY_DENIED", False),
    ("NOT_FOUND", "NOT_FOUND", False),
    ("FAILED_PRECONDITION", "AMBIGUOUS_PERSON", False),
    ("DEADLINE_EXCEEDED", "DEADLINE", False),
    ("INTERNAL", "INTERNAL", False),
])
def test_retry_classification(code: str, reason: str, retry: bool) -> None:
    assert is_retryable(code, reason) is retry


def test_only_unhealthy_answers_count_against_a_breaker() -> None:
    assert counts_against_breaker("UNAVAILABLE", "UPSTREAM_UNAVAILABLE")
    assert counts_against_breaker("DEADLINE_EXCEEDED")
    assert not counts_against_breaker("UNAVAILABLE", "CIRCUIT_OPEN")
    assert not counts_against_breaker("PERMISSION_DENIED", "VENDOR_DENIED")
    assert not counts_against_breaker("NOT_FOUND")


def test_backoff_is_capped_full_jitter() -> None:
    backoff = Backoff(base_s=0.1, cap_s=0.5)
    assert [backoff.ceiling(n) for n in (1, 2, 3, 4, 5)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    rng = random.Random(7)
    delays = [backoff.delay(4, rng) for _ in range(500)]
    assert 0 <= min(delays) < 0.05 and 0.45 < max(delays) <= 0.5  # spread over [0, cap]


def test_retry_delay_honours_retry_info_and_the_deadline() -> None:
    policy = RetryPolicy(max_attempts=4, backoff=Backoff(base_s=0.01, cap_s=0.02))
    rng = random.Random(1)
    assert policy.next_delay(1, "RESOURCE_EXHAUSTED", "RATE_LIMITED", 5.0, retry_after_s=1.5, rng=rng) == 1.5
    assert policy.next_delay(1, "RESOURCE_EXHAUSTED", "RATE_LIMITED", 1.0, retry_after_s=1.5, rng=rng) is None
    assert policy.next_delay(1, "UNAVAILABLE", "", 0.001, rng=rng) is None
    assert policy.next_delay(4, "UNAVAILABLE", "", 5.0, rng=rng) is None  # attempts exhausted
    assert policy.next_delay(1, "PERMISSION_DENIED", "POLICY_DENIED", 5.0, rng=rng) is None
    delay = policy.next_delay(1, "ABORTED", "IDEMPOTENCY_KEY_IN_FLIGHT", 5.0, rng=rng)
    assert delay is not None and policy.in_flight_wait_s <= delay <= 2 * policy.in_flight_wait_s
    # Waiting for the first call with the key is bounded by the deadline, not by the attempts.
    assert policy.next_delay(40, "ABORTED", "IDEMPOTENCY_KEY_IN_FLIGHT", 5.0, rng=rng) is not None
    assert policy.next_delay(40, "ABORTED", "IDEMPOTENCY_KEY_IN_FLIGHT", 0.05, rng=rng) is None
