"""The gateway's subcommands: `agentmesh chat`, `ask`, `eval`, `keys` and `bench load`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_TENANT = "acme"
DEFAULT_USER = "alice.nguyen@acme.example"


def subcommands(subparsers: Any, name: str, help_text: str, dest: str) -> Any:
    """The sub-subparsers of command `name`, creating the command when no other package has yet (shared `bench`)."""
    parser = subparsers.choices.get(name)
    if parser is None:
        parser = subparsers.add_parser(name, help=help_text)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest=dest, required=True, metavar="COMPONENT")


def _client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoints", help="endpoints file (default: <state dir>/endpoints.json)")
    parser.add_argument("--api-key", default=os.environ.get("AGENTMESH_API_KEY"),
                        help="the tenant's API key (default: the endpoints file's; env AGENTMESH_API_KEY)")


def register(subparsers: Any) -> None:
    chat = subparsers.add_parser("chat", help="chat with the agent as a user (live plan, steps and answer)")
    chat.add_argument("--tenant", default=DEFAULT_TENANT)
    chat.add_argument("--user", default=DEFAULT_USER, help="the user's email (asserted with the tenant's key)")
    _client_arguments(chat)
    chat.set_defaults(func=_chat)

    ask = subparsers.add_parser("ask", help="one request; with --json the JSON lines of shared/eval/README.md")
    ask.add_argument("--tenant", required=True)
    ask.add_argument("--user", required=True, help="the user's email")
    ask.add_argument("--session", default="", help="a session id: the request is a turn of that session")
    ask.add_argument("--json", action="store_true", help="one JSON object per event line")
    ask.add_argument("--yes", action="store_true", help="confirm every confirmation the run asks for")
    ask.add_argument("--timeout", type=float, default=60.0, help="seconds the whole turn may take")
    ask.add_argument("request", nargs="+", help="what the user asks")
    _client_arguments(ask)
    ask.set_defaults(func=_ask)

    evaluate = subparsers.add_parser("eval", help="run eval cases through the gateway and judge them")
    evaluate.add_argument("--cases", required=True, type=Path, help="a JSON-lines file of cases")
    evaluate.add_argument("--only", nargs="*", default=[], help="case ids to run (default: all)")
    evaluate.add_argument("--require", type=float, default=90.0,
                          help="pass rate (%%) at or above which the command succeeds (default 90)")
    evaluate.add_argument("--verbose", action="store_true", help="print a failed case's events")
    evaluate.add_argument("--endpoints", help="endpoints file (default: <state dir>/endpoints.json)")
    evaluate.set_defaults(func=_eval)

    keys = subparsers.add_parser("keys", help="tenant API keys, identity providers and Slack workspaces")
    cmds = keys.add_subparsers(dest="keys_command", required=True)
    create = cmds.add_parser("create", help="create an API key (printed once; only its digest is stored)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--assert-users", action="store_true", help="the key may name the end user itself")
    create.add_argument("--description", default="")
    create.set_defaults(func=_keys_create)
    listing = cmds.add_parser("list", help="list a tenant's keys (ids only)")
    listing.add_argument("--tenant", required=True)
    listing.set_defaults(func=_keys_list)
    revoke = cmds.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("--tenant", required=True)
    revoke.add_argument("--key-id", required=True)
    revoke.set_defaults(func=_keys_revoke)
    idp = cmds.add_parser("idp", help="set the tenant's identity provider for end-user JWTs")
    idp.add_argument("--tenant", required=True)
    idp.add_argument("--issuer", required=True)
    idp.add_argument("--audience", required=True)
    source = idp.add_mutually_exclusive_group(required=True)
    source.add_argument("--jwks-file", type=Path)
    source.add_argument("--jwks-url")
    idp.add_argument("--email-claim", default="email")
    idp.set_defaults(func=_keys_idp)
    slack = cmds.add_parser("slack", help="install a Slack workspace for a tenant (bot token from "
                                          "AGENTMESH_SLACK_BOT_TOKEN or standard input)")
    slack.add_argument("--tenant", required=True)
    slack.add_argument("--team-id", required=True)
    slack.add_argument("--bot-user-id", default="")
    slack.add_argument("--bot-id", default="")
    slack.set_defaults(func=_keys_slack)
    for parser in (create, listing, revoke, idp, slack):
        parser.add_argument("--endpoints", help="endpoints file (default: <state dir>/endpoints.json)")

    bench = subcommands(subparsers, "bench", "benchmarks of one component", "component")
    load = bench.add_parser("load", help="open-loop Poisson load through AgentService on a mesh it starts")
    from gateway.bench import add_arguments

    add_arguments(load)

    def run_load(args: argparse.Namespace) -> Any:
        from gateway.bench import command

        return command(args)

    load.set_defaults(func=run_load)


# --- chat and ask ----------------------------------------------------------------------------------------------------
def _target(args: argparse.Namespace, tenant: str) -> tuple[str, str]:
    from gateway.client import gateway_target, load_endpoints

    endpoints = load_endpoints(args.endpoints)
    if args.api_key:
        endpoints.setdefault("api_keys", {})[tenant] = args.api_key
    return gateway_target(endpoints, tenant)


async def _chat(args: argparse.Namespace) -> int:
    from gateway.chat import chat
    from gateway.client import AgentClient

    async with AgentClient(*_target(args, args.tenant)) as client:
        return await chat(client, args.user.lower(), args.tenant)


async def _ask(args: argparse.Namespace) -> int:
    from agentmesh.agent.v1 import agent_service_pb2 as pb
    from gateway.channels.progress import Progress
    from gateway.chat import PlainView
    from gateway.client import AgentClient
    from gateway.events import JsonLines

    text = " ".join(args.request).strip()

    async def confirm(approval: pb.ApprovalNeeded) -> bool:
        if args.yes:
            return True
        if not sys.stdin.isatty():
            return False  # nobody to ask: decline
        print(f"confirm: {approval.prompt or approval.tool} [y/N] ", end="", file=sys.stderr, flush=True)
        answer = await asyncio.to_thread(sys.stdin.readline)
        return answer.strip().lower() in ("y", "yes")

    lines = JsonLines()
    progress = Progress(request=text)
    view = PlainView(sys.stdout)

    def on_event(event: pb.ConverseResponse) -> None:
        if args.json:
            for obj in lines.event(event):
                print(json.dumps(obj, ensure_ascii=False), flush=True)
        else:
            view.show(progress, progress.apply(event), event)

    async with AgentClient(*_target(args, args.tenant)) as client:
        turn = await client.turn(text, user=args.user.lower(), session_id=args.session, confirm=confirm,
                                 on_event=on_event, timeout_s=args.timeout)
    if args.json:
        if turn.failure is not None:
            for obj in lines.failure(turn.failure):
                print(json.dumps(obj, ensure_ascii=False), flush=True)
    else:
        if turn.failure is not None and not progress.outcome:
            progress.error, progress.outcome = f"{turn.failure.reason}: {turn.failure.message}", "failed"
        view.finish(progress)
    return 1 if turn.failure is not None else 0


# --- eval -------------------------------------------------------------------------------------------------------------
async def _eval(args: argparse.Namespace) -> int:
    from gateway.client import load_endpoints
    from gateway.evalrun import run_cases
    from gateway.evaluation import load_cases

    cases = load_cases(args.cases)
    if args.only:
        cases = [c for c in cases if c.get("id") in set(args.only)]
    report = await run_cases(cases, load_endpoints(args.endpoints), verbose=args.verbose)
    return 0 if report.verdicts and report.rate >= args.require else 1


# --- keys -------------------------------------------------------------------------------------------------------------
async def _pool(args: argparse.Namespace) -> Any:
    from gateway.client import load_endpoints
    from gateway.server import MIGRATIONS, SCHEMA
    from mesh.db import create_pool, migrate

    endpoints = load_endpoints(args.endpoints) if args.endpoints or not os.environ.get("AGENTMESH_DATABASE_URL") \
        else {}
    database_url = os.environ.get("AGENTMESH_DATABASE_URL") or endpoints.get("database_url")
    admin_url = os.environ.get("AGENTMESH_DATABASE_ADMIN_URL") or endpoints.get("database_admin_url")
    if not database_url:
        raise SystemExit("agentmesh: no database: set AGENTMESH_DATABASE_URL or start the stack")
    if admin_url:
        await migrate(admin_url, SCHEMA, MIGRATIONS)
    return await create_pool(database_url, min_size=1, max_size=2)


async def _keys_create(args: argparse.Namespace) -> int:
    from gateway.keys import TENANT_ID, KeyStore

    if not TENANT_ID.match(args.tenant):
        raise SystemExit(f"agentmesh: {args.tenant!r} is not a tenant id")
    pool = await _pool(args)
    try:
        key, plaintext = await KeyStore(pool).create(args.tenant, assert_users=args.assert_users,
                                                     description=args.description)
    finally:
        await pool.close()
    print(f"key id {key.key_id} for tenant {key.tenant}" + (" (may assert users)" if key.assert_users else ""),
          file=sys.stderr)
    print(plaintext)
    return 0


async def _keys_list(args: argparse.Namespace) -> int:
    from gateway.keys import KeyStore

    pool = await _pool(args)
    try:
        keys = await KeyStore(pool).list(args.tenant)
    finally:
        await pool.close()
    for k in keys:
        state = f"revoked {k.revoked:%Y-%m-%d %H:%M}" if k.revoked else "active"
        print(f"{k.key_id}  {'assert-users' if k.assert_users else 'user-token  '}  {state:<24} {k.description}")
    return 0


async def _keys_revoke(args: argparse.Namespace) -> int:
    from gateway.keys import KeyStore

    pool = await _pool(args)
    try:
        done = await KeyStore(pool).revoke(args.tenant, args.key_id)
    finally:
        await pool.close()
    print("revoked" if done else "no such active key")
    return 0 if done else 1


async def _keys_idp(args: argparse.Namespace) -> int:
    from gateway.idp import IdentityProvider, IdentityProviders

    jwks = json.loads(args.jwks_file.read_text()) if args.jwks_file else None
    pool = await _pool(args)
    providers = IdentityProviders(pool)
    try:
        await providers.put(IdentityProvider(args.tenant, args.issuer, args.audience, jwks, args.jwks_url,
                                             args.email_claim))
    finally:
        await providers.close()
        await pool.close()
    print(f"identity provider of {args.tenant}: {args.issuer} (audience {args.audience})")
    return 0


async def _keys_slack(args: argparse.Namespace) -> int:
    from gateway.channels.slack_store import SlackInstallations, fernet_key
    from gateway.config import GatewayConfig

    token = os.environ.get("AGENTMESH_SLACK_BOT_TOKEN") or sys.stdin.readline().strip()
    if not token.startswith("xoxb-"):
        raise SystemExit("agentmesh: a bot token (xoxb-…) is required")
    config = GatewayConfig()
    pool = await _pool(args)
    try:
        key = fernet_key(config.state_dir, config.secret_key.get_secret_value() if config.secret_key else None)
        await SlackInstallations(pool, key).install(args.tenant, args.team_id, token, bot_user_id=args.bot_user_id,
                                                    bot_id=args.bot_id)
    finally:
        await pool.close()
    print(f"Slack workspace {args.team_id} → tenant {args.tenant}")
    return 0
