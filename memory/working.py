"""Working memory: a run's task state in a Redis hash, updated atomically by a script (TTL refreshed on update)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis

from memory import keys

VERSION_FIELD = "_v"
_FIELD_PREFIX = "f:"

# Checks the expected version (0: unconditional), sets every field, bumps the version and refreshes the TTLs,
# all in one step: concurrent updates of one run never interleave, so none is lost.
_UPDATE = """
local current = tonumber(redis.call('HGET', KEYS[1], '_v') or '0')
local expected = tonumber(ARGV[1])
if expected ~= 0 and expected ~= current then
  return {0, current}
end
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
local version = redis.call('HINCRBY', KEYS[1], '_v', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {1, version}
"""


class VersionConflict(Exception):
    """The state changed since the version the caller read."""

    def __init__(self, current: int) -> None:
        super().__init__(f"working state is at version {current}")
        self.current = current


@dataclass
class WorkingState:
    """A run's state: JSON values by key, and a version that increases with every update."""

    values: dict[str, Any]
    version: int


class WorkingStateStore:
    """Reads and updates runs' working state. A run's state belongs to one tenant and one user."""

    def __init__(self, client: redis.Redis, ttl_s: float, index_ttl_s: float) -> None:
        self.client = client
        self.ttl_ms = int(ttl_s * 1000)
        self.index_ttl_ms = int(max(index_ttl_s, ttl_s) * 1000)
        self._update = client.register_script(_UPDATE)

    async def get(self, tenant: str, user: str, run_id: str) -> WorkingState:
        """The run's state; empty at version 0 when the run has none (or it expired)."""
        raw = await self.client.hgetall(keys.run_key(tenant, user, run_id))
        values: dict[str, Any] = {}
        version = 0
        for name, value in raw.items():
            field = name.decode() if isinstance(name, bytes) else str(name)
            if field == VERSION_FIELD:
                version = int(value)
            elif field.startswith(_FIELD_PREFIX):
                values[field[len(_FIELD_PREFIX):]] = json.loads(value)
        return WorkingState(dict(sorted(values.items())), version)

    async def update(self, tenant: str, user: str, run_id: str, values: dict[str, Any],
                     expected_version: int = 0) -> int:
        """Sets `values` (other keys are kept) when the state is at `expected_version` (0: always); the new version."""
        pairs: list[str] = []
        for name, value in values.items():
            pairs += [_FIELD_PREFIX + name, json.dumps(value, separators=(",", ":"))]
        ok, version = await self._update(
            keys=[keys.run_key(tenant, user, run_id), keys.user_index_key(tenant, user)],
            args=[expected_version, self.ttl_ms, self.index_ttl_ms, *pairs])
        if not int(ok):
            raise VersionConflict(int(version))
        return int(version)
