"""Credentials per tenant, system and user: storing, refreshing before expiry (once more after a 401), unlinking."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from connectors.registry.oauth import OAuthClient, TokenSet
from connectors.registry.registrations import OAuthSettings
from connectors.registry.secretstore import CLIENT_SUBJECT, SERVICE_SUBJECT, SecretStore
from mesh.db import tenant_tx
from mesh.errors import MeshError, Reason

DOMAIN = "agentmesh.registry"
USER = "user"
SERVICE = "service"


@dataclass(frozen=True)
class CallCredential:
    """The credential one call presents: whose it is, the token (never printed) and the scheme."""

    kind: str  # user | service
    token: str = field(repr=False)
    scheme: str = "Bearer"
    service_identity: str = ""
    refreshable: bool = False


@dataclass(frozen=True)
class LinkInfo:
    """The non-secret facts about one stored user credential."""

    connector: str
    linked: bool
    expire_time: datetime | None
    scopes: tuple[str, ...]


class Credentials:
    """Reads and writes credentials through a secret store; link metadata (no secrets) lives in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool, lock_pool: asyncpg.Pool, store: SecretStore, oauth: OAuthClient,
                 refresh_margin_s: float) -> None:
        self.pool = pool
        self.lock_pool = lock_pool  # advisory locks only, so that waiting never starves the main pool
        self._local_locks: dict[str, asyncio.Lock] = {}
        self.store = store
        self.oauth = oauth
        self.refresh_margin_s = refresh_margin_s

    async def put_user(self, tenant: str, connector: str, user: str, tokens: TokenSet) -> None:
        await self.store.put(tenant, connector, user.lower(), tokens.secret())
        await self._record(tenant, connector, user.lower(), USER, tokens.expires_at, tokens.scopes,
                           bool(tokens.refresh_token))

    async def put_service(self, tenant: str, connector: str, token: str, scheme: str, identity: str) -> None:
        await self.store.put(tenant, connector, SERVICE_SUBJECT,
                             {"token": token, "scheme": scheme or "Bearer", "service_identity": identity})
        await self._record(tenant, connector, SERVICE_SUBJECT, SERVICE, None, (), False)

    async def put_client_secret(self, tenant: str, connector: str, client_secret: str) -> None:
        await self.store.put(tenant, connector, CLIENT_SUBJECT, {"client_secret": client_secret})
        await self._record(tenant, connector, CLIENT_SUBJECT, "client", None, (), False)

    async def client_secret(self, tenant: str, connector: str) -> str:
        secret = await self.store.get(tenant, connector, CLIENT_SUBJECT)
        return str(secret.get("client_secret", "")) if secret else ""

    async def service(self, tenant: str, connector: str) -> CallCredential | None:
        secret = await self.store.get(tenant, connector, SERVICE_SUBJECT)
        if not secret or not secret.get("token"):
            return None
        return CallCredential(SERVICE, str(secret["token"]), str(secret.get("scheme") or "Bearer"),
                              str(secret.get("service_identity") or f"service@{tenant}"))

    async def for_user(self, tenant: str, connector: str, user: str, oauth: OAuthSettings) -> CallCredential | None:
        """The user's token for the system, refreshed first when it expires within the margin; None: not linked."""
        secret = await self.store.get(tenant, connector, user.lower())
        if not secret or not secret.get("token"):
            return None
        expires_at = secret.get("expires_at")
        if expires_at is not None and float(expires_at) - time.time() < self.refresh_margin_s:
            if secret.get("refresh_token") and oauth.configured:
                secret = await self._refresh(tenant, connector, user.lower(), oauth, str(secret["token"]))
            elif float(expires_at) <= time.time():
                return None  # expired and cannot be refreshed: the user links again
        return _user_credential(secret)

    async def refresh_after_rejection(self, tenant: str, connector: str, user: str, oauth: OAuthSettings,
                                      rejected: CallCredential) -> CallCredential | None:
        """After a vendor 401: a refreshed token (or one another call refreshed meanwhile); None when impossible."""
        if not rejected.refreshable or not oauth.configured:
            return None
        try:
            secret = await self._refresh(tenant, connector, user.lower(), oauth, rejected.token)
        except MeshError as err:
            if err.reason == Reason.VENDOR_UNAUTHENTICATED:
                return None
            raise
        return _user_credential(secret) if secret.get("token") else None

    async def _refresh(self, tenant: str, connector: str, user: str, oauth: OAuthSettings,
                       stale_token: str) -> dict[str, Any]:
        """Refreshes under a per-credential advisory lock, so that concurrent calls spend a rotating refresh
        token once: a caller that waited finds the token already replaced and uses it."""
        name = f"refresh:{tenant}:{connector}:{user}"
        local = self._local_locks.setdefault(name, asyncio.Lock())
        async with local, self.lock_pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", name)
            secret = await self.store.get(tenant, connector, user)
            if not secret:
                raise MeshError(Reason.ACCOUNT_NOT_LINKED, f"the {connector} account is no longer linked",
                                domain=DOMAIN)
            if secret.get("token") != stale_token:
                return secret
            client_secret = await self.client_secret(tenant, connector)
            tokens = await self.oauth.refresh(oauth, client_secret, str(secret.get("refresh_token", "")))
            scopes = tokens.scopes or tuple(secret.get("scopes", ()))
            tokens = TokenSet(tokens.access_token, tokens.refresh_token, tokens.expires_at, scopes,
                              tokens.token_type, tokens.extras)
            await self.put_user(tenant, connector, user, tokens)
            return tokens.secret()

    async def links(self, tenant: str, user: str) -> dict[str, LinkInfo]:
        async with tenant_tx(self.pool, tenant) as conn:
            rows = await conn.fetch(
                """SELECT connector, expire_time, scopes FROM registry.links
                   WHERE tenant_id = $1 AND subject = $2 AND kind = 'user'""", tenant, user.lower())
        return {r["connector"]: LinkInfo(r["connector"], True, r["expire_time"], tuple(r["scopes"])) for r in rows}

    async def unlink(self, tenant: str, connector: str, user: str, oauth: OAuthSettings | None) -> bool:
        """Revokes the user's tokens at the vendor (when it can) and forgets them. False: nothing was linked."""
        secret = await self.store.get(tenant, connector, user.lower())
        if oauth is not None and secret:
            client_secret = await self.client_secret(tenant, connector)
            for token in (secret.get("refresh_token"), secret.get("token")):
                if token:
                    await self.oauth.revoke(oauth, client_secret, str(token))
        await self.store.delete(tenant, connector, user.lower())
        async with tenant_tx(self.pool, tenant) as conn:
            status = await conn.execute(
                "DELETE FROM registry.links WHERE tenant_id = $1 AND connector = $2 AND subject = $3",
                tenant, connector, user.lower())
        return bool(secret) or status.endswith(" 1")

    async def _record(self, tenant: str, connector: str, subject: str, kind: str, expires_at: float | None,
                      scopes: tuple[str, ...], refreshable: bool) -> None:
        expire = datetime.fromtimestamp(expires_at, UTC) if expires_at else None
        async with tenant_tx(self.pool, tenant) as conn:
            await conn.execute(
                """INSERT INTO registry.links (tenant_id, connector, subject, kind, expire_time, scopes, refreshable)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)
                   ON CONFLICT (tenant_id, connector, subject) DO UPDATE SET kind = EXCLUDED.kind,
                     expire_time = EXCLUDED.expire_time, scopes = EXCLUDED.scopes,
                     refreshable = EXCLUDED.refreshable, update_time = now()""",
                tenant, connector, subject, kind, expire, list(scopes), refreshable)


def _user_credential(secret: dict[str, Any]) -> CallCredential:
    return CallCredential(USER, str(secret["token"]), str(secret.get("scheme") or "Bearer"),
                          refreshable=bool(secret.get("refresh_token")))
