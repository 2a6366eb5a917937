"""PostgreSQL access: pools, tenant-scoped transactions (row-level security) and ordered per-service migrations."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

TENANT_SETTING = "agentmesh.tenant"
_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_SCHEMA = re.compile(r"^[a-z][a-z0-9_]*$")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=10)
    assert pool is not None
    return pool


@asynccontextmanager
async def tenant_tx(pool: asyncpg.Pool, tenant: str) -> AsyncIterator[asyncpg.Connection]:
    """A transaction in which row-level security sees only `tenant`'s rows."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT set_config($1, $2, true)", TENANT_SETTING, tenant)
        yield conn


async def migrate(admin_dsn: str, schema: str, folder: Path) -> list[str]:
    """Applies `folder/NNNN_name.sql` files not yet applied to `schema`, in order, each in a transaction,
    under an advisory lock so that concurrent starters apply each migration once. Returns what it applied."""
    if not _SCHEMA.match(schema):
        raise ValueError(f"bad schema name {schema!r}")
    files = sorted(p for p in folder.glob("*.sql") if _MIGRATION.match(p.name))
    applied: list[str] = []
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", f"migrate:{schema}")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("
                           "version int PRIMARY KEY, name text NOT NULL, "
                           "applied_at timestamptz NOT NULL DEFAULT now())")
        done = {r["version"] for r in await conn.fetch(f"SELECT version FROM {schema}.schema_migrations")}
        for path in files:
            version = int(path.name[:4])
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(f"SET LOCAL search_path = {schema}, public")
                await conn.execute(path.read_text())
                await conn.execute(f"INSERT INTO {schema}.schema_migrations (version, name) VALUES ($1, $2)",
                                   version, path.name)
            applied.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", f"migrate:{schema}")
        await conn.close()
    return applied
