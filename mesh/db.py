"""PostgreSQL access: pools, tenant-scoped transactions (row-level security) and ordered per-service migrations."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

TENANT_SETTING = "agentmesh.tenant"
_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_SCHEMA = re.compile(r"^[a-z][a-z0-9_]*$")
# Values quoted into SQL text only when they are made of these (no quote, backslash or control character).
_PLAIN = re.compile(r"^[A-Za-z0-9_.@+:-]{0,320}$")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset on release: nothing. The mesh keeps no session state on pooled connections (settings are
    transaction-local, see `settings_tx`) and asyncpg rolls back an open transaction itself, so the default reset
    (RESET ALL, UNLISTEN, CLOSE ALL, unlocking advisory locks) would only add a round trip to every use."""


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, init: Any = None,
                      keep_session: bool = True) -> asyncpg.Pool:
    """A pool whose connections are reused without a reset round trip (`keep_session`; pass False for a pool
    that takes session-level advisory locks or sets session settings)."""
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=10, init=init,
                                     reset=_keep_session if keep_session else None)
    assert pool is not None
    return pool


def _literal(value: str) -> str | None:
    """`value` as an SQL string literal when it is plain enough to quote without doubt, else None."""
    return f"'{value}'" if _PLAIN.match(value) else None


@asynccontextmanager
async def settings_tx(pool: asyncpg.Pool, settings: dict[str, str]) -> AsyncIterator[asyncpg.Connection]:
    """A transaction with transaction-local `settings` (set_config ..., true), for row-level security.

    BEGIN and the settings go in one simple-query round trip when every value is a plain identifier (tenant ids,
    emails): a request makes several short transactions, and each round trip is a send and a wake-up of PostgreSQL
    on the same two cores. Other values take the parameterised path."""
    async with pool.acquire() as conn:
        quoted = {name: _literal(value) for name, value in settings.items()}
        if all(q is not None and _PLAIN.match(name) for name, q in quoted.items()):
            assignments = ", ".join(f"set_config('{name}', {q}, true)" for name, q in quoted.items())
            await conn.execute(f"BEGIN; SELECT {assignments}")
        else:
            await conn.execute("BEGIN")
            for name, value in settings.items():
                await conn.execute("SELECT set_config($1, $2, true)", name, value)
        try:
            yield conn
        except BaseException:
            if not conn.is_closed():
                await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")


@asynccontextmanager
async def tenant_tx(pool: asyncpg.Pool, tenant: str) -> AsyncIterator[asyncpg.Connection]:
    """A transaction in which row-level security sees only `tenant`'s rows."""
    async with settings_tx(pool, {TENANT_SETTING: tenant}) as conn:
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
