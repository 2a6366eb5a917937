"""The model gateway: a tenant's tier chain, and one model call behind limits, a breaker and retries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from mesh.resilience import BreakerRegistry, BreakerState, RetryPolicy
from planner.config import ModelLimits, ProviderSettings
from planner.model import Deadline
from planner.models.errors import UNHEALTHY
from planner.models.limits import TenantLimiter
from planner.models.metrics import MODEL_CALLS, MODEL_COST, MODEL_LATENCY, MODEL_TOKENS
from planner.models.prices import PriceTable
from planner.models.routing import chain
from planner.models.tenants import EMBEDDED, TenantModels
from planner.models.types import Completion, Delta, ModelEvent, ModelRequest, ModelWait, ProviderError

log = logging.getLogger("agentmesh.planner")
_MIN_ATTEMPT_S = 0.05


class Provider(Protocol):
    """An LLM API behind an SDK: streams Deltas then one Completion, or raises ProviderError."""

    name: str
    kind: str
    settings: ProviderSettings

    def stream(self, request: ModelRequest, model: str, timeout_s: float) -> AsyncGenerator[ModelEvent, None]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Target:
    """One link of a chain: the tier, and the provider and model that serve it."""

    tier: str
    provider: str
    model: str

    @property
    def embedded(self) -> bool:
        return self.provider == EMBEDDED

    @property
    def spec(self) -> str:
        return EMBEDDED if self.embedded else f"{self.provider}:{self.model}"


EMBEDDED_TARGET = Target(EMBEDDED, EMBEDDED, EMBEDDED)


def parse_spec(spec: str) -> tuple[str, str]:
    """`embedded` or `<provider>:<model>` → (provider, model)."""
    spec = spec.strip()
    if spec == EMBEDDED or not spec:
        return EMBEDDED, EMBEDDED
    provider, _, model = spec.partition(":")
    return provider.strip(), model.strip()


def create_provider(name: str, settings: ProviderSettings) -> Provider:
    """The SDK-backed provider for a named configuration."""
    if settings.kind == "anthropic":
        from planner.models.anthropic_provider import AnthropicProvider

        return AnthropicProvider(name, settings)
    from planner.models.openai_provider import OpenAIProvider

    return OpenAIProvider(name, settings)


class ModelGateway:
    """Chains of targets per tenant and resilient calls to providers.

    A chain starts at the routed tier, falls to the cheaper tiers and always ends at the embedded planner; a
    provider with no credentials is skipped. A call is admitted by the tenant's limits, then by the provider's
    circuit breaker (mesh.resilience), and retried with capped jittered backoff while the failure is retryable,
    nothing has streamed yet, and the request's deadline (less a reserve for the embedded fallback) allows.
    """

    def __init__(self, providers: Mapping[str, Provider], prices: PriceTable, breakers: BreakerRegistry,
                 retry: RetryPolicy, limiter: TenantLimiter | None = None, reserve_s: float = 0.3,
                 rng: random.Random | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.providers = dict(providers)
        self.prices = prices
        self.breakers = breakers
        self.retry = retry
        self.limiter = limiter
        self.reserve_s = reserve_s
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._warned: set[str] = set()

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.close()

    def targets(self, models: TenantModels, start: str) -> list[Target]:
        """The chain from tier `start` down, without unconfigured providers or repeats, ending at embedded."""
        out: list[Target] = []
        seen: set[tuple[str, str]] = set()
        for tier in chain(start):
            provider, model = parse_spec(models.tiers.get(tier, EMBEDDED))
            target = Target(tier, provider, model)
            if not target.embedded:
                found = self.providers.get(provider)
                if found is None or not found.settings.configured or not model:
                    if target.spec not in self._warned:
                        self._warned.add(target.spec)
                        log.info("model tier skipped: provider not configured",
                                 extra={"fields": {"tier": tier, "model": target.spec}})
                    continue
            if (target.provider, target.model) in seen:
                continue
            seen.add((target.provider, target.model))
            out.append(target)
        if not out or not out[-1].embedded:
            out = [t for t in out if not t.embedded] + [EMBEDDED_TARGET]
        return out

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        return self.prices.cost(model, input_tokens, output_tokens)

    async def call(self, target: Target, request: ModelRequest, tenant: str, limits: ModelLimits,
                   deadline: Deadline, waited: ModelWait | None = None) -> AsyncGenerator[ModelEvent, None]:
        """One model call: Deltas then a Completion. Raises Exhausted (limits), CircuitOpen (breaker) or
        ProviderError (after retries, or at once when output had already streamed). Each try's time awaiting the
        provider is added to `waited` (the limiter's admission and the backoff between tries are not)."""
        provider = self.providers[target.provider]
        breaker = self.breakers.get(target.provider)
        if breaker.state is BreakerState.OPEN:  # fail fast, before the call counts against the tenant's limits
            breaker.acquire()
        if self.limiter is not None:
            await self.limiter.admit(tenant, limits)
        attempt = 0
        started = time.perf_counter()
        while True:
            attempt += 1
            timeout_s = min(provider.settings.timeout_s, deadline.remaining(self.reserve_s))
            if timeout_s < _MIN_ATTEMPT_S:
                raise ProviderError("DEADLINE_EXCEEDED", f"no time left to call {target.spec}")
            permit = breaker.acquire()
            streamed = False
            try:
                async with contextlib.aclosing(_bounded(provider.stream(request, target.model, timeout_s),
                                                        timeout_s, waited)) as events:
                    async for event in events:
                        if isinstance(event, Delta):
                            streamed = True
                        elif isinstance(event, Completion):
                            self._account(tenant, target, event)
                            if self.limiter is not None:
                                await self.limiter.charge(tenant, event.usage.total)
                        yield event
            except ProviderError as err:
                err.streamed = err.streamed or streamed
                MODEL_CALLS.labels(target.provider, target.model, err.code).inc()
                if err.code in UNHEALTHY:
                    permit.failure()
                else:
                    permit.success()
                delay = None if err.streamed else self.retry.next_delay(
                    attempt, err.code, "", deadline.remaining(self.reserve_s), err.retry_after_s, self._rng)
                log.warning("model call failed", extra={"fields": {
                    "tenant": tenant, "model": target.spec, "attempt": attempt, "code": err.code,
                    "status": err.status, "streamed": err.streamed, "retry_in_s": delay, "error": err.message}})
                if delay is None:
                    raise
                await self._sleep(delay)
                continue
            except BaseException:
                permit.release()
                raise
            permit.success()
            MODEL_CALLS.labels(target.provider, target.model, "ok").inc()
            MODEL_LATENCY.labels(target.provider).observe(time.perf_counter() - started)
            return

    def _account(self, tenant: str, target: Target, completion: Completion) -> None:
        MODEL_TOKENS.labels(target.provider, completion.model, "input").inc(completion.usage.input_tokens)
        MODEL_TOKENS.labels(target.provider, completion.model, "output").inc(completion.usage.output_tokens)
        MODEL_COST.labels(tenant, target.provider).inc(
            self.cost(completion.model, completion.usage.input_tokens, completion.usage.output_tokens))


class _End:
    pass


@dataclass
class _Raised:
    error: Exception


async def _bounded(events: AsyncGenerator[ModelEvent, None], timeout_s: float,
                   waited: ModelWait | None = None) -> AsyncGenerator[ModelEvent, None]:
    """The provider's events, pumped by a task of their own, so that the attempt's time limit applies to the whole
    call (a hung server, a stalled stream) without cancelling the consumer. The pump's time, from sending the
    request until the provider's stream ended, broke or was given up, is added to `waited`: it is the model's time,
    however slowly the consumer reads."""
    queue: asyncio.Queue[ModelEvent | _End | _Raised] = asyncio.Queue()

    async def pump() -> None:
        began = time.perf_counter()
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    queue.put_nowait(event)
            queue.put_nowait(_End())
        except ProviderError as err:
            queue.put_nowait(_Raised(err))
        except Exception as err:  # an SDK or transport failure the provider did not classify
            log.warning("unexpected model call failure", exc_info=err)
            queue.put_nowait(_Raised(ProviderError("UNKNOWN", f"{type(err).__name__}: {err}")))
        finally:
            if waited is not None:
                waited.seconds += time.perf_counter() - began

    loop = asyncio.get_running_loop()
    task = asyncio.create_task(pump())
    ends = loop.time() + timeout_s
    streamed = False
    try:
        while True:
            left = ends - loop.time()
            try:
                if left <= 0:
                    raise TimeoutError
                item = await asyncio.wait_for(queue.get(), left)
            except TimeoutError:
                raise ProviderError("DEADLINE_EXCEEDED", f"no answer within {timeout_s:.2f}s", None,
                                    streamed) from None
            if isinstance(item, _End):
                return
            if isinstance(item, _Raised):
                raise item.error
            if isinstance(item, Delta):
                streamed = True
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
