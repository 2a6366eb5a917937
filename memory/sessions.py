"""Short-term memory: a session's turns in a Redis list (TTL refreshed on append), per tenant and user."""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis.asyncio as redis

from memory import keys

ROLES = ("user", "assistant")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")

# RPUSH the turn, keep the newest max turns, refresh the session TTL, and record the key in the user's index
# (whose TTL covers every key it lists). One slot: both keys carry the tenant's hash tag.
_APPEND = """
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
local cap = tonumber(ARGV[3])
if n > cap then
  redis.call('LTRIM', KEYS[1], -cap, -1)
  n = cap
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return n
"""


# SET the value with its TTL and record the key in the user's index, as _APPEND does.
_PUT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""


def split_sentences(text: str) -> list[str]:
    """Sentences of a turn (on ., ! or ? followed by space, and on line breaks)."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


@dataclass
class Turn:
    """One turn of a session, with its sentences' embeddings (used to condense older turns)."""

    role: str
    text: str
    create_time: float = field(default_factory=time.time)
    run_id: str = ""
    sentences: list[str] = field(default_factory=list)
    model: str = ""
    vectors: np.ndarray | None = None

    def encode(self) -> str:
        data: dict[str, Any] = {"r": self.role, "t": self.text, "ts": self.create_time, "run": self.run_id,
                                "s": self.sentences, "m": self.model}
        if self.vectors is not None:
            data["d"] = int(self.vectors.shape[1])
            data["e"] = base64.b64encode(self.vectors.astype(np.float16).tobytes()).decode()
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: bytes | str) -> Turn:
        data = json.loads(raw)
        vectors = None
        if "e" in data:
            flat = np.frombuffer(base64.b64decode(data["e"]), dtype=np.float16).astype(np.float32)
            vectors = flat.reshape(-1, int(data["d"]))
        return cls(data["r"], data["t"], float(data["ts"]), data.get("run", ""), list(data.get("s", [])),
                   data.get("m", ""), vectors)


class SessionStore:
    """Append and read a session's turns. A session belongs to one tenant and one user."""

    def __init__(self, client: redis.Redis, ttl_s: float, max_turns: int, index_ttl_s: float) -> None:
        self.client = client
        self.ttl_ms = int(ttl_s * 1000)
        self.max_turns = max_turns
        self.index_ttl_ms = int(max(index_ttl_s, ttl_s) * 1000)
        self._append = client.register_script(_APPEND)

    async def append(self, tenant: str, user: str, session_id: str, turn: Turn) -> int:
        """Appends a turn; returns the session's turn count."""
        key = keys.session_key(tenant, user, session_id)
        count = await self._append(keys=[key, keys.user_index_key(tenant, user)],
                                   args=[turn.encode(), self.ttl_ms, self.max_turns, self.index_ttl_ms])
        return int(count)

    async def read(self, tenant: str, user: str, session_id: str, limit: int = 0) -> list[Turn]:
        """The session's turns, oldest first; the newest `limit` when limit > 0."""
        key = keys.session_key(tenant, user, session_id)
        raw = await self.client.lrange(key, -limit if limit > 0 else 0, -1)
        return [Turn.decode(r) for r in raw]


class SummaryCache:
    """Model-written summaries of a session's older turns, kept as long as the session (and erased with the user)."""

    def __init__(self, client: redis.Redis, ttl_s: float, index_ttl_s: float) -> None:
        self.client = client
        self.ttl_ms = int(ttl_s * 1000)
        self.index_ttl_ms = int(max(index_ttl_s, ttl_s) * 1000)
        self._put = client.register_script(_PUT)

    async def get(self, tenant: str, user: str, session_id: str, digest: str) -> str | None:
        raw = await self.client.get(keys.summary_key(tenant, user, session_id, digest))
        return raw.decode() if isinstance(raw, bytes) else raw

    async def put(self, tenant: str, user: str, session_id: str, digest: str, text: str) -> None:
        await self._put(keys=[keys.summary_key(tenant, user, session_id, digest), keys.user_index_key(tenant, user)],
                        args=[text, self.ttl_ms, self.index_ttl_ms])
