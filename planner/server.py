"""Wiring of the planner service: providers, breakers, Redis (limits, plan cache), the embedded planner, tenants."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

import redis.asyncio as redis

from mesh.principal import Verifier
from mesh.resilience import Backoff, BreakerPolicy, BreakerRegistry, Clock, RetryPolicy
from mesh.server import Running, create_server, serve
from planner.answering import Responder
from planner.config import PlannerConfig
from planner.embedded_tier import EmbeddedTier, shared_tier
from planner.models.cache import PlanCache
from planner.models.gateway import ModelGateway, create_provider
from planner.models.limits import TenantLimiter
from planner.models.prices import PriceTable
from planner.models.tenants import StaticTenants, TenantModels, TenantSettings
from planner.peers import RegistryTenants
from planner.planning import Planner, PlannerSettings
from planner.relevance import ToolRanker
from planner.service import PlannerServicer, service_spec

log = logging.getLogger("agentmesh.planner")


class _EmbeddedOnly:
    """Every tenant plans with the embedded planner (no registry and no tenants file configured)."""

    def __init__(self, config: PlannerConfig) -> None:
        self._settings = TenantModels({}, config.model_limits)

    async def get(self, principal: object, timeout_s: float) -> TenantModels:
        return self._settings

    async def close(self) -> None:
        return None


def create_tenants(config: PlannerConfig) -> TenantSettings:
    if config.registry_addr:
        return RegistryTenants(config.registry_addr, config.registry_timeout_s, config.tenant_settings_ttl_s,
                               config.model_limits)
    if config.tenants_file is not None:
        return StaticTenants.from_file(config.tenants_file, config.model_limits)
    return _EmbeddedOnly(config)


@dataclass
class Parts:
    """What the planner service is made of and owns."""

    servicer: PlannerServicer
    gateway: ModelGateway
    tenants: TenantSettings
    redis: redis.Redis
    embedded: EmbeddedTier

    async def close(self) -> None:
        await self.gateway.close()
        await self.tenants.close()
        await self.redis.aclose()


def build(config: PlannerConfig, *, tenants: TenantSettings | None = None, embedded: EmbeddedTier | None = None,
          clock: Clock | None = None, rng: random.Random | None = None) -> Parts:
    """Assembles the planner from its configuration (tests pass a fake clock for the breakers)."""
    client = redis.Redis.from_url(config.redis_url)
    providers = {name: create_provider(name, settings) for name, settings in config.providers().items()
                 if settings.configured}
    breakers = BreakerRegistry(BreakerPolicy(config.breaker_failure_rate, config.breaker_min_calls,
                                             config.breaker_window_s, config.breaker_cooldown_s),
                               **({"clock": clock} if clock is not None else {}))
    retry = RetryPolicy(config.retry_attempts, Backoff(config.retry_base_s, config.retry_cap_s))
    gateway = ModelGateway(providers, PriceTable(config.model_prices), breakers, retry, TenantLimiter(client),
                           config.fallback_reserve_s, rng)
    embedded = embedded or shared_tier()
    cache = PlanCache(client, config.plan_cache_ttl_s) if config.plan_cache_ttl_s > 0 else None
    ranker = ToolRanker()
    settings = PlannerSettings(config.token_batch_chars, config.token_batch_ms, config.max_prompt_tools)
    planner = Planner(gateway, embedded, cache, ranker, settings, config.resolved_today)
    tenants = tenants or create_tenants(config)
    return Parts(PlannerServicer(planner, Responder(gateway), tenants), gateway, tenants, client, embedded)


@dataclass
class PlannerServer(Running):
    """A started planner server and what it owns."""

    parts: Parts | None = None

    async def stop(self, grace_s: float, notice_s: float = 0.0) -> None:
        await super().stop(grace_s, notice_s)
        if self.parts is not None:
            await self.parts.close()


async def create_planner_server(config: PlannerConfig, *, verifier: Verifier | None = None,
                                tenants: TenantSettings | None = None, embedded: EmbeddedTier | None = None,
                                clock: Clock | None = None) -> PlannerServer:
    """Builds and starts the planner on config.port (0 picks a free port); the embedded planner is warm first."""
    parts = build(config, tenants=tenants, embedded=embedded, clock=clock)
    await asyncio.to_thread(parts.embedded.warm)
    try:
        running = await create_server(config, [service_spec(parts.servicer)], verifier=verifier,
                                      service_label="planner")
    except BaseException:
        await parts.close()
        raise
    return PlannerServer(running.server, running.port, running.health, running.metrics_port, running.services,
                         parts)


async def _serve(config: PlannerConfig) -> None:
    parts = build(config)
    await asyncio.to_thread(parts.embedded.warm)
    configured = sorted(parts.gateway.providers)
    log.info("model providers", extra={"fields": {"configured": configured or ["embedded only"]}})
    await serve(config, [service_spec(parts.servicer)], service_label="planner", on_stopped=parts.close)


def main() -> None:
    """Runs the planner until SIGTERM."""
    asyncio.run(_serve(PlannerConfig()))


if __name__ == "__main__":
    main()
