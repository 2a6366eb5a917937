"""mesh.db's transactions on a real PostgreSQL: transaction-local settings, rollback, pooled reuse without reset."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from mesh.db import create_pool, settings_tx, tenant_tx


@pytest.fixture
async def pool(backing) -> AsyncIterator[asyncpg.Pool]:
    # One connection, so that every transaction below reuses the connection the previous one released.
    created = await create_pool(backing.app_dsn, min_size=1, max_size=1)
    yield created
    await created.close()


async def _setting(conn: asyncpg.Connection, name: str) -> str | None:
    return await conn.fetchval("SELECT current_setting($1, true)", name)


@pytest.mark.parametrize("value", ["acme", "alice.nguyen@acme.example", "o'brien", "back\\slash", "x'; SELECT 1; --"])
async def test_settings_are_exact_and_end_with_the_transaction(pool: asyncpg.Pool, value: str) -> None:
    async with settings_tx(pool, {"agentmesh.tenant": value, "agentmesh.user": "bob@globex.example"}) as conn:
        assert await _setting(conn, "agentmesh.tenant") == value
        assert await _setting(conn, "agentmesh.user") == "bob@globex.example"
        assert conn.is_in_transaction()
    async with pool.acquire() as conn:  # the same connection, released without a reset query
        assert not conn.is_in_transaction()
        assert await _setting(conn, "agentmesh.tenant") in (None, "")


async def test_an_error_rolls_back_and_the_connection_is_reused(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("CREATE TEMP TABLE IF NOT EXISTS db_probe (v text)")
    with pytest.raises(RuntimeError):
        async with tenant_tx(pool, "acme") as conn:
            await conn.execute("INSERT INTO db_probe VALUES ('lost')")
            raise RuntimeError("boom")
    with pytest.raises(asyncpg.UndefinedTableError):
        async with tenant_tx(pool, "acme") as conn:
            await conn.execute("SELECT * FROM no_such_table")
    async with tenant_tx(pool, "acme") as conn:
        await conn.execute("INSERT INTO db_probe VALUES ('kept')")
    async with pool.acquire() as conn:
        assert [r["v"] for r in await conn.fetch("SELECT v FROM db_probe")] == ["kept"]
