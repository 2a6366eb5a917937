"""The whole mesh in this process on port 0, with the Slack app against a local fake Slack, seeded like `up`."""

from __future__ import annotations

import importlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connectors.common.sandbox import RunningSandboxes, sandbox_classes, start_sandboxes
from connectors.common.server import ConnectorConfig, create_connector_server
from connectors.registry.config import RegistryConfig
from connectors.registry.server import create_registry_server
from executor.server import ExecutorConfig, create_executor_server
from gateway.channels.fake_slack import Bot, FakeSlack
from gateway.channels.slack_store import SlackInstallations, fernet_key
from gateway.client import AgentClient
from gateway.config import GatewayConfig
from gateway.server import GatewayRunning, create_gateway_server
from memory.config import MemoryConfig
from memory.server import create_memory_server
from mesh.db import create_pool
from mesh.principal import KeyRing, Minter
from mesh.server import Running
from mesh.stack import seed
from planner.config import PlannerConfig
from planner.server import create_planner_server

VENDORS = ("servicenow", "jira", "okta", "salesforce")
SIGNING_SECRET = "e2e-signing-secret"
APP_TOKEN = "xapp-1-e2e"
BOT_TOKENS = {"acme": "xoxb-acme-e2e", "globex": "xoxb-globex-e2e"}
FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"


@dataclass
class Mesh:
    """The running mesh and what tests reach it with."""

    endpoints: dict[str, Any]
    gateway: GatewayRunning
    slack: FakeSlack
    minter: Minter
    state_dir: Path
    app_dsn: str

    @property
    def address(self) -> str:
        return self.endpoints["services"]["gateway"]

    def client(self, tenant: str = "acme", api_key: str | None = None) -> AgentClient:
        return AgentClient(self.address, api_key if api_key is not None else self.endpoints["api_keys"][tenant])

    @property
    def slack_events_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.slack_port}/slack/events"


def slack_team(tenant: str) -> str:
    return str(json.loads((FIXTURES / f"{tenant}.json").read_text())["tenant"]["slack_team_id"])


# Package scope: the mesh stops when the end-to-end tests are done. Left running, its executor's takeover sweeper
# would claim runs that later service tests' executors leave behind on purpose (they share the database) and run
# them against its own registry, whose secret key cannot read those tests' credentials.
@pytest.fixture(scope="package")
async def mesh(backing, keyring: KeyRing, minter: Minter,
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    state = tmp_path_factory.mktemp("e2e-mesh")
    base: dict[str, Any] = {"state_dir": state, "jwks_path": keyring.jwks_path, "port": 0,
                            "redis_url": backing.redis_url, "database_url": backing.app_dsn,
                            "database_admin_url": backing.admin_dsn, "log_level": "WARNING"}
    stops: list[Any] = []
    sandboxes: RunningSandboxes = await start_sandboxes([cls() for cls in sandbox_classes().values()])
    stops.append(sandboxes.close)
    services: dict[str, str] = {}
    for vendor in VENDORS:
        module = importlib.import_module(f"connectors.{vendor}.server")
        made = module.make_vendor(ConnectorConfig(**base))
        running: Running = await create_connector_server(ConnectorConfig(**base), made)
        stops += [lambda r=running: r.stop(0), made.close]
        services[f"connector-{vendor}"] = f"127.0.0.1:{running.port}"
    registry = await create_registry_server(RegistryConfig(**base, callback_port=0, signing_keys_dir=keyring.folder,
                                                           watch_interval_s=3600))
    stops.append(lambda: registry.stop(0))
    services["registry"] = f"127.0.0.1:{registry.port}"
    memory = await create_memory_server(MemoryConfig(**base, registry_addr=services["registry"], purge_interval_s=0))
    stops.append(lambda: memory.stop(0))
    services["memory"] = f"127.0.0.1:{memory.port}"
    planner = await create_planner_server(PlannerConfig(**base, registry_addr=services["registry"]))
    stops.append(lambda: planner.stop(0))
    services["planner"] = f"127.0.0.1:{planner.port}"
    executor = await create_executor_server(ExecutorConfig(**base, registry_addr=services["registry"],
                                                           planner_addr=services["planner"],
                                                           memory_addr=services["memory"]))
    stops.append(lambda: executor.stop(0))
    services["executor"] = f"127.0.0.1:{executor.port}"
    endpoints: dict[str, Any] = {
        "services": services, "sandboxes": sandboxes.base_urls, "sandbox_admin": sandboxes.admin_urls,
        "jwks_path": str(keyring.jwks_path), "keys_dir": str(keyring.folder), "redis_url": backing.redis_url,
        "database_url": backing.app_dsn, "database_admin_url": backing.admin_dsn, "state_dir": str(state)}
    (state / "endpoints.json").write_text(json.dumps(endpoints))
    await seed(endpoints, minter)  # every present seeder, the gateway's API keys last

    slack = FakeSlack(app_tokens={APP_TOKEN})
    await slack.start()
    stops.append(slack.close)
    for tenant, token in BOT_TOKENS.items():
        slack.bots[token] = Bot(slack_team(tenant), f"UBOT{tenant.upper()}", f"BBOT{tenant.upper()}")
    pool = await create_pool(backing.app_dsn, min_size=1, max_size=2)
    installations = SlackInstallations(pool, fernet_key(state))
    for tenant, token in BOT_TOKENS.items():
        await installations.install(tenant, slack_team(tenant), token, bot_user_id=f"UBOT{tenant.upper()}",
                                    bot_id=f"BBOT{tenant.upper()}")
    await pool.close()

    gateway = await create_gateway_server(GatewayConfig(
        **base, registry_addr=services["registry"], memory_addr=services["memory"],
        planner_addr=services["planner"], executor_addr=services["executor"], signing_keys_dir=keyring.folder,
        slack_signing_secret=SIGNING_SECRET, slack_port=0, slack_app_token=APP_TOKEN,
        slack_api_url=slack.api_url, slack_update_interval_s=0.05))
    stops.append(lambda: gateway.stop(0))
    services["gateway"] = f"127.0.0.1:{gateway.port}"
    (state / "endpoints.json").write_text(json.dumps(endpoints))
    yield Mesh(endpoints, gateway, slack, minter, state, backing.app_dsn)
    for stop in reversed(stops):
        await stop()
