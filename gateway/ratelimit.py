"""Per-tenant (requests/s) and per-user (requests/min) rate limits in Redis: GCRA, both checked in one script."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis

# GCRA (the generic cell rate algorithm) over two keys at once, on Redis's own clock so that every gateway replica
# agrees. A request is admitted only when both limits admit it; only then are both theoretical arrival times moved.
# ARGV: emission interval and burst (ms) of the tenant limit, then of the user limit (emission 0: no limit), ttl.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local worst, which = 0, 0
local tats = {}
for i = 1, 2 do
  local emission = tonumber(ARGV[i * 2 - 1])
  local burst = tonumber(ARGV[i * 2])
  if emission > 0 then
    local tat = tonumber(redis.call('GET', KEYS[i]) or now)
    if tat < now then tat = now end
    local new_tat = tat + emission
    local allow_at = new_tat - burst
    if allow_at > now then
      if allow_at - now > worst then worst, which = allow_at - now, i end
    end
    tats[i] = new_tat
  end
end
if which > 0 then return {which, worst} end
for i = 1, 2 do
  if tats[i] then redis.call('SET', KEYS[i], tats[i], 'PX', tonumber(ARGV[5])) end
end
return {0, 0}
"""
TENANT_RPS = "tenant_rps"
USER_PER_MINUTE = "user_per_minute"


@dataclass(frozen=True)
class Limits:
    """A tenant's limits (policy `rate_limits`); 0 means unlimited."""

    tenant_rps: float = 0.0
    user_per_minute: float = 0.0

    @classmethod
    def of(cls, policy: dict[str, Any]) -> Limits:
        raw = policy.get("rate_limits") or {}
        return cls(float(raw.get(TENANT_RPS) or 0), float(raw.get(USER_PER_MINUTE) or 0))


@dataclass(frozen=True)
class Verdict:
    """Admitted, or which limit refused and after how long a retry would be admitted."""

    allowed: bool
    limit: str = ""
    retry_after_s: float = 0.0


def _params(count: float, period_s: float) -> tuple[int, int]:
    """Emission interval and burst tolerance (ms) of `count` requests per period: a full period's worth may arrive
    at once, then one per emission interval."""
    if count <= 0:
        return 0, 0
    emission = max(round(period_s * 1000 / count), 1)
    return emission, max(round(emission * max(count, 1.0)), emission)


class RateLimiter:
    """Admits or refuses a request of (tenant, user) against the tenant's limits; one Redis round trip."""

    def __init__(self, client: redis.Redis) -> None:
        self._script = client.register_script(_SCRIPT)

    async def admit(self, tenant: str, user: str, limits: Limits) -> Verdict:
        if limits.tenant_rps <= 0 and limits.user_per_minute <= 0:
            return Verdict(True)
        t_emission, t_burst = _params(limits.tenant_rps, 1.0)
        u_emission, u_burst = _params(limits.user_per_minute, 60.0)
        ttl_ms = max(t_burst, u_burst, 1000) * 2
        keys = [f"gw:{{{tenant}}}:rl:tenant", f"gw:{{{tenant}}}:rl:user:{user}"]
        which, wait_ms = await self._script(keys=keys, args=[t_emission, t_burst, u_emission, u_burst, ttl_ms])
        if int(which) == 0:
            return Verdict(True)
        return Verdict(False, TENANT_RPS if int(which) == 1 else USER_PER_MINUTE, max(int(wait_ms), 1) / 1000)
