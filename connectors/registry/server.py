"""Wiring of the registry process: migrations, pools, secret store, OAuth callback, manifest watch, gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from connectors.registry.audit import AuditLog
from connectors.registry.callback import callback_app
from connectors.registry.catalog import load_catalog
from connectors.registry.config import RegistryConfig
from connectors.registry.credentials import Credentials
from connectors.registry.idempotency import Idempotency
from connectors.registry.invoke import Invoker
from connectors.registry.linking import CALLBACK_PATH, Linker
from connectors.registry.oauth import OAuthClient, StateSealer
from connectors.registry.secretstore import EmbeddedStore, SecretStore, VaultStore
from connectors.registry.service import RegistryParts, registry_spec
from connectors.registry.upstream import Upstream
from connectors.registry.watcher import Watcher
from mesh.db import create_pool, migrate
from mesh.principal import KeyRing, Minter
from mesh.server import Running, ServiceSpec, create_server, serve

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SCHEMA = "registry"
log = logging.getLogger("agentmesh.registry")


@dataclass
class RegistryRunning(Running):
    """A started registry: the gRPC server plus the OAuth callback's URL and what stop() also closes."""

    callback_url: str = ""
    watcher: Watcher | None = None
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def stop(self, grace_s: float, notice_s: float = 0.0) -> None:
        await super().stop(grace_s, notice_s)
        for close in reversed(self.closers):
            await close()


@dataclass
class _Built:
    spec: ServiceSpec
    watcher: Watcher
    callback_url: str
    closers: list[Callable[[], Awaitable[None]]]


def _token_source(config: RegistryConfig) -> Callable[[str], str | None]:
    """The registry's own short-lived operator principal (for Describe in the watch), when it has signing keys."""
    folder = config.resolved_signing_keys_dir
    if folder is None:
        log.warning("no signing keys: connector manifests are fetched at registration only")
        return lambda tenant: None
    ring = KeyRing(folder)
    return lambda tenant: Minter(ring).mint_operator("registry@agentmesh", tenant=tenant, ttl_s=60).token


async def _build(config: RegistryConfig) -> _Built:
    await migrate(config.database_admin_url, SCHEMA, MIGRATIONS)
    closers: list[Callable[[], Awaitable[None]]] = []
    pool = await create_pool(config.database_url, min_size=2, max_size=config.pool_size)
    closers.append(pool.close)
    lock_pool = await create_pool(config.database_url, min_size=1, max_size=4)
    closers.append(lock_pool.close)
    store: SecretStore
    if config.secret_store == "vault":  # noqa: S105 - the store's kind, not a secret
        if config.vault_token is None:
            raise SystemExit("agentmesh: AGENTMESH_VAULT_TOKEN is required when AGENTMESH_SECRET_STORE=vault")
        store = VaultStore(config.vault_url, config.vault_token.get_secret_value(), config.vault_mount,
                           config.vault_prefix, config.vault_timeout_s)
    else:
        store = EmbeddedStore(pool, config.fernet_key())
    closers.append(store.close)
    oauth = OAuthClient(config.oauth_timeout_s)
    closers.append(oauth.close)
    credentials = Credentials(pool, lock_pool, store, oauth, config.refresh_margin_s)
    audit = AuditLog(pool)
    await audit.ensure_partitions(config.audit_months_ahead)
    idempotency = Idempotency(pool, config.idempotency_ttl_s)
    upstream = Upstream()
    closers.append(upstream.close)

    public_url = config.public_url.rstrip("/")
    linker = Linker(pool, credentials, oauth, StateSealer(config.fernet_key(), config.link_state_ttl_s), audit, "")
    if config.callback_port is not None:
        runner = web.AppRunner(callback_app(linker), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.callback_port)
        await site.start()
        closers.append(runner.cleanup)
        port = runner.addresses[0][1]
        public_url = public_url or f"http://{config.host}:{port}"
    linker.redirect_uri = f"{public_url}{CALLBACK_PATH}" if public_url else ""
    catalog = load_catalog(config.catalog_path)
    invoker = Invoker(pool, credentials, idempotency, audit, upstream, linker.link_url, catalog, config.reserve_s)
    parts = RegistryParts(pool=pool, credentials=credentials, audit=audit, invoker=invoker, linker=linker,
                          upstream=upstream, catalog=catalog, describe_timeout_s=config.connector_timeout_s)
    watcher = Watcher(pool, upstream, _token_source(config), interval_s=config.watch_interval_s,
                      timeout_s=config.connector_timeout_s, audit=audit, idempotency=idempotency,
                      months_ahead=config.audit_months_ahead)
    return _Built(registry_spec(parts), watcher, linker.redirect_uri, closers)


def _start_watch(watcher: Watcher, closers: list[Callable[[], Awaitable[None]]]) -> None:
    task = asyncio.create_task(watcher.run(), name="registry-watch")

    async def cancel() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    closers.append(cancel)


async def create_registry_server(config: RegistryConfig) -> RegistryRunning:
    """Starts the registry (port 0 in tests): migrations applied, callback listening, watch running."""
    built = await _build(config)
    running = await create_server(config, [built.spec], service_label="registry")
    _start_watch(built.watcher, built.closers)
    return RegistryRunning(running.server, running.port, running.health, running.metrics_port, running.services,
                           callback_url=built.callback_url, watcher=built.watcher, closers=built.closers)


async def _serve(config: RegistryConfig) -> None:
    built = await _build(config)

    async def started(running: Running) -> None:
        _start_watch(built.watcher, built.closers)
        log.info("oauth callback at %s", built.callback_url)

    async def stopped() -> None:
        for close in reversed(built.closers):
            await close()

    await serve(config, [built.spec], service_label="registry", on_started=started, on_stopped=stopped)


def main() -> None:
    """Runs the registry until SIGTERM."""
    asyncio.run(_serve(RegistryConfig()))


if __name__ == "__main__":
    main()
