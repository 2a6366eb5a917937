"""Erasing a user's short-term and working memory from Redis, through the user's key index (no SCAN)."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as redis
from redis.exceptions import WatchError

from memory import keys


@dataclass
class Erased:
    """What was erased from Redis."""

    sessions: int = 0
    working_states: int = 0


async def erase_user(client: redis.Redis, tenant: str, user: str, attempts: int = 10) -> Erased:
    """Deletes every key the user's index lists (sessions, runs, cached summaries) and the index, in one transaction.

    WATCH on the index makes a write that adds a key meanwhile restart the erasure, so none is left behind.
    """
    index = keys.user_index_key(tenant, user)
    for _ in range(attempts):
        async with client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(index)
                members = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in await pipe.smembers(index))
                pipe.multi()
                for member in members:
                    pipe.delete(member)
                pipe.delete(index)
                results = await pipe.execute()
            except WatchError:
                continue
        erased = Erased()
        for member, deleted in zip(members, results, strict=False):
            if int(deleted):
                kind = keys.kind_of(member)
                if kind == "session":
                    erased.sessions += 1
                elif kind == "run":
                    erased.working_states += 1
        return erased
    raise RuntimeError(f"the user's keys kept changing during erasure ({attempts} attempts)")
