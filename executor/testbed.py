"""A private mesh in one process for the executor's service tests and benchmark: the four vendor sandboxes, their
connectors, the registry (seeded with the demo tenants) and executors, over real gRPC, PostgreSQL and Redis."""

from __future__ import annotations

import importlib
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from connectors.common.sandbox import RunningSandboxes, load_fixtures, sandbox_classes, start_sandboxes
from connectors.common.server import ConnectorConfig, create_connector_server
from connectors.common.service import Vendor
from connectors.registry.config import RegistryConfig
from connectors.registry.seed import seed_demo
from connectors.registry.server import create_registry_server
from mesh.principal import KeyRing, Minter, Principal
from mesh.server import Running

from .server import ExecutorConfig, ExecutorRunning, create_executor_server

VENDORS = ("servicenow", "jira", "okta", "salesforce")
_JIRA_KEY_PROPERTY = "agentmesh.idempotency"


@dataclass
class Testbed:
    """Everything below the executor, listening on loopback; `endpoints` has the shape of the stack's file."""

    __test__ = False  # not a pytest test class

    keyring: KeyRing
    state_dir: Path
    redis_url: str
    admin_dsn: str
    app_dsn: str
    sandboxes: RunningSandboxes
    connectors: dict[str, Running]
    vendors: list[Vendor]
    registry: Running
    http: aiohttp.ClientSession
    endpoints: dict[str, Any] = field(default_factory=dict)
    executors: list[ExecutorRunning] = field(default_factory=list)

    @classmethod
    async def start(cls, keyring: KeyRing, state_dir: Path, redis_url: str, admin_dsn: str, app_dsn: str,
                    vendor_timeout_s: float = 2.0) -> Testbed:
        sandboxes = await start_sandboxes([cls_() for cls_ in sandbox_classes().values()])
        base: dict[str, Any] = {"state_dir": state_dir, "jwks_path": keyring.jwks_path, "port": 0,
                                "redis_url": redis_url, "database_url": app_dsn, "database_admin_url": admin_dsn}
        connectors: dict[str, Running] = {}
        vendors: list[Vendor] = []
        for vendor in VENDORS:
            server = importlib.import_module(f"connectors.{vendor}.server")
            vendors.append(server.make_vendor(ConnectorConfig(vendor_timeout_s=vendor_timeout_s, **base)))
            connectors[vendor] = await create_connector_server(ConnectorConfig(**base), vendors[-1])
        registry = await create_registry_server(RegistryConfig(**base, callback_port=None,
                                                               signing_keys_dir=keyring.folder))
        endpoints: dict[str, Any] = {
            "services": {"registry": f"127.0.0.1:{registry.port}",
                         **{f"connector-{v}": f"127.0.0.1:{r.port}" for v, r in connectors.items()}},
            "sandboxes": sandboxes.base_urls, "sandbox_admin": sandboxes.admin_urls,
            "jwks_path": str(keyring.jwks_path), "keys_dir": str(keyring.folder), "redis_url": redis_url,
            "database_url": app_dsn, "database_admin_url": admin_dsn}
        await seed_demo(endpoints, Minter(keyring))
        return cls(keyring, state_dir, redis_url, admin_dsn, app_dsn, sandboxes, connectors, vendors, registry,
                   aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)), endpoints)

    async def close(self) -> None:
        for executor in self.executors:
            await executor.stop(0)
        await self.registry.stop(0)
        for running in self.connectors.values():
            await running.stop(0)
        for vendor in self.vendors:
            await vendor.close()
        await self.sandboxes.close()
        await self.http.close()

    # --- executors ---------------------------------------------------------------------------------------------
    def executor_config(self, **overrides: Any) -> ExecutorConfig:
        settings: dict[str, Any] = {
            "state_dir": self.state_dir, "jwks_path": self.keyring.jwks_path, "port": 0, "redis_url": self.redis_url,
            "database_url": self.app_dsn, "database_admin_url": self.admin_dsn,
            "registry_addr": self.endpoints["services"]["registry"], "lease_s": 1.0, "sweep_interval_s": 0.2,
            "retry_base_s": 0.02, "retry_cap_s": 0.3}
        settings.update(overrides)
        return ExecutorConfig(**settings)

    def executor_env(self, **overrides: Any) -> dict[str, str]:
        """The environment of an executor process (`python -m executor.server`) joining this testbed."""
        config = self.executor_config(**overrides)
        env = {f"AGENTMESH_{name.upper()}": str(value) for name, value in config.model_dump().items()
               if value is not None and not isinstance(value, dict | list)}
        return env

    async def start_executor(self, **overrides: Any) -> ExecutorRunning:
        running = await create_executor_server(self.executor_config(**overrides))
        self.executors.append(running)
        return running

    # --- principals ----------------------------------------------------------------------------------------------
    def user(self, tenant: str, email: str, *, run_id: str = "", deadline_s: float = 5.0,
             expires_in_s: float | None = None) -> Principal:
        """The principal the gateway would mint for a demo user (groups from the fixtures)."""
        person = next(u for u in load_fixtures()[tenant]["users"] if u["email"] == email)
        minter = Minter(self.keyring)
        if expires_in_s is None:
            return minter.mint_user(tenant, email, person["groups"], deadline_s=deadline_s,
                                    run_id=run_id or uuid.uuid4().hex)
        short = Principal(tenant, email, tuple(person["groups"]), uuid.uuid4().hex, run_id or uuid.uuid4().hex,
                          "user", time.time() + expires_in_s)
        return replace(short, token=minter.mint(short))

    # --- sandboxes --------------------------------------------------------------------------------------------
    async def set_faults(self, vendor: str, **faults: Any) -> None:
        async with self.http.put(f"{self.sandboxes.admin_urls[vendor]}/__sandbox/faults", json=faults) as resp:
            resp.raise_for_status()

    async def clear_faults(self) -> None:
        for url in self.sandboxes.admin_urls.values():
            async with self.http.delete(f"{url}/__sandbox/faults") as resp:
                resp.raise_for_status()

    async def counters(self, vendor: str) -> dict[str, dict[str, int]]:
        async with self.http.get(f"{self.sandboxes.admin_urls[vendor]}/__sandbox/counters") as resp:
            resp.raise_for_status()
            counters: dict[str, dict[str, int]] = await resp.json()
        return counters

    def records_by_key(self) -> Counter[str]:
        """How many records each idempotency key created in the sandboxes: ServiceNow incidents (correlation id)
        and Jira issues and comments (entity property). Any count above one is a duplicated side effect."""
        found: Counter[str] = Counter()
        servicenow = self.sandboxes.sandboxes.get("servicenow")
        if servicenow is not None:
            for state in servicenow.states.values():  # type: ignore[attr-defined]
                for record in state.tables["incident"].values():
                    if record.get("correlation_id"):
                        found[f"servicenow:{record['correlation_id']}"] += 1
        jira = self.sandboxes.sandboxes.get("jira")
        if jira is not None:
            for site in jira.sites.values():  # type: ignore[attr-defined]
                for issue in site.issues.values():
                    key = (issue.properties.get(_JIRA_KEY_PROPERTY) or {}).get("key")
                    if key:
                        found[f"jira:issue:{key}"] += 1
                    for comment in issue.comments:
                        key = (comment.properties.get(_JIRA_KEY_PROPERTY) or {}).get("key")
                        if key:
                            found[f"jira:comment:{key}"] += 1
        return found


def duplicates(records: Counter[str]) -> int:
    """Side effects beyond the first per idempotency key."""
    return sum(n - 1 for n in records.values() if n > 1)
