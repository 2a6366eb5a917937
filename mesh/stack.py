"""The local stack: Redis, PostgreSQL, the sandboxes and every service as supervised processes (supervisord)."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from supervisor.xmlrpc import SupervisorTransport

from mesh import backing
from mesh.config import MeshConfig
from mesh.principal import KeyRing, Minter

HOST = "127.0.0.1"
VENDORS = ("servicenow", "jira", "salesforce", "okta")


@dataclass(frozen=True)
class Service:
    """A mesh service the stack runs: its name in the endpoints file and the module whose main() serves it."""

    name: str
    module: str
    # Environment variables the service needs in a deployment (docker-compose.yml is checked against them).
    requires: tuple[str, ...] = ()

    @property
    def present(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            return False


_BASE = ("AGENTMESH_PORT", "AGENTMESH_JWKS_PATH")
_DB = ("AGENTMESH_DATABASE_URL", "AGENTMESH_DATABASE_ADMIN_URL")
SERVICES = (
    Service("registry", "connectors.registry.server", (*_BASE, *_DB)),
    *(Service(f"connector-{v}", f"connectors.{v}.server", _BASE) for v in VENDORS),
    Service("memory", "memory.server", (*_BASE, *_DB, "AGENTMESH_REDIS_URL", "AGENTMESH_REGISTRY_ADDR")),
    Service("planner", "planner.server", (*_BASE, "AGENTMESH_REDIS_URL", "AGENTMESH_REGISTRY_ADDR")),
    Service("executor", "executor.server", (*_BASE, *_DB, "AGENTMESH_REDIS_URL", "AGENTMESH_REGISTRY_ADDR",
                                            "AGENTMESH_PLANNER_ADDR", "AGENTMESH_MEMORY_ADDR")),
    Service("gateway", "gateway.server", (*_BASE, *_DB, "AGENTMESH_REDIS_URL", "AGENTMESH_REGISTRY_ADDR",
                                          "AGENTMESH_PLANNER_ADDR", "AGENTMESH_MEMORY_ADDR",
                                          "AGENTMESH_EXECUTOR_ADDR")),
)
# Packages whose `seed` module seeds the demo tenants through the services' admin RPCs, in this order.
SEEDERS = ("connectors.registry.seed", "memory.seed", "planner.seed", "executor.seed", "gateway.seed")


class Stack:
    """Paths and processes of one local stack under a state directory."""

    def __init__(self, config: MeshConfig) -> None:
        self.config = config
        self.state = config.state_dir.resolve()
        self.sup_dir = self.state / "supervisor"
        self.logs = self.state / "logs"
        self.conf = self.sup_dir / "supervisord.conf"
        self.sock = self.sup_dir / "supervisor.sock"
        self.keys = KeyRing(self.state / "keys")

    # --- configuration -------------------------------------------------------------------------
    def ports(self) -> dict[str, int]:
        """Stable ports per process (kept in ports.json so that a restarted stack keeps its addresses)."""
        path = self.state / "ports.json"
        ports: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
        wanted = ["redis", "postgres", *(s.name for s in SERVICES), *(f"metrics-{s.name}" for s in SERVICES)]
        from connectors.common.sandbox import load_fixtures

        tenants = list(load_fixtures())
        wanted += [f"{v}:{t}" for v in VENDORS if v != "jira" for t in tenants] + ["jira:*"]
        for name in wanted:
            if name not in ports:
                ports[name] = backing.free_port(HOST)
        path.write_text(json.dumps(ports, indent=2))
        return ports

    def services(self) -> list[Service]:
        return [s for s in SERVICES if s.present]

    def endpoints(self, ports: dict[str, int], sandboxes: dict[str, Any]) -> dict[str, Any]:
        return {
            "services": {s.name: f"{HOST}:{ports[s.name]}" for s in self.services()},
            "metrics": {s.name: f"http://{HOST}:{ports[f'metrics-{s.name}']}/metrics" for s in self.services()},
            **sandboxes,
            "jwks_path": str(self.keys.jwks_path),
            "keys_dir": str(self.keys.folder),
            "redis_url": f"redis://{HOST}:{ports['redis']}/0",
            "database_url": backing.postgres_dsn(ports["postgres"], HOST, backing.APP_ROLE),
            "database_admin_url": backing.postgres_dsn(ports["postgres"], HOST),
            "state_dir": str(self.state),
        }

    def _env(self, ports: dict[str, int], service: Service | None = None) -> dict[str, str]:
        env = {
            "AGENTMESH_STATE_DIR": str(self.state),
            "AGENTMESH_JWKS_PATH": str(self.keys.jwks_path),
            "AGENTMESH_REDIS_URL": f"redis://{HOST}:{ports['redis']}/0",
            "AGENTMESH_DATABASE_URL": backing.postgres_dsn(ports["postgres"], HOST, backing.APP_ROLE),
            "AGENTMESH_DATABASE_ADMIN_URL": backing.postgres_dsn(ports["postgres"], HOST),
            "AGENTMESH_HOST": HOST,
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
            # Nothing load-balances the local stack: a short NOT_SERVING notice keeps `agentmesh down` quick.
            "AGENTMESH_SHUTDOWN_NOTICE_S": "0.1",
        }
        for s in self.services():
            env[f"AGENTMESH_{s.name.upper().replace('-', '_')}_ADDR"] = f"{HOST}:{ports[s.name]}"
        if service is not None:
            env["AGENTMESH_PORT"] = str(ports[service.name])
            env["AGENTMESH_METRICS_PORT"] = str(ports[f"metrics-{service.name}"])
        return env

    def write_supervisor_conf(self, ports: dict[str, int]) -> None:
        self.sup_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        py = sys.executable
        pg_user = "pgserver" if os.geteuid() == 0 else ""
        programs: list[tuple[str, list[str], dict[str, str], str, int]] = [
            ("redis", backing.redis_command(self.state / "redis", ports["redis"], HOST), {}, "", 10),
            ("postgres", backing.postgres_command(self.state / "pgdata", ports["postgres"], HOST), {}, pg_user, 10),
            ("sandboxes", [py, "-m", "mesh.cli", "sandbox", "serve", "--ports-file", str(self.state / "ports.json"),
                           "--urls-file", str(self.state / "sandboxes.json")], self._env(ports), "", 20),
        ]
        for s in self.services():
            programs.append((s.name, [py, "-m", s.module], self._env(ports, s), "", 30))
        lines = [
            "[unix_http_server]", f"file={self.sock}", "chmod=0700", "",
            "[supervisord]", f"logfile={self.logs / 'supervisord.log'}", f"pidfile={self.sup_dir / 'supervisord.pid'}",
            "nodaemon=false", "silent=true", f"directory={Path.cwd()}", "", "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
            "[supervisorctl]", f"serverurl=unix://{self.sock}", "",
        ]
        for name, cmd, env, user, priority in programs:
            (self.state / "redis").mkdir(parents=True, exist_ok=True)
            lines += [f"[program:{name}]", "command=" + " ".join(_quote(c) for c in cmd), f"priority={priority}",
                      "autostart=true", "autorestart=true", "startsecs=1", "startretries=10", "stopsignal=TERM",
                      "stopwaitsecs=15", "stopasgroup=true", "killasgroup=true",
                      f"stdout_logfile={self.logs / (name + '.log')}", "redirect_stderr=true",
                      "stdout_logfile_maxbytes=20MB"]
            if user:
                lines.append(f"user={user}")
            if env:
                lines.append("environment=" + ",".join(f'{k}="{v}"' for k, v in env.items()))
            lines.append("")
        self.conf.write_text("\n".join(lines))

    # --- processes -----------------------------------------------------------------------------
    def rpc(self) -> Any:
        transport = SupervisorTransport(None, None, serverurl=f"unix://{self.sock}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def supervisor_running(self) -> bool:
        try:
            return bool(self.rpc().supervisor.getState()["statecode"] == 1)
        except (OSError, xmlrpc.client.Fault):
            return False

    def process_states(self) -> dict[str, str]:
        try:
            return {p["name"]: p["statename"] for p in self.rpc().supervisor.getAllProcessInfo()}
        except (OSError, xmlrpc.client.Fault):
            return {}

    def start(self) -> dict[str, Any]:
        """Starts (or joins) the stack; returns the endpoints once every service is SERVING and seeded."""
        self.keys.ensure()
        ports = self.ports()
        backing.init_postgres(self.state / "pgdata")
        urls_file = self.state / "sandboxes.json"
        if not self.supervisor_running():
            urls_file.unlink(missing_ok=True)  # written afresh by the sandboxes process this start launches
            self.write_supervisor_conf(ports)
            subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf)], check=True)
        _wait(lambda: self.supervisor_running(), 20, "supervisord")
        _wait(lambda: _port_open(ports["postgres"]), 60, "postgres")
        backing.bootstrap_postgres(ports["postgres"], HOST)
        _wait(lambda: urls_file.exists(), 60, "the sandboxes")
        endpoints = self.endpoints(ports, json.loads(urls_file.read_text()))
        asyncio.run(wait_serving(endpoints["services"], timeout_s=120, states=self.process_states))
        self.config.endpoints_path.write_text(json.dumps(endpoints, indent=2))
        asyncio.run(seed(endpoints, Minter(self.keys)))
        self.config.endpoints_path.write_text(json.dumps(endpoints, indent=2))
        return endpoints

    def stop(self) -> None:
        if not self.supervisor_running():
            return
        pid = int((self.sup_dir / "supervisord.pid").read_text())
        self.rpc().supervisor.shutdown()
        _wait(lambda: not _pid_alive(pid), 60, "supervisord to stop")


async def health_of(address: str, timeout_s: float = 1.0) -> str:
    """A service's grpc.health.v1 status name, or the failure."""
    async with grpc.aio.insecure_channel(address) as chan:
        try:
            resp = await health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            return err.code().name
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))


async def wait_serving(services: dict[str, str], timeout_s: float, states: Any = None) -> None:
    deadline = time.monotonic() + timeout_s
    pending = dict(services)
    while pending:
        for name, address in list(pending.items()):
            if await health_of(address) == "SERVING":
                print(f"  {name:<22} SERVING  {address}", flush=True)
                del pending[name]
        if not pending:
            return
        if time.monotonic() > deadline:
            detail = states() if states else {}
            raise SystemExit("agentmesh: not SERVING in time: "
                             + ", ".join(f"{n} ({detail.get(n, '?')})" for n in pending))
        await asyncio.sleep(0.3)


async def seed(endpoints: dict[str, Any], minter: Minter) -> None:
    for name in SEEDERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue
            raise
        await module.seed_demo(endpoints, minter)


def _quote(arg: str) -> str:
    return f'"{arg}"' if any(c in arg for c in " ,;%") else arg


def _port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"agentmesh: timed out waiting for {what}")
        time.sleep(0.2)
