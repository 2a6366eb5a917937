"""The plan cache in Redis (1 h): plans only, keyed so that one user's plan never reaches another."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

log = logging.getLogger("agentmesh.planner")

# Words that lean on earlier turns: with session context, such a request means something else in each session.
_REFERRING = re.compile(r"\b(it|its|that|this|these|those|them|they|he|she|him|her|his|their|again|same|above|"
                        r"previous|last one|the one|there)\b", re.IGNORECASE)


def normalize(request: str) -> str:
    """Case, spacing and trailing punctuation do not change a request's plan."""
    return re.sub(r"\s+", " ", request).strip().rstrip(".!?").strip().casefold()


def depends_on_session(request: str, context: Mapping[str, Any]) -> bool:
    """Whether the session context may change what the request means (then its plan is not cached)."""
    if context.get("working_state"):
        return True
    has_history = bool(context.get("turns") or context.get("summary"))
    return has_history and bool(_REFERRING.search(request))


def permissions_fingerprint(tools: Iterable[tuple[str, str]], denied: Iterable[str]) -> str:
    """A stand-in for ListTools' fingerprint: offered tool names and versions, and denied names."""
    doc = {"tools": sorted(f"{n}@{v}" for n, v in tools), "denied": sorted(denied)}
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """Everything a cached plan depends on."""

    tenant: str
    user: str
    fingerprint: str
    request: str
    tool_versions: tuple[str, ...]
    model: str
    day: str
    directory: str
    facts: tuple[str, ...] = ()

    def redis_key(self) -> str:
        doc = [self.user.casefold(), self.fingerprint, normalize(self.request), sorted(self.tool_versions),
               self.model, self.day, self.directory, sorted(self.facts)]
        digest = hashlib.sha256(json.dumps(doc, ensure_ascii=False).encode()).hexdigest()
        return f"planner:{{{self.tenant}}}:plan:{digest}"


def directory_digest(people: Sequence[tuple[str, str]]) -> str:
    """A digest of the directory's (email, name) pairs: names resolve against it."""
    return hashlib.sha256(json.dumps(sorted(people)).encode()).hexdigest()[:16]


class PlanCache:
    """Redis SET EX / GET of plans (JSON); Redis failures only cost the cache (logged)."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.client = client
        self.ttl_s = ttl_s

    async def get(self, key: CacheKey) -> dict[str, Any] | None:
        try:
            raw = await self.client.get(key.redis_key())
        except RedisError as err:
            log.warning("plan cache unavailable", extra={"fields": {"error": repr(err)}})
            return None
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    async def put(self, key: CacheKey, plan: Mapping[str, Any]) -> None:
        try:
            await self.client.set(key.redis_key(), json.dumps(plan, ensure_ascii=False), ex=self.ttl_s)
        except RedisError as err:
            log.warning("plan cache unavailable", extra={"fields": {"error": repr(err)}})
