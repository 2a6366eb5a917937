"""Per-tenant model limits in Redis: LLM calls per minute and tokens per UTC day (keys hash-tagged by tenant)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as redis
from redis.exceptions import RedisError

from planner.config import ModelLimits

log = logging.getLogger("agentmesh.planner")
_WINDOW_S = 60
_DAY_S = 86400


@dataclass
class Exhausted(Exception):
    """A tenant limit ran out: `reason` RATE_LIMITED or BUDGET_EXHAUSTED, retry after `retry_after_s`."""

    reason: str
    message: str
    retry_after_s: float

    def __post_init__(self) -> None:
        super().__init__(self.message)


def _calls_key(tenant: str, window: int) -> str:
    return f"planner:{{{tenant}}}:calls:{window}"


def _tokens_key(tenant: str, day: str) -> str:
    return f"planner:{{{tenant}}}:tokens:{day}"


class TenantLimiter:
    """Admits LLM calls against a tenant's limits and charges the tokens they used.

    When Redis cannot be reached the limits are not enforced (logged): planning stays available.
    """

    def __init__(self, client: redis.Redis, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.clock = clock

    def _day(self, now: float) -> str:
        return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%d")

    async def admit(self, tenant: str, limits: ModelLimits) -> None:
        """Counts one call; raises Exhausted when the day's tokens are spent or the minute's calls are used up."""
        now = self.clock()
        window = int(now // _WINDOW_S)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.get(_tokens_key(tenant, self._day(now)))
                pipe.incr(_calls_key(tenant, window))
                pipe.expire(_calls_key(tenant, window), _WINDOW_S * 2)
                used, calls, _ = await pipe.execute()
        except RedisError as err:
            log.warning("model limits not enforced: redis unavailable", extra={"fields": {"error": repr(err)}})
            return
        if limits.daily_tokens and int(used or 0) >= limits.daily_tokens:
            until_midnight = _DAY_S - (now % _DAY_S)
            raise Exhausted("BUDGET_EXHAUSTED", f"the tenant's daily model budget of {limits.daily_tokens} tokens is "
                            "spent", until_midnight)
        if limits.requests_per_minute and int(calls) > limits.requests_per_minute:
            raise Exhausted("RATE_LIMITED", f"the tenant's model rate limit of {limits.requests_per_minute} calls "
                            "per minute is reached", _WINDOW_S - (now % _WINDOW_S))

    async def charge(self, tenant: str, tokens: int) -> None:
        """Adds a call's tokens to the tenant's day."""
        if tokens <= 0:
            return
        key = _tokens_key(tenant, self._day(self.clock()))
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.incrby(key, tokens)
                pipe.expire(key, _DAY_S * 2)
                await pipe.execute()
        except RedisError as err:
            log.warning("model tokens not charged: redis unavailable", extra={"fields": {"error": repr(err)}})

    async def used_today(self, tenant: str) -> int:
        value = await self.client.get(_tokens_key(tenant, self._day(self.clock())))
        return int(value or 0)
