"""The multi-workspace installation store: Slack team id → tenant and bot token (Fernet-encrypted in PostgreSQL)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import asyncpg
from cryptography.fernet import Fernet
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation

from gateway.cache import TtlCache
from mesh.db import tenant_tx

log = logging.getLogger("agentmesh.gateway.slack")
TENANT_KEY = "tenant"  # Installation.custom_values carries the tenant a workspace is installed for


def fernet_key(state_dir: Path, configured: str | None = None) -> bytes:
    """The key of stored bot tokens: from config, else a key file created (0600) under the state directory."""
    if configured:
        return configured.encode()
    path = state_dir / "gateway" / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(Fernet.generate_key())
    return path.read_bytes().strip()


class SlackInstallations(AsyncInstallationStore):
    """Bot installations per workspace; `tenant_of` is the only lookup made before the tenant is known."""

    def __init__(self, pool: asyncpg.Pool, key: bytes, cache_ttl_s: float = 60.0) -> None:
        self.pool = pool
        self._fernet = Fernet(key)
        self._tenants: TtlCache[str, str] = TtlCache(cache_ttl_s)
        self._bots: TtlCache[str, Bot] = TtlCache(cache_ttl_s)

    @property
    def logger(self) -> logging.Logger:
        return log

    async def install(self, tenant: str, team_id: str, bot_token: str, *, bot_user_id: str = "", bot_id: str = "",
                      app_id: str = "", scopes: tuple[str, ...] = (), enterprise_id: str = "") -> None:
        """Maps a workspace to a tenant with its bot token (replacing an earlier installation)."""
        ciphertext = self._fernet.encrypt(bot_token.encode())
        async with tenant_tx(self.pool, tenant) as conn:
            owner = await conn.fetchval("SELECT gateway.slack_tenant($1)", team_id)
            if owner is not None and owner != tenant:
                raise ValueError(f"workspace {team_id} is installed for another tenant")
            await conn.execute(
                "INSERT INTO gateway.slack_installations (team_id, tenant_id, enterprise_id, app_id, bot_id, "
                "bot_user_id, bot_scopes, bot_token) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
                "ON CONFLICT (team_id) DO UPDATE SET enterprise_id = $3, app_id = $4, bot_id = $5, bot_user_id = $6, "
                "bot_scopes = $7, bot_token = $8, install_time = now()",
                team_id, tenant, enterprise_id, app_id, bot_id, bot_user_id, list(scopes), ciphertext)
        self._tenants.drop(team_id)
        self._bots.drop(team_id)

    async def tenant_of(self, team_id: str) -> str | None:
        async def load() -> str:
            async with self.pool.acquire() as conn:
                found = await conn.fetchval("SELECT gateway.slack_tenant($1)", team_id)
            return str(found or "")

        tenant = await self._tenants.get_or_load(team_id, load)
        return tenant or None

    # --- AsyncInstallationStore (what bolt's authorize reads) -------------------------------------------------------
    async def async_save(self, installation: Installation) -> None:
        tenant = (installation.custom_values or {}).get(TENANT_KEY)
        if not tenant or not installation.team_id or not installation.bot_token:
            raise ValueError("an installation needs a team id, a bot token and custom_values['tenant']")
        await self.install(str(tenant), installation.team_id, installation.bot_token,
                           bot_user_id=installation.bot_user_id or "", bot_id=installation.bot_id or "",
                           app_id=installation.app_id or "", scopes=tuple(installation.bot_scopes or ()),
                           enterprise_id=installation.enterprise_id or "")

    async def async_save_bot(self, bot: Bot) -> None:
        tenant = (bot.custom_values or {}).get(TENANT_KEY)
        if not tenant or not bot.team_id:
            raise ValueError("a bot installation needs a team id and custom_values['tenant']")
        await self.install(str(tenant), bot.team_id, bot.bot_token, bot_user_id=bot.bot_user_id, bot_id=bot.bot_id,
                           app_id=bot.app_id or "", scopes=tuple(bot.bot_scopes or ()))

    async def async_find_bot(self, *, enterprise_id: str | None, team_id: str | None,
                             is_enterprise_install: bool | None = False) -> Bot | None:
        if not team_id:
            return None
        tenant = await self.tenant_of(team_id)
        if tenant is None:
            return None

        async def load() -> Bot:
            async with tenant_tx(self.pool, tenant) as conn:
                row = await conn.fetchrow("SELECT * FROM gateway.slack_installations WHERE team_id = $1", team_id)
            if row is None:
                raise LookupError(team_id)
            return Bot(app_id=row["app_id"] or None, enterprise_id=row["enterprise_id"] or None, team_id=team_id,
                       bot_token=self._fernet.decrypt(bytes(row["bot_token"])).decode(), bot_id=row["bot_id"],
                       bot_user_id=row["bot_user_id"], bot_scopes=list(row["bot_scopes"]),
                       installed_at=row["install_time"], custom_values={TENANT_KEY: tenant})

        try:
            return await self._bots.get_or_load(team_id, load)
        except LookupError:
            return None

    async def async_find_installation(self, *, enterprise_id: str | None, team_id: str | None,
                                      user_id: str | None = None,
                                      is_enterprise_install: bool | None = False) -> Installation | None:
        bot = await self.async_find_bot(enterprise_id=enterprise_id, team_id=team_id)
        if bot is None:
            return None
        return Installation(app_id=bot.app_id, enterprise_id=bot.enterprise_id, team_id=bot.team_id,
                            bot_token=bot.bot_token, bot_id=bot.bot_id, bot_user_id=bot.bot_user_id,
                            bot_scopes=bot.bot_scopes, user_id=user_id or "", installed_at=bot.installed_at,
                            custom_values=bot.custom_values)

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self.async_delete_all(enterprise_id=enterprise_id, team_id=team_id)

    async def async_delete_installation(self, *, enterprise_id: str | None, team_id: str | None,
                                        user_id: str | None = None) -> None:
        await self.async_delete_all(enterprise_id=enterprise_id, team_id=team_id)

    async def async_delete_all(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        if not team_id:
            return
        tenant = await self.tenant_of(team_id)
        if tenant is None:
            return
        async with tenant_tx(self.pool, tenant) as conn:
            await conn.execute("DELETE FROM gateway.slack_installations WHERE team_id = $1", team_id)
        self._tenants.drop(team_id)
        self._bots.drop(team_id)
