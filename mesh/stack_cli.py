"""`agentmesh up | down | status | run`: the local stack's lifecycle."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import signal
import subprocess
import sys
from typing import Any

from mesh.config import MeshConfig, read_endpoints
from mesh.stack import Stack, health_of


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    up = sub.add_parser("up", help="start Redis, PostgreSQL, the sandboxes and every service; seed the demo")
    up.add_argument("--detach", "-d", action="store_true", help="return once everything is SERVING")
    up.set_defaults(func=_up)
    down = sub.add_parser("down", help="stop the local stack")
    down.set_defaults(func=_down)
    status = sub.add_parser("status", help="each service's health")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)
    run = sub.add_parser("run", help="up, then chat as alice in acme; leaving the chat stops the stack")
    run.add_argument("--tenant", default="acme")
    run.add_argument("--user", default="alice.nguyen@acme.example")
    run.set_defaults(func=_run)


def _print_endpoints(endpoints: dict[str, Any]) -> None:
    print("agentmesh is up:")
    for name, address in endpoints["services"].items():
        print(f"  {name:<22} {address}")
    for vendor, tenants in endpoints.get("sandboxes", {}).items():
        for tenant, url in tenants.items():
            print(f"  sandbox {vendor:<10} {tenant:<8} {url}")
    print(f"  endpoints file         {MeshConfig().endpoints_path}")


def _up(args: argparse.Namespace) -> int:
    stack = Stack(MeshConfig())
    try:
        endpoints = stack.start()
    except BaseException:
        stack.stop()
        raise
    _print_endpoints(endpoints)
    if args.detach:
        return 0
    print("Ctrl-C stops the stack.", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        stack.stop()
    return 0


def _down(args: argparse.Namespace) -> int:
    Stack(MeshConfig()).stop()
    print("agentmesh is down")
    return 0


def _status(args: argparse.Namespace) -> int:
    config = MeshConfig()
    stack = Stack(config)
    states = stack.process_states()
    if not states:
        print("agentmesh is not running (agentmesh up starts it)")
        return 1
    endpoints = read_endpoints(config.state_dir)

    async def check() -> dict[str, str]:
        names = list(endpoints["services"])
        results = await asyncio.gather(*(health_of(endpoints["services"][n]) for n in names))
        return dict(zip(names, results, strict=True))

    health = asyncio.run(check())
    rows = {name: {"process": states.get(name, "-"), "health": health.get(name, "-"),
                   "address": endpoints["services"].get(name, "")} for name in [*states]}
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for name, row in rows.items():
            print(f"{name:<22} {row['process']:<9} {row['health']:<12} {row['address']}")
    return 0 if all(r["health"] in ("SERVING", "-") for r in rows.values()) else 1


def _run(args: argparse.Namespace) -> int:
    stack = Stack(MeshConfig())
    try:
        _print_endpoints(stack.start())
        if importlib.util.find_spec("gateway.cli") is None:
            print("The gateway's chat is not in this checkout; the stack runs until Ctrl-C.", flush=True)
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
            return 0
        chat = subprocess.run([sys.executable, "-m", "mesh.cli", "chat", "--tenant", args.tenant, "--user", args.user],
                              check=False)
        return chat.returncode
    finally:
        stack.stop()
