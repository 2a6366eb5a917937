"""Secret stores: the embedded one (Fernet-encrypted rows in PostgreSQL) and HashiCorp Vault KV v2 through hvac."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol
from urllib.parse import quote

import asyncpg
import hvac
import hvac.exceptions
import requests
from cryptography.fernet import Fernet, InvalidToken

from mesh.db import tenant_tx
from mesh.errors import MeshError, Reason

DOMAIN = "agentmesh.registry"
SERVICE_SUBJECT = "_service"
CLIENT_SUBJECT = "_oauth_client"


class SecretStore(Protocol):
    """Secrets per (tenant, connector, subject); subject is a user's email, `_service` or `_oauth_client`."""

    async def put(self, tenant: str, connector: str, subject: str, secret: dict[str, Any]) -> None: ...

    async def get(self, tenant: str, connector: str, subject: str) -> dict[str, Any] | None: ...

    async def delete(self, tenant: str, connector: str, subject: str) -> None: ...

    async def close(self) -> None: ...


class EmbeddedStore:
    """Secrets encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under a key from config; rows carry ciphertext."""

    def __init__(self, pool: asyncpg.Pool, key: bytes) -> None:
        self.pool = pool
        self.fernet = Fernet(key)

    async def put(self, tenant: str, connector: str, subject: str, secret: dict[str, Any]) -> None:
        token = self.fernet.encrypt(json.dumps(secret).encode())
        async with tenant_tx(self.pool, tenant) as conn:
            await conn.execute(
                """INSERT INTO registry.secrets (tenant_id, connector, subject, ciphertext) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (tenant_id, connector, subject)
                   DO UPDATE SET ciphertext = EXCLUDED.ciphertext, update_time = now()""",
                tenant, connector, subject, token)

    async def get(self, tenant: str, connector: str, subject: str) -> dict[str, Any] | None:
        async with tenant_tx(self.pool, tenant) as conn:
            token = await conn.fetchval(
                "SELECT ciphertext FROM registry.secrets WHERE tenant_id = $1 AND connector = $2 AND subject = $3",
                tenant, connector, subject)
        if token is None:
            return None
        try:
            value: dict[str, Any] = json.loads(self.fernet.decrypt(bytes(token)))
        except InvalidToken:
            raise MeshError(Reason.INTERNAL, "a stored credential cannot be decrypted with the configured key",
                            domain=DOMAIN) from None
        return value

    async def delete(self, tenant: str, connector: str, subject: str) -> None:
        async with tenant_tx(self.pool, tenant) as conn:
            await conn.execute("DELETE FROM registry.secrets WHERE tenant_id = $1 AND connector = $2 AND subject = $3",
                               tenant, connector, subject)

    async def close(self) -> None:
        return None


class VaultStore:
    """Secrets in Vault's KV v2 engine at `<mount>/data/<prefix>/<tenant>/<connector>/<subject>` (hvac)."""

    def __init__(self, url: str, token: str, mount: str = "secret", prefix: str = "agentmesh",
                 timeout_s: float = 5.0) -> None:
        self.client = hvac.Client(url=url, token=token, timeout=timeout_s)
        self.kv = self.client.secrets.kv.v2
        self.mount = mount
        self.prefix = prefix.strip("/")

    def path(self, tenant: str, connector: str, subject: str) -> str:
        parts = [self.prefix, tenant, connector, subject]
        return "/".join(quote(p, safe="@._-") for p in parts if p)

    async def put(self, tenant: str, connector: str, subject: str, secret: dict[str, Any]) -> None:
        path = self.path(tenant, connector, subject)
        await self._call(self.kv.create_or_update_secret, path=path, secret=secret, mount_point=self.mount)

    async def get(self, tenant: str, connector: str, subject: str) -> dict[str, Any] | None:
        path = self.path(tenant, connector, subject)
        try:
            answer = await self._call(self.kv.read_secret_version, path=path, mount_point=self.mount,
                                      raise_on_deleted_version=True)
        except hvac.exceptions.InvalidPath:
            return None
        data: dict[str, Any] = answer["data"]["data"]
        return data

    async def delete(self, tenant: str, connector: str, subject: str) -> None:
        path = self.path(tenant, connector, subject)
        try:
            await self._call(self.kv.delete_metadata_and_all_versions, path=path, mount_point=self.mount)
        except hvac.exceptions.InvalidPath:
            return

    async def _call(self, fn: Any, **kwargs: Any) -> Any:
        """hvac is synchronous (requests): run it off the event loop; Vault failures become UNAVAILABLE."""
        try:
            return await asyncio.to_thread(fn, **kwargs)
        except hvac.exceptions.InvalidPath:
            raise
        except (hvac.exceptions.VaultError, requests.RequestException) as err:
            raise MeshError(Reason.UPSTREAM_UNAVAILABLE, f"the secret store failed: {type(err).__name__}",
                            domain=DOMAIN) from None

    async def close(self) -> None:
        await asyncio.to_thread(self.client.adapter.close)
