"""Wiring of the memory service: Redis, PostgreSQL (migrated at start), the embedder, summarizer and registry peer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import cast

import openai
import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster

from memory import facts as facts_mod
from memory.condenser import ModelCondenser
from memory.config import MemoryConfig
from memory.context import extractive
from memory.embedder import Embedder, LocalEmbedder, OpenAIEmbedder
from memory.peers import RegistryPeer
from memory.service import Stores, service_spec
from memory.sessions import SessionStore, SummaryCache
from memory.working import WorkingStateStore
from mesh import tokens
from mesh.principal import Verifier
from mesh.server import Running, create_server, serve

log = logging.getLogger("agentmesh.memory")


def create_embedder(config: MemoryConfig) -> Embedder:
    if config.embedding_provider == "openai":
        key = config.openai_api_key.get_secret_value() if config.openai_api_key else None
        return OpenAIEmbedder(config.openai_embedding_model, config.openai_embedding_dimensions,
                              base_url=config.openai_base_url, api_key=key, timeout_s=config.openai_timeout_s)
    return LocalEmbedder()


def create_condenser(config: MemoryConfig, client: redis.Redis, index_ttl_s: float) -> ModelCondenser | None:
    if config.summarizer != "openai":
        return None
    key = config.openai_api_key.get_secret_value() if config.openai_api_key else "unset"
    # No retries: within a request's budget the extractive summary is the better second try.
    chat = openai.AsyncOpenAI(base_url=config.openai_base_url, api_key=key, timeout=config.openai_summary_timeout_s,
                              max_retries=0)
    return ModelCondenser(chat, config.openai_summary_model, tokens.count,
                          SummaryCache(client, config.session_ttl_s, index_ttl_s), extractive(tokens.count))


async def _purge_loop(store: facts_mod.FactStore, interval_s: float) -> None:
    while True:
        try:
            deleted = await store.purge_expired()
            if deleted:
                log.info("purged expired facts", extra={"fields": {"deleted": deleted}})
        except Exception as err:  # the next round tries again; a purge never takes the service down
            log.warning("purge of expired facts failed", extra={"fields": {"error": repr(err)}})
        await asyncio.sleep(interval_s)


@dataclass
class Resources:
    """Connections and tasks the service owns, closed when it stops."""

    stores: Stores
    pool: object
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.stores.registry is not None:
            await self.stores.registry.close()
        if self.stores.condenser is not None:
            await self.stores.condenser.close()
        await self.stores.embedder.close()
        await self.stores.redis.aclose()
        await self.pool.close()  # type: ignore[attr-defined]


async def open_resources(config: MemoryConfig) -> Resources:
    """Migrates the schema, connects to Redis and PostgreSQL, loads the embedder, starts the purge loop."""
    embedder = create_embedder(config)
    await facts_mod.migrate_schema(config.database_admin_url, embedder.model, embedder.dimension)
    pool = await facts_mod.create_pool(config.database_url)
    # A cluster client speaks the same commands; every multi-key operation stays within one tenant's slot.
    client = cast(redis.Redis, RedisCluster.from_url(config.redis_url)) if config.redis_cluster \
        else redis.Redis.from_url(config.redis_url)
    index_ttl = max(config.session_ttl_s, config.working_state_ttl_s)
    registry = RegistryPeer(config.registry_addr, config.registry_timeout_s, config.tenant_settings_ttl_s) \
        if config.registry_addr else None
    stores = Stores(client, SessionStore(client, config.session_ttl_s, config.session_max_turns, index_ttl),
                    WorkingStateStore(client, config.working_state_ttl_s, index_ttl),
                    facts_mod.FactStore(pool, embedder.model, embedder.dimension), embedder, registry,
                    create_condenser(config, client, index_ttl))
    await embedder.warm_up()
    resources = Resources(stores, pool)
    if config.purge_interval_s > 0:
        resources.tasks.append(asyncio.create_task(_purge_loop(stores.facts, config.purge_interval_s)))
    return resources


@dataclass
class MemoryServer(Running):
    """A started memory server and what it owns."""

    resources: Resources | None = None

    async def stop(self, grace_s: float, notice_s: float = 0.0) -> None:
        await super().stop(grace_s, notice_s)
        if self.resources is not None:
            await self.resources.close()


async def create_memory_server(config: MemoryConfig, *, verifier: Verifier | None = None) -> MemoryServer:
    """Builds and starts the memory server on config.port (0 picks a free port)."""
    resources = await open_resources(config)
    try:
        running = await create_server(config, [service_spec(config, resources.stores)], verifier=verifier,
                                      service_label="memory")
    except BaseException:
        await resources.close()
        raise
    return MemoryServer(running.server, running.port, running.health, running.metrics_port, running.services,
                        resources)


async def _serve(config: MemoryConfig) -> None:
    resources = await open_resources(config)
    await serve(config, [service_spec(config, resources.stores)], service_label="memory",
                on_stopped=resources.close)


def main() -> None:
    asyncio.run(_serve(MemoryConfig()))


if __name__ == "__main__":
    main()
