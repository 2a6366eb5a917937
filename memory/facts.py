"""Long-term memory: facts with embeddings in PostgreSQL + pgvector (HNSW, cosine), under row-level security."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import numpy as np
from pgvector.asyncpg import register_vector

from mesh import db, embeddings
from mesh.db import TENANT_SETTING, migrate

SCHEMA = "memory"
USER_SETTING = "agentmesh.user"
MIGRATIONS = Path(__file__).with_name("migrations")
KINDS = ("preference", "summary")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
_PURGE_BATCH = 1000


@dataclass
class Fact:
    """One remembered fact; `score` is the cosine similarity to the query when recalled."""

    id: str
    text: str
    kind: str
    create_time: datetime
    expire_time: datetime
    tenant_wide: bool = False
    score: float = 0.0


def dedup_key(kind: str, text: str, subject: str = "") -> str:
    """What makes two facts the same row: a preference's subject, a run's id, or else the normalised text."""
    if subject:
        return subject
    normal = " ".join(text.lower().split())
    return f"{kind}:text:" + hashlib.sha256(normal.encode()).hexdigest()[:32]


def _index_name(model: str, dimension: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_")[:40]
    return f"facts_hnsw_{slug}_{dimension}_{hashlib.sha256(model.encode()).hexdigest()[:6]}"


async def migrate_schema(admin_dsn: str, model: str, dimension: int) -> list[str]:
    """Applies the memory schema's migrations, then makes sure the model's embedding space has an HNSW index."""
    if not _MODEL_NAME.match(model):
        raise ValueError(f"unusable embedding model name {model!r}")
    applied = await migrate(admin_dsn, SCHEMA, MIGRATIONS)
    if (model, dimension) != (embeddings.MODEL_NAME, embeddings.DIMENSION):
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(
                f"CREATE INDEX IF NOT EXISTS {_index_name(model, dimension)} ON {SCHEMA}.facts "
                f"USING hnsw ((embedding::vector({int(dimension)})) vector_cosine_ops) WHERE model = '{model}'")
        finally:
            await conn.close()
    return applied


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections exchange pgvector values as numpy arrays."""
    return await db.create_pool(dsn, min_size=min_size, max_size=max_size, init=register_vector)


class FactStore:
    """Remember, recall, forget and purge facts of one embedding space (model, dimension)."""

    def __init__(self, pool: asyncpg.Pool, model: str, dimension: int) -> None:
        if not _MODEL_NAME.match(model):
            raise ValueError(f"unusable embedding model name {model!r}")
        self.pool = pool
        self.model = model
        self.dimension = int(dimension)
        # The model and dimension are literals so that the planner matches the partial HNSW index of this space.
        vector = f"embedding::vector({self.dimension})"
        self._recall_sql = (
            f"SELECT id::text, text, kind, user_email IS NULL AS tenant_wide, create_time, expire_time, "  # noqa: S608
            f"({vector} <=> $1) AS distance FROM {SCHEMA}.facts "
            f"WHERE model = '{model}' AND expire_time > now() AND tenant_id = $2 "
            f"AND (user_email IS NULL OR user_email = $3) ORDER BY {vector} <=> $1 LIMIT $4")

    @asynccontextmanager
    async def _tx(self, tenant: str, user: str) -> AsyncIterator[asyncpg.Connection]:
        """A transaction in which row-level security sees the tenant's rows and `user`'s (none when empty)."""
        async with db.settings_tx(self.pool, {TENANT_SETTING: tenant, USER_SETTING: user,
                                              "hnsw.iterative_scan": "strict_order"}) as conn:
            yield conn

    def _check(self, vector: np.ndarray) -> np.ndarray:
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self.dimension:
            raise ValueError(f"embedding has dimension {vector.shape[0]}, this store holds {self.dimension}")
        return vector

    async def remember(self, tenant: str, user: str | None, text: str, kind: str, vector: np.ndarray,
                       ttl: timedelta, key: str) -> Fact:
        """Stores a fact (user None: tenant-wide), replacing the row with the same dedup key and refreshing its TTL."""
        return (await self.remember_many(tenant, user, [(text, kind, vector, key)], ttl))[0]

    async def remember_many(self, tenant: str, user: str | None, items: list[tuple[str, str, np.ndarray, str]],
                            ttl: timedelta) -> list[Fact]:
        """Stores facts given as (text, kind, vector, dedup key) in one transaction, in order."""
        for _, kind, _, _ in items:
            if kind not in KINDS:
                raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        owner = user.lower() if user else None
        out: list[Fact] = []
        async with self._tx(tenant, owner or "") as conn:
            statement = await conn.prepare(
                f"INSERT INTO {SCHEMA}.facts (tenant_id, user_email, kind, text, dedup_key, model, dimension, "  # noqa: S608
                "embedding, expire_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + $9::interval) "
                "ON CONFLICT (tenant_id, user_email, dedup_key) DO UPDATE SET kind = EXCLUDED.kind, "
                "text = EXCLUDED.text, model = EXCLUDED.model, dimension = EXCLUDED.dimension, "
                "embedding = EXCLUDED.embedding, expire_time = EXCLUDED.expire_time, update_time = now() "
                "RETURNING id::text, text, kind, user_email IS NULL AS tenant_wide, create_time, expire_time")
            for text, kind, vector, key in items:
                row = await statement.fetchrow(tenant, owner, kind, text, key, self.model, self.dimension,
                                               self._check(vector), ttl)
                out.append(Fact(row["id"], row["text"], row["kind"], row["create_time"], row["expire_time"],
                                row["tenant_wide"]))
        return out

    async def recall(self, tenant: str, user: str, vector: np.ndarray, top_k: int,
                     min_score: float | None = None) -> list[Fact]:
        """The user's and the tenant-wide unexpired facts of this embedding space nearest to `vector`, best first."""
        async with self._tx(tenant, user.lower()) as conn:
            rows = await conn.fetch(self._recall_sql, self._check(vector), tenant, user.lower(), top_k)
        facts = [Fact(r["id"], r["text"], r["kind"], r["create_time"], r["expire_time"], r["tenant_wide"],
                      1.0 - float(r["distance"])) for r in rows]
        if min_score is not None:
            facts = [f for f in facts if f.score >= min_score]
        return facts

    async def forget(self, tenant: str, user: str) -> int:
        """Deletes every fact of the user in the tenant (every embedding space); the number deleted."""
        async with self._tx(tenant, user.lower()) as conn:
            status = await conn.execute(f"DELETE FROM {SCHEMA}.facts WHERE tenant_id = $1 AND user_email = $2",  # noqa: S608
                                        tenant, user.lower())
        return int(status.split()[-1])

    async def purge_expired(self) -> int:
        """Deletes expired facts of every tenant (through the owner's function); the number deleted."""
        total = 0
        async with self.pool.acquire() as conn:
            while True:
                deleted = int(await conn.fetchval(f"SELECT {SCHEMA}.purge_expired($1)", _PURGE_BATCH))
                total += deleted
                if deleted < _PURGE_BATCH:
                    return total
