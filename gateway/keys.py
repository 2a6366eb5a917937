"""Tenant API keys: random high-entropy keys, stored as SHA-256 digests, compared in constant time, cached."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from gateway.cache import TtlCache
from mesh.db import tenant_tx

PREFIX = "amk"
TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_KEY = re.compile(r"^amk\.([a-z0-9][a-z0-9_-]{0,62})\.([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$")
_SECRET_BYTES = 32  # 256 bits of entropy


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    tenant: str
    key_id: str
    assert_users: bool
    description: str = ""
    created: datetime | None = None
    revoked: datetime | None = None


@dataclass(frozen=True)
class _Stored:
    key: ApiKey
    digest: bytes


def digest(presented: str) -> bytes:
    """The SHA-256 digest stored for a key (of the whole key string)."""
    return hashlib.sha256(presented.encode()).digest()


def parse(presented: str) -> tuple[str, str] | None:
    """(tenant, key id) of a well-formed key, or None."""
    match = _KEY.match(presented)
    return (match.group(1), match.group(2)) if match else None


def new_key(tenant: str) -> tuple[str, str]:
    """A fresh (key id, plaintext key) for a tenant."""
    if not TENANT_ID.match(tenant):
        raise ValueError(f"bad tenant id {tenant!r}")
    key_id = secrets.token_hex(8)
    return key_id, f"{PREFIX}.{tenant}.{key_id}.{secrets.token_urlsafe(_SECRET_BYTES)}"


class KeyStore:
    """API keys in PostgreSQL (schema gateway, row-level security per tenant) with a TTL cache of verified rows."""

    def __init__(self, pool: asyncpg.Pool, cache_ttl_s: float = 60.0) -> None:
        self.pool = pool
        self._cache: TtlCache[tuple[str, str], _Stored | bool] = TtlCache(cache_ttl_s)
        self._missing_ttl_s = min(cache_ttl_s, 5.0)

    async def create(self, tenant: str, *, assert_users: bool = False, description: str = "") -> tuple[ApiKey, str]:
        """Stores a new key and returns it with its plaintext, which is shown once and never stored."""
        key_id, plaintext = new_key(tenant)
        async with tenant_tx(self.pool, tenant) as conn:
            row = await conn.fetchrow(
                "INSERT INTO gateway.api_keys (tenant_id, key_id, digest, assert_users, description) "
                "VALUES ($1, $2, $3, $4, $5) RETURNING create_time", tenant, key_id, digest(plaintext), assert_users,
                description)
        assert row is not None
        return ApiKey(tenant, key_id, assert_users, description, row["create_time"]), plaintext

    async def verify(self, presented: str) -> ApiKey | None:
        """The key's record when `presented` is a live key, else None (malformed, unknown, wrong secret, revoked)."""
        parsed = parse(presented.strip())
        if parsed is None:
            return None
        stored = await self._cache.get_or_load(
            parsed, lambda: self._load(*parsed),
            lambda found: self._cache.ttl_s if found else self._missing_ttl_s)
        if isinstance(stored, bool):
            return None
        if not hmac.compare_digest(stored.digest, digest(presented.strip())):
            return None
        return stored.key

    async def _load(self, tenant: str, key_id: str) -> _Stored | bool:
        async with tenant_tx(self.pool, tenant) as conn:
            row = await conn.fetchrow(
                "SELECT digest, assert_users, description, create_time FROM gateway.api_keys "
                "WHERE tenant_id = $1 AND key_id = $2 AND revoke_time IS NULL", tenant, key_id)
        if row is None:
            return False
        return _Stored(ApiKey(tenant, key_id, row["assert_users"], row["description"], row["create_time"]),
                       bytes(row["digest"]))

    async def revoke(self, tenant: str, key_id: str) -> bool:
        """Revokes a key; other gateway processes stop accepting it within their cache TTL."""
        async with tenant_tx(self.pool, tenant) as conn:
            done = await conn.execute("UPDATE gateway.api_keys SET revoke_time = now() "
                                      "WHERE tenant_id = $1 AND key_id = $2 AND revoke_time IS NULL", tenant, key_id)
        self._cache.drop((tenant, key_id))
        return done.endswith(" 1")

    async def list(self, tenant: str) -> list[ApiKey]:
        async with tenant_tx(self.pool, tenant) as conn:
            rows = await conn.fetch("SELECT key_id, assert_users, description, create_time, revoke_time "
                                    "FROM gateway.api_keys WHERE tenant_id = $1 ORDER BY create_time", tenant)
        return [ApiKey(tenant, r["key_id"], r["assert_users"], r["description"], r["create_time"], r["revoke_time"])
                for r in rows]
