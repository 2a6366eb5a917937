"""Resilience for every caller of a flaky peer: circuit breakers, capped jittered backoff, retry classification."""

from __future__ import annotations

import enum
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass

# Hand-written: the async breaker libraries on PyPI (aiobreaker, purgatory, pybreaker's async mode) either count
# consecutive failures instead of a failure rate over a sliding window, lack bounded half-open probes, cannot take an
# injectable clock, or are unmaintained; tenacity (backoff) is not a project dependency. The state machine is small.

Clock = Callable[[], float]

# gRPC status code names (strings, so that domain code using this module imports no gRPC).
_ALWAYS_RETRYABLE = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED"})
# A breaker counts these as the peer being unhealthy; every other answer proves the peer is up.
_UNHEALTHY = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN"})


def is_retryable(code: str, reason: str = "") -> bool:
    """Whether a failed call may be retried: UNAVAILABLE (except an open breaker, which must fail fast),
    RESOURCE_EXHAUSTED (after its RetryInfo delay), and ABORTED only for IDEMPOTENCY_KEY_IN_FLIGHT. Never
    INVALID_ARGUMENT, PERMISSION_DENIED, NOT_FOUND, FAILED_PRECONDITION or DEADLINE_EXCEEDED."""
    if code == "UNAVAILABLE":
        return reason != "CIRCUIT_OPEN"
    if code in _ALWAYS_RETRYABLE:
        return True
    return code == "ABORTED" and reason == "IDEMPOTENCY_KEY_IN_FLIGHT"


def counts_against_breaker(code: str, reason: str = "") -> bool:
    """Whether a failure says the peer is unhealthy (as opposed to refusing this particular call)."""
    return code in _UNHEALTHY and reason != "CIRCUIT_OPEN"


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with full jitter: retry n waits uniform(0, min(cap, base * multiplier**(n-1)))."""

    base_s: float = 0.05
    cap_s: float = 2.0
    multiplier: float = 2.0

    def ceiling(self, retry: int) -> float:
        return min(self.cap_s, self.base_s * self.multiplier ** max(retry - 1, 0))

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        return (rng or random).uniform(0.0, self.ceiling(retry))


@dataclass(frozen=True)
class RetryPolicy:
    """When to retry a failed call and after how long, never past the caller's deadline."""

    max_attempts: int = 4
    backoff: Backoff = Backoff()
    in_flight_wait_s: float = 0.1  # IDEMPOTENCY_KEY_IN_FLIGHT: the first call is still running; wait a little

    def next_delay(self, attempt: int, code: str, reason: str, remaining_s: float,
                   retry_after_s: float | None = None, rng: random.Random | None = None) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up (not retryable, attempts exhausted,
        or the wait would not fit in `remaining_s`). A server's RetryInfo is a lower bound. A call refused because
        the first call with its idempotency key is still in flight is no failure: it waits for that call (whose
        claim ends with its own deadline) as long as the deadline allows, whatever the attempt count."""
        if not is_retryable(code, reason):
            return None
        if code == "ABORTED":
            delay = self.in_flight_wait_s * (1.0 + (rng or random).random())
        elif attempt >= self.max_attempts:
            return None
        else:
            delay = self.backoff.delay(attempt, rng)
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        if delay >= remaining_s:
            return None
        return delay


class BreakerState(enum.StrEnum):
    """CLOSED lets calls through; OPEN fails them at once; HALF_OPEN lets a bounded number of probes through."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    """CLOSED → OPEN when at least `min_calls` calls in the last `window_s` seconds failed at `failure_rate` or
    more; OPEN → HALF_OPEN after `cooldown_s`; HALF_OPEN admits `half_open_probes` calls at a time: that many
    successes close the breaker, one failure opens it again."""

    failure_rate: float = 0.5
    min_calls: int = 5
    window_s: float = 30.0
    cooldown_s: float = 10.0
    half_open_probes: int = 1


class CircuitOpen(Exception):
    """The breaker refused the call; `retry_after_s` is when it will next let a probe through."""

    def __init__(self, key: Hashable, retry_after_s: float) -> None:
        super().__init__(f"circuit {key!r} is open; next probe in {retry_after_s:.1f}s")
        self.key = key
        self.retry_after_s = retry_after_s


class Permit:
    """One admitted call. Report exactly one of success(), failure() or release() (no verdict, e.g. cancelled)."""

    def __init__(self, breaker: CircuitBreaker, generation: int, probe: bool) -> None:
        self._breaker = breaker
        self._generation = generation
        self.probe = probe
        self._done = False

    def success(self) -> None:
        self._report(True)

    def failure(self) -> None:
        self._report(False)

    def release(self) -> None:
        self._report(None)

    def _report(self, ok: bool | None) -> None:
        if not self._done:
            self._done = True
            self._breaker._settle(self, self._generation, ok)


class CircuitBreaker:
    """A failure-rate circuit breaker for asyncio callers (single event loop: no locks needed)."""

    def __init__(self, key: Hashable, policy: BreakerPolicy | None = None, clock: Clock = time.monotonic) -> None:
        self.key = key
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._generation = 0  # bumped on every transition, so verdicts of calls admitted earlier are ignored
        self._window: deque[tuple[float, bool]] = deque()
        self._opened_at = 0.0
        self._probes_in_flight = 0
        self._probe_successes = 0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.policy.cooldown_s:
            self._transition(BreakerState.HALF_OPEN)
        return self._state

    def acquire(self) -> Permit:
        """Admits a call or raises CircuitOpen."""
        state = self.state
        if state is BreakerState.OPEN:
            raise CircuitOpen(self.key, self.policy.cooldown_s - (self._clock() - self._opened_at))
        if state is BreakerState.HALF_OPEN:
            if self._probes_in_flight >= self.policy.half_open_probes:
                raise CircuitOpen(self.key, 0.0)
            self._probes_in_flight += 1
            return Permit(self, self._generation, probe=True)
        return Permit(self, self._generation, probe=False)

    @asynccontextmanager
    async def guard(self, is_failure: Callable[[BaseException], bool] = lambda _: True) -> AsyncIterator[Permit]:
        """`async with breaker.guard(): ...` — success unless the body raises an exception `is_failure` accepts;
        other exceptions prove the peer answered (success); cancellation gives no verdict."""
        permit = self.acquire()
        try:
            yield permit
        except Exception as err:
            if is_failure(err):
                permit.failure()
            else:
                permit.success()
            raise
        except BaseException:
            permit.release()
            raise
        permit.success()

    def _settle(self, permit: Permit, generation: int, ok: bool | None) -> None:
        if permit.probe and generation == self._generation:
            self._probes_in_flight -= 1
        if ok is None or generation != self._generation:
            return
        if self._state is BreakerState.HALF_OPEN:
            if not ok:
                self._transition(BreakerState.OPEN)
                return
            self._probe_successes += 1
            if self._probe_successes >= self.policy.half_open_probes:
                self._transition(BreakerState.CLOSED)
            return
        now = self._clock()
        self._window.append((now, ok))
        while self._window and now - self._window[0][0] > self.policy.window_s:
            self._window.popleft()
        failures = sum(1 for _, good in self._window if not good)
        if len(self._window) >= self.policy.min_calls and failures / len(self._window) >= self.policy.failure_rate:
            self._transition(BreakerState.OPEN)

    def _transition(self, state: BreakerState) -> None:
        self._state = state
        self._generation += 1
        self._window.clear()
        self._probes_in_flight = 0
        self._probe_successes = 0
        if state is BreakerState.OPEN:
            self._opened_at = self._clock()


class BreakerRegistry:
    """One breaker per key, e.g. (tenant, connector), created on first use with a shared policy and clock."""

    def __init__(self, policy: BreakerPolicy | None = None, clock: Clock = time.monotonic) -> None:
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._breakers: dict[Hashable, CircuitBreaker] = {}

    def get(self, key: Hashable) -> CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(key, self.policy, self._clock)
        return breaker

    def states(self) -> dict[Hashable, BreakerState]:
        return {key: breaker.state for key, breaker in self._breakers.items()}
