"""Wiring of the executor process: config, migrations, peers, the engine, heartbeat and sweeper, the gRPC server."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
from pydantic import Field

from mesh import client
from mesh.config import MeshConfig, require
from mesh.db import create_pool, migrate
from mesh.principal import Verifier
from mesh.resilience import Backoff, BreakerPolicy, RetryPolicy
from mesh.server import Running, create_server, serve

from .app import ExecutorApp, Timing
from .peers import MemoryWorkingMemory, PlannerReplanner, RegistryCatalog, RegistryInvoker
from .ports import InProcessWorkingMemory, Replanner, WorkingMemory
from .runner import Engine, Limits
from .service import executor_spec
from .store import PgRunStore

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SCHEMA = "executor"
log = logging.getLogger("agentmesh.executor")


class ExecutorConfig(MeshConfig):
    """The executor's settings. Without a planner there is no re-plan; without memory, step outputs stay in this
    process (a run taken over elsewhere calls again the steps whose outputs it needs)."""

    registry_addr: str | None = Field(default=None, description="RegistryService host:port (required)")
    planner_addr: str | None = Field(default=None, description="PlannerService host:port; unset: no re-plans")
    memory_addr: str | None = Field(default=None, description="MemoryService host:port; unset: outputs in-process")
    lease_s: float = Field(default=5.0, gt=0, description="how long a run's lease lasts without renewal")
    sweep_interval_s: float = Field(default=1.0, gt=0, description="how often orphaned runs are looked for")
    resume_budget_s: float = Field(default=30.0, gt=0, description="time a run taken over gets to finish")
    max_parallel_per_run: int = Field(default=4, ge=1)
    max_parallel_per_tenant: int = Field(default=32, ge=1)
    retry_max_attempts: int = Field(default=4, ge=1)
    retry_base_s: float = Field(default=0.05, gt=0)
    retry_cap_s: float = Field(default=1.0, gt=0)
    retry_in_flight_wait_s: float = Field(default=0.1, gt=0)
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_min_calls: int = Field(default=10, ge=1)
    breaker_window_s: float = Field(default=30.0, gt=0)
    breaker_cooldown_s: float = Field(default=10.0, gt=0)
    breaker_half_open_probes: int = Field(default=1, ge=1)
    approval_timeout_s: float = Field(default=300.0, gt=0)
    tools_cache_s: float = Field(default=30.0, ge=0, description="how long a user's ListTools answer is reused")
    reserve_s: float = Field(default=0.2, ge=0, description="kept back from a stream's deadline (at least 10 %) to "
                                                            "record the run's end and send the final event in time")
    pool_size: int = Field(default=20, ge=2)

    def limits(self) -> Limits:
        return Limits(
            max_parallel_per_run=self.max_parallel_per_run, max_parallel_per_tenant=self.max_parallel_per_tenant,
            retry=RetryPolicy(self.retry_max_attempts, Backoff(self.retry_base_s, self.retry_cap_s),
                              self.retry_in_flight_wait_s),
            breaker=BreakerPolicy(self.breaker_failure_rate, self.breaker_min_calls, self.breaker_window_s,
                                  self.breaker_cooldown_s, self.breaker_half_open_probes),
            approval_timeout_s=self.approval_timeout_s)

    def timing(self) -> Timing:
        return Timing(lease_s=self.lease_s, sweep_interval_s=self.sweep_interval_s,
                      resume_budget_s=self.resume_budget_s)


@dataclass
class ExecutorRunning(Running):
    """A started executor: the gRPC server plus its app (engine, store) and what stop() also closes."""

    app: ExecutorApp | None = None
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def stop(self, grace_s: float, notice_s: float = 0.0) -> None:
        await super().stop(grace_s, notice_s)
        for close in reversed(self.closers):
            await close()


async def _build(config: ExecutorConfig) -> tuple[ExecutorApp, list[Callable[[], Awaitable[None]]]]:
    registry_addr = require(config.registry_addr, "AGENTMESH_REGISTRY_ADDR")
    await migrate(config.database_admin_url, SCHEMA, MIGRATIONS)
    closers: list[Callable[[], Awaitable[None]]] = []
    pool = await create_pool(config.database_url, min_size=2, max_size=config.pool_size)
    closers.append(pool.close)
    redis = aioredis.from_url(config.redis_url)
    closers.append(redis.aclose)
    registry = client.channel(registry_addr)
    closers.append(registry.close)
    catalog = RegistryCatalog(registry, config.tools_cache_s)
    replanner: Replanner | None = None
    if config.planner_addr:
        planner = client.channel(config.planner_addr)
        closers.append(planner.close)
        replanner = PlannerReplanner(planner, registry, catalog)
    memory: WorkingMemory = InProcessWorkingMemory()
    if config.memory_addr:
        memory_channel = client.channel(config.memory_addr)
        closers.append(memory_channel.close)
        memory = MemoryWorkingMemory(memory_channel)
    store = PgRunStore(pool, redis, owner=f"executor-{uuid.uuid4().hex[:12]}", lease_s=config.lease_s)
    engine = Engine(invoker=RegistryInvoker(registry), catalog=catalog, store=store, memory=memory,
                    replanner=replanner, limits=config.limits())
    jwks = config.resolved_jwks_path
    verifier = Verifier(jwks_url=config.jwks_url) if config.jwks_url else Verifier(jwks_path=jwks)
    app = ExecutorApp(engine, store, verifier, config.timing())
    closers.append(app.stop_background)
    return app, closers


async def create_executor_server(config: ExecutorConfig) -> ExecutorRunning:
    """Starts the executor (port 0 in tests): migrations applied, heartbeat and sweeper running."""
    app, closers = await _build(config)
    running = await create_server(config, [executor_spec(app, config.reserve_s)], service_label="executor")
    app.start_background()
    return ExecutorRunning(running.server, running.port, running.health, running.metrics_port, running.services,
                           app=app, closers=closers)


async def _serve(config: ExecutorConfig) -> None:
    app, closers = await _build(config)

    async def started(running: Running) -> None:
        app.start_background()

    async def stopped() -> None:
        for close in reversed(closers):
            await close()

    await serve(config, [executor_spec(app, config.reserve_s)], service_label="executor", on_started=started,
                on_stopped=stopped)


def main() -> None:
    """Runs the executor until SIGTERM."""
    asyncio.run(_serve(ExecutorConfig()))


if __name__ == "__main__":
    main()
