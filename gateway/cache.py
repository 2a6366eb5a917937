"""A small in-process TTL cache with single-flight loading, for keys, directory entries and tenant settings."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Entries live ttl_s seconds; the least recently used go first beyond max_entries. Concurrent misses of one
    key share one load, so a burst of requests costs the backing store one query."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._loading: dict[K, asyncio.Future[V]] = {}

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: K, value: V, ttl_s: float | None = None) -> None:
        self._entries[key] = (time.monotonic() + (self.ttl_s if ttl_s is None else ttl_s), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop(self, key: K) -> None:
        self._entries.pop(key, None)

    async def get_or_load(self, key: K, load: Callable[[], Awaitable[V]],
                          ttl_of: Callable[[V], float] | None = None) -> V:
        """The cached value, or the value `load` returns, cached for ttl_of(value) (default ttl_s; 0 caches
        nothing); a failed load caches nothing."""
        while True:
            found = self.get(key)
            if found is not None:
                return found
            pending = self._loading.get(key)
            if pending is None:
                break
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                # the loader was cancelled, not us: load again
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # retrieved: a load nobody else waited for must not warn
            raise
        finally:
            self._loading.pop(key, None)
        ttl = self.ttl_s if ttl_of is None else ttl_of(value)
        if ttl > 0:
            self.put(key, value, ttl)
        future.set_result(value)
        return value
