"""Each run's events and state in Redis, so that a client whose stream broke re-attaches and sees the rest."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis

log = logging.getLogger("agentmesh.gateway.runlog")
RUNNING, PAUSED, ENDED = "running", "paused", "ended"
_BLOCK_MS = 1000


@dataclass(frozen=True)
class RunMeta:
    """Who a run belongs to and where it stands."""

    owner: str
    session_id: str
    request: str
    state: str
    sequence: int
    channel: str = ""
    pending: tuple[str, ...] = ()  # the step ids a paused run waits on


# Moves a paused run to running for a confirmation of one of its pending steps, once (two clicks cannot both pass).
_CLAIM = """
local meta = KEYS[1]
if redis.call('HGET', meta, 'state') ~= 'paused' then return 0 end
local pending = ',' .. (redis.call('HGET', meta, 'pending') or '') .. ','
if not string.find(pending, ',' .. ARGV[1] .. ',', 1, true) then return 0 end
redis.call('HSET', meta, 'state', 'running')
return 1
"""


def _key(tenant: str, run_id: str) -> str:
    return f"gw:{{{tenant}}}:run:{run_id}"


def _fields(meta: RunMeta) -> dict[Any, Any]:
    return {"owner": meta.owner, "session": meta.session_id, "request": meta.request, "state": meta.state,
            "seq": meta.sequence, "channel": meta.channel, "pending": ",".join(meta.pending)}


class RunLog:
    """Run events (serialized ConverseResponse) under `gw:{tenant}:run:<id>` with ids `0-<sequence>`."""

    def __init__(self, client: redis.Redis, ttl_s: float = 3600.0) -> None:
        self.client = client
        self.ttl_ms = int(ttl_s * 1000)
        self._claim = client.register_script(_CLAIM)

    async def save_meta(self, tenant: str, run_id: str, meta: RunMeta) -> None:
        key = _key(tenant, run_id) + ":meta"
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=_fields(meta))
            pipe.pexpire(key, self.ttl_ms)
            await pipe.execute()

    async def meta(self, tenant: str, run_id: str) -> RunMeta | None:
        raw: Any = await self.client.hgetall(_key(tenant, run_id) + ":meta")
        if not raw:
            return None
        got = {k.decode(): v.decode() for k, v in raw.items()}
        return RunMeta(got.get("owner", ""), got.get("session", ""), got.get("request", ""), got.get("state", ""),
                       int(got.get("seq", "0")), got.get("channel", ""),
                       tuple(s for s in got.get("pending", "").split(",") if s))

    async def claim(self, tenant: str, run_id: str, step_id: str) -> bool:
        """Takes a paused run for the confirmation of `step_id`; False when it is not paused on that step (any more)."""
        return bool(await self._claim(keys=[_key(tenant, run_id) + ":meta"], args=[step_id]))

    async def append(self, tenant: str, run_id: str, events: list[tuple[int, bytes]],
                     meta: RunMeta | None = None) -> None:
        """Appends events (and, with the first batch, the run's meta) in one round trip."""
        key = _key(tenant, run_id)
        async with self.client.pipeline(transaction=False) as pipe:
            if meta is not None:
                pipe.hset(key + ":meta", mapping=_fields(meta))
                pipe.pexpire(key + ":meta", self.ttl_ms)
            for sequence, data in events:
                pipe.xadd(key, {"e": data}, id=f"0-{sequence}")
            pipe.pexpire(key, self.ttl_ms)
            await pipe.execute()

    async def events(self, tenant: str, run_id: str) -> list[bytes]:
        """Every event of the run logged so far, in order."""
        entries: Any = await self.client.xrange(_key(tenant, run_id))
        return [bytes(fields[b"e"]) for _entry_id, fields in entries]

    async def follow(self, tenant: str, run_id: str, after: int) -> AsyncIterator[tuple[int, bytes]]:
        """Events after sequence `after`, then new ones as they come; (-1, b"") after each idle second so that the
        caller can look whether the run ended or paused."""
        key = _key(tenant, run_id)
        last = f"0-{after}"
        while True:
            answer: Any = await self.client.xread({key: last}, count=500, block=_BLOCK_MS)
            if not answer:
                yield -1, b""
            for _stream, entries in answer or ():
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    yield int(last.split("-", 1)[1]), bytes(fields[b"e"])


class RunWriter:
    """Appends one run's events in the background: an urgent event (the first, a pause, the end) is written at once
    with whatever came before it; others wait up to `linger_s` so that a burst costs one round trip."""

    def __init__(self, log_: RunLog, tenant: str, run_id: str, meta: RunMeta | None = None,
                 linger_s: float = 0.1) -> None:
        self.log = log_
        self.tenant = tenant
        self.run_id = run_id
        self.linger_s = linger_s
        self._meta = meta  # written with the first batch, so that a watcher finds the run from its first event
        self._pending: list[tuple[int, bytes]] = []
        self._urgent = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, sequence: int, data: bytes, urgent: bool = False) -> None:
        self._pending.append((sequence, data))
        if urgent:
            self._urgent.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            if not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), self.linger_s)
            self._urgent.clear()
            batch, self._pending = self._pending, []
            meta, self._meta = self._meta, None
            try:
                await self.log.append(self.tenant, self.run_id, batch, meta)
            except (redis.RedisError, OSError) as err:
                log.warning("run events not logged", extra={"fields": {"run_id": self.run_id, "error": repr(err)}})

    async def close(self) -> None:
        """Writes what is pending now and waits for it."""
        self._urgent.set()
        while self._task is not None and not self._task.done():
            await self._task
