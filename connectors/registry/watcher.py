"""Background upkeep: connector health and manifest versions, audit partitions ahead, expired records purged."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol

import asyncpg

from connectors.registry.audit import AuditLog
from connectors.registry.catalog import manifest_digest, manifest_violations
from connectors.registry.idempotency import Idempotency
from connectors.registry.registrations import Registration, list_registrations, record_check
from connectors.registry.tenants import tenant_ids
from mesh.db import tenant_tx
from mesh.errors import MeshError

log = logging.getLogger("agentmesh.registry.watch")
MAINTENANCE_EVERY_S = 3600.0


class Probe(Protocol):
    """What the watcher asks a connector endpoint (upstream.Upstream)."""

    async def healthy(self, endpoint: str, timeout_s: float) -> bool: ...

    async def describe(self, endpoint: str, token: str, timeout_s: float) -> dict[str, Any]: ...


class Watcher:
    """Checks every registered endpoint each interval; a new manifest version replaces the stored manifest."""

    def __init__(self, pool: asyncpg.Pool, probe: Probe, token_for: Callable[[str], str | None], *,
                 interval_s: float, timeout_s: float, audit: AuditLog, idempotency: Idempotency,
                 months_ahead: int) -> None:
        self.pool = pool
        self.probe = probe
        self.token_for = token_for
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.audit = audit
        self.idempotency = idempotency
        self.months_ahead = months_ahead
        self._last_maintenance = 0.0

    async def run(self) -> None:
        while True:
            try:
                await self.check_all()
                if time.monotonic() - self._last_maintenance > MAINTENANCE_EVERY_S:
                    await self.maintain()
            except (asyncpg.PostgresError, OSError, MeshError) as err:
                log.warning("registry upkeep failed: %s", err)
            await asyncio.sleep(self.interval_s)

    async def maintain(self) -> None:
        """Audit partitions ahead of time, audit rows past retention, idempotency records past expiry."""
        self._last_maintenance = time.monotonic()
        await self.audit.ensure_partitions(self.months_ahead)
        await self.audit.purge()
        async with self.pool.acquire() as conn:
            tenants = await tenant_ids(conn)
        for tenant in tenants:
            await self.idempotency.purge(tenant)

    async def check_all(self) -> int:
        """One round over every tenant's registrations; returns how many manifests changed."""
        async with self.pool.acquire() as conn:
            tenants = await tenant_ids(conn)
        by_endpoint: dict[str, list[Registration]] = defaultdict(list)
        for tenant in tenants:
            async with tenant_tx(self.pool, tenant) as conn:
                for registration in await list_registrations(conn, tenant):
                    by_endpoint[registration.endpoint].append(registration)
        results = await asyncio.gather(*(self._check(endpoint, regs) for endpoint, regs in by_endpoint.items()))
        return sum(results)

    async def _check(self, endpoint: str, registrations: list[Registration]) -> int:
        healthy = await self.probe.healthy(endpoint, self.timeout_s)
        manifest: dict[str, Any] | None = None
        token = self.token_for(registrations[0].tenant_id) if healthy else None
        if token:
            try:
                manifest = await self.probe.describe(endpoint, token, self.timeout_s)
            except MeshError as err:
                log.warning("Describe of %s failed: %s", endpoint, err.message)
        changed = 0
        for registration in registrations:
            fresh = None
            if (manifest is not None and manifest_digest(manifest) != registration.manifest_digest
                    and not manifest_violations(manifest, registration.connector)):
                fresh = manifest
                changed += 1
                log.info("connector %s of %s changed version %s -> %s", registration.connector,
                         registration.tenant_id, registration.manifest_version, manifest.get("version"))
            if fresh is None and healthy == registration.healthy:
                continue
            async with tenant_tx(self.pool, registration.tenant_id) as conn:
                await record_check(conn, registration.tenant_id, registration.connector, endpoint, healthy, fresh)
        return changed
