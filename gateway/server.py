"""Wiring of the gateway process: migrations, PostgreSQL, Redis, the signing key, peers, AgentService, Slack."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as redis
from aiohttp import web

from gateway.auth import Authenticator
from gateway.channels.slack import SlackChannel
from gateway.channels.slack_store import SlackInstallations, fernet_key
from gateway.config import GatewayConfig
from gateway.conversation import Conversations, Tuning
from gateway.idp import IdentityProviders
from gateway.keys import KeyStore
from gateway.lookups import Lookups
from gateway.peers import Peers
from gateway.ratelimit import RateLimiter
from gateway.runlog import RunLog
from gateway.service import AgentServicer, agent_spec
from mesh.config import require
from mesh.db import create_pool, migrate
from mesh.principal import KeyRing, Minter
from mesh.server import Running, ServiceSpec, create_server, serve

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SCHEMA = "gateway"
log = logging.getLogger("agentmesh.gateway")


@dataclass
class GatewayRunning(Running):
    """A started gateway: the gRPC server, the Slack endpoint's port (when on), and what stop() closes."""

    slack_port: int | None = None
    slack: SlackChannel | None = None
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def stop(self, grace_s: float, notice_s: float = 0.0) -> None:
        await super().stop(grace_s, notice_s)
        for close in reversed(self.closers):
            await close()


@dataclass
class _Built:
    spec: ServiceSpec
    slack: SlackChannel | None
    conversations: Conversations
    closers: list[Callable[[], Awaitable[None]]]


def _minter(config: GatewayConfig) -> Minter:
    ring = KeyRing(config.keys_dir)
    if not (ring.folder / "current").exists():
        raise SystemExit(f"agentmesh: the gateway mints principals but {ring.folder} holds no signing key "
                         "(set AGENTMESH_SIGNING_KEYS_DIR or AGENTMESH_STATE_DIR)")
    return Minter(ring)


async def _build(config: GatewayConfig) -> _Built:
    peers = Peers(require(config.registry_addr, "AGENTMESH_REGISTRY_ADDR"),
                  require(config.memory_addr, "AGENTMESH_MEMORY_ADDR"),
                  require(config.planner_addr, "AGENTMESH_PLANNER_ADDR"),
                  require(config.executor_addr, "AGENTMESH_EXECUTOR_ADDR"))
    minter = _minter(config)
    closers: list[Callable[[], Awaitable[None]]] = [peers.close]
    await migrate(config.database_admin_url, SCHEMA, MIGRATIONS)
    pool = await create_pool(config.database_url, min_size=1, max_size=config.pool_size)
    closers.append(pool.close)
    client = redis.Redis.from_url(config.redis_url)
    closers.append(client.aclose)
    providers = IdentityProviders(pool, config.key_cache_ttl_s)
    closers.append(providers.close)
    lookups = Lookups(peers, minter, default_timeout_s=config.request_timeout_s,
                      tenant_ttl_s=config.tenant_cache_ttl_s, directory_ttl_s=config.directory_cache_ttl_s,
                      tools_ttl_s=config.tools_cache_ttl_s)
    runlog = RunLog(client, config.run_log_ttl_s)
    conversations = Conversations(peers, lookups, RateLimiter(client), minter, runlog,
                                  Tuning(config.context_budget_tokens, config.max_replans,
                                         config.background_timeout_s))
    auth = Authenticator(KeyStore(pool, config.key_cache_ttl_s), providers, lookups)
    slack = None
    if config.slack_enabled:
        assert config.slack_signing_secret is not None
        installations = SlackInstallations(pool, fernet_key(config.state_dir, config.secret_key.get_secret_value()
                                                            if config.secret_key else None))
        slack = SlackChannel(signing_secret=config.slack_signing_secret.get_secret_value(),
                             api_url=config.slack_api_url, installations=installations, auth=auth, lookups=lookups,
                             conversations=conversations, runlog=runlog, redis_client=client,
                             update_interval_s=config.slack_update_interval_s)
    spec = agent_spec(AgentServicer(auth, conversations, runlog, max_in_flight=config.max_in_flight),
                      config.max_request_chars)
    return _Built(spec, slack, conversations, closers)


async def _start_slack(config: GatewayConfig, slack: SlackChannel,
                       closers: list[Callable[[], Awaitable[None]]]) -> int | None:
    port = None
    if config.slack_port is not None:
        runner = web.AppRunner(slack.web_app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, config.host, config.slack_port).start()
        closers.append(runner.cleanup)
        port = int(runner.addresses[0][1])
        log.info("slack events endpoint", extra={"fields": {"port": port}})
    if config.slack_app_token is not None:
        await slack.start_socket_mode(config.slack_app_token.get_secret_value())
        closers.append(slack.close)
    return port


async def create_gateway_server(config: GatewayConfig) -> GatewayRunning:
    """Starts the gateway (port 0 in tests): AgentService, and the Slack app when configured."""
    built = await _build(config)
    try:
        running = await create_server(config, [built.spec], service_label="gateway")
    except BaseException:
        for close in reversed(built.closers):
            await close()
        raise
    closers = [*built.closers, lambda: built.conversations.drain(config.shutdown_grace_s)]
    slack_port = await _start_slack(config, built.slack, closers) if built.slack is not None else None
    return GatewayRunning(running.server, running.port, running.health, running.metrics_port, running.services,
                          slack_port=slack_port, slack=built.slack, closers=closers)


async def _serve(config: GatewayConfig) -> None:
    built = await _build(config)
    closers = [*built.closers, lambda: built.conversations.drain(config.shutdown_grace_s)]

    async def started(running: Running) -> None:
        if built.slack is not None:
            await _start_slack(config, built.slack, closers)

    async def stopped() -> None:
        for close in reversed(closers):
            await close()

    await serve(config, [built.spec], service_label="gateway", on_started=started, on_stopped=stopped)


def main() -> None:
    """Runs the gateway until SIGTERM."""
    asyncio.run(_serve(GatewayConfig()))


if __name__ == "__main__":
    main()
