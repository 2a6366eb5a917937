"""`agentmesh sandbox …`: run the vendor sandboxes, print a user's token, reset them to the fixtures."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import aiohttp

from connectors.common.sandbox import sandbox_classes, start_sandboxes
from mesh.config import MeshConfig, read_endpoints

ADMIN_TIMEOUT = aiohttp.ClientTimeout(total=10)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from connectors.conformance.cli import register as register_conformance

    register_conformance(sub)
    sandbox = sub.add_parser("sandbox", help="the vendor sandboxes (local ServiceNow, Jira, Salesforce, Okta)")
    cmds = sandbox.add_subparsers(dest="sandbox_command", required=True)
    serve = cmds.add_parser("serve", help="run every sandbox; prints one line per vendor and tenant")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--ports-file", type=Path, help="JSON {'<vendor>:<tenant>': port} to listen on")
    serve.add_argument("--urls-file", type=Path, help="write {'sandboxes': ..., 'sandbox_admin': ...} here")
    serve.set_defaults(func=_serve)
    token = cmds.add_parser("token", help="print a user's access token for a vendor sandbox")
    token.add_argument("vendor")
    token.add_argument("tenant")
    token.add_argument("user")
    token.set_defaults(func=_token)
    reset = cmds.add_parser("reset", help="reset every sandbox to the fixtures (data, faults, counters)")
    reset.set_defaults(func=_reset)


async def _serve(args: argparse.Namespace) -> int:
    ports = json.loads(args.ports_file.read_text()) if args.ports_file else None
    running = await start_sandboxes([cls() for cls in sandbox_classes().values()], args.host, ports)
    for vendor, tenants in running.base_urls.items():
        for tenant, url in tenants.items():
            print(f"{vendor:<11} {tenant:<8} {url}", flush=True)
    if args.urls_file:
        tmp = args.urls_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"sandboxes": running.base_urls, "sandbox_admin": running.admin_urls}, indent=2))
        tmp.replace(args.urls_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.close()
    return 0


def _endpoints() -> dict[str, Any]:
    return read_endpoints(MeshConfig().state_dir)


async def issue_token(admin_url: str, tenant: str, user: str | None = None, service: bool = False) -> dict[str, Any]:
    """A token from a sandbox's admin endpoint (the local stack's way of pre-linking demo users)."""
    body: dict[str, Any] = {"tenant": tenant, "service": True} if service else {"tenant": tenant, "user": user}
    async with aiohttp.ClientSession(timeout=ADMIN_TIMEOUT) as session, \
            session.post(f"{admin_url}/__sandbox/tokens", json=body) as resp:
        data: dict[str, Any] = await resp.json()
        if resp.status != 200:
            raise SystemExit(f"agentmesh: {data.get('error', resp.status)}")
        return data


async def reset_all(admin_urls: dict[str, str]) -> None:
    async with aiohttp.ClientSession(timeout=ADMIN_TIMEOUT) as session:
        for url in admin_urls.values():
            async with session.post(f"{url}/__sandbox/reset") as resp:
                resp.raise_for_status()


async def _token(args: argparse.Namespace) -> int:
    admin = _endpoints()["sandbox_admin"]
    if args.vendor not in admin:
        raise SystemExit(f"agentmesh: no sandbox for {args.vendor!r}; have {', '.join(sorted(admin))}")
    print((await issue_token(admin[args.vendor], args.tenant, args.user))["access_token"])
    return 0


async def _reset(args: argparse.Namespace) -> int:
    await reset_all(_endpoints()["sandbox_admin"])
    print("sandboxes reset to the fixtures")
    return 0
