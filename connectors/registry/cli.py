"""`agentmesh tenant …` and `agentmesh audit`: the registry's admin commands, as an operator of the local key ring."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format, timestamp_pb2

from agentmesh.connector.v1 import connector_pb2
from agentmesh.registry.v1 import registry_pb2, registry_service_pb2, registry_service_pb2_grpc
from mesh import client
from mesh.config import MeshConfig, read_endpoints
from mesh.errors import details_of
from mesh.principal import KeyRing, Minter

TIMEOUT_S = 10.0
OPERATOR = "cli@agentmesh"
_SPAN = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, help="the stack's state directory (default AGENTMESH_STATE_DIR)")
    tenant = sub.add_parser("tenant", help="tenants, connector registrations and account links (registry)")
    cmds = tenant.add_subparsers(dest="tenant_command", required=True)
    listing = cmds.add_parser("list", parents=[common], help="list tenants")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_run(_list))
    show = cmds.add_parser("show", parents=[common], help="a tenant: policy summary and connector registrations")
    show.add_argument("tenant")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_run(_show))
    reg = cmds.add_parser("register-connector", parents=[common],
                          help="register (or replace) a connector endpoint for a tenant")
    reg.add_argument("--tenant", required=True)
    reg.add_argument("--connector", required=True, help="servicenow, jira, salesforce, okta, ...")
    reg.add_argument("--endpoint", required=True, help="the connector's gRPC address, host:port")
    reg.add_argument("--base-url", default="", help="the tenant's vendor API base URL")
    reg.add_argument("--cloud-id", default="", help="Atlassian cloud id (Jira)")
    reg.add_argument("--instance-url", default="", help="Salesforce instance URL")
    reg.add_argument("--api-version", default="", help="vendor API version (Salesforce v60.0)")
    reg.add_argument("--authorize-url", default="", help="OAuth authorization endpoint (account linking)")
    reg.add_argument("--token-url", default="", help="OAuth token endpoint")
    reg.add_argument("--revoke-url", default="", help="OAuth revocation endpoint")
    reg.add_argument("--client-id", default="")
    reg.add_argument("--client-secret-env", default="",
                     help="name of the environment variable holding the OAuth client secret (never an argument)")
    reg.add_argument("--scope", action="append", default=[], help="OAuth scope to request (repeatable)")
    reg.set_defaults(func=_run(_register_connector))
    unlink = cmds.add_parser("unlink", parents=[common], help="revoke and forget a user's token for one system")
    unlink.add_argument("--tenant", required=True)
    unlink.add_argument("--user", required=True)
    unlink.add_argument("--connector", required=True)
    unlink.set_defaults(func=_run(_unlink))
    link = cmds.add_parser("link-url", parents=[common], help="print the URL at which a user links one system")
    link.add_argument("--tenant", required=True)
    link.add_argument("--user", required=True)
    link.add_argument("--connector", required=True)
    link.set_defaults(func=_run(_link_url))
    seed = cmds.add_parser("seed", parents=[common], help="seed the demo tenants (acme, globex) into the running stack")
    seed.set_defaults(func=_run(_seed))

    bench = _subcommands(sub, "bench", "benchmarks of one component", "component")
    registry_bench = bench.add_parser("registry", help="ListTools and Invoke latency through a registry it starts, "
                                                       "and the registry's share of an Invoke")
    from connectors.registry.bench import add_arguments

    add_arguments(registry_bench)
    registry_bench.set_defaults(func=_bench)

    audit = sub.add_parser("audit", parents=[common], help="read a tenant's audit log (registry)")
    audit.add_argument("--tenant", required=True)
    audit.add_argument("--since", default="1h", help="a span (90s, 15m, 1h, 7d) or an ISO time")
    audit.add_argument("--user", default="", help="only this requester's rows")
    audit.add_argument("--limit", type=int, default=200, help="at most this many rows (newest first)")
    audit.add_argument("--json", action="store_true", help="one JSON object per row")
    audit.set_defaults(func=_run(_audit))


def _subcommands(sub: Any, name: str, help_text: str, dest: str) -> Any:
    """The sub-subparsers of command `name`, creating the command when no other package has yet (shared `bench`)."""
    parser = sub.choices.get(name)
    if parser is None:
        parser = sub.add_parser(name, help=help_text)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest=dest, required=True, metavar="COMPONENT")


async def _bench(args: argparse.Namespace) -> int:
    from connectors.registry.bench import command

    return await command(args)


class _Session:
    """The registry stub and an operator principal from the stack's key ring."""

    def __init__(self, state_dir: Path | None) -> None:
        state = state_dir or MeshConfig().state_dir
        self.endpoints = read_endpoints(state)
        self.keys = KeyRing(Path(self.endpoints.get("keys_dir") or state / "keys"))
        self.minter = Minter(self.keys)
        self.channel = client.channel(self.endpoints["services"]["registry"])
        self.stub = registry_service_pb2_grpc.RegistryServiceStub(self.channel)

    def operator(self) -> tuple[tuple[str, str], ...]:
        return client.metadata(self.minter.mint_operator(OPERATOR))


Command = Callable[[_Session, argparse.Namespace], Awaitable[int]]


def _run(command: Command) -> Callable[[argparse.Namespace], Awaitable[int]]:
    async def run(args: argparse.Namespace) -> int:
        session = _Session(args.state_dir)
        try:
            return await command(session, args)
        except grpc.aio.AioRpcError as err:
            details = details_of(err)
            print(f"agentmesh: {details.code.name} {details.reason}: {details.message}", file=sys.stderr)
            for name, problem in details.field_violations:
                print(f"  {name}: {problem}", file=sys.stderr)
            return 1
        finally:
            await session.channel.close()

    return run


async def _list(s: _Session, args: argparse.Namespace) -> int:
    answer = await s.stub.ListTenants(registry_service_pb2.ListTenantsRequest(), metadata=s.operator(),
                                      timeout=TIMEOUT_S)
    for tenant in answer.tenants:
        if args.json:
            print(json_format.MessageToJson(tenant, indent=None, preserving_proto_field_name=True))
        else:
            print(f"{tenant.tenant_id:<16} {tenant.display_name:<24} {tenant.domain:<24} "
                  f"connectors: {', '.join(tenant.policy['connectors']) if 'connectors' in tenant.policy else '-'}")
    return 0


async def _show(s: _Session, args: argparse.Namespace) -> int:
    tenant = (await s.stub.GetTenant(registry_service_pb2.GetTenantRequest(tenant_id=args.tenant),
                                     metadata=s.operator(), timeout=TIMEOUT_S)).tenant
    registrations = (await s.stub.ListConnectors(registry_service_pb2.ListConnectorsRequest(tenant_id=args.tenant),
                                                 metadata=s.operator(), timeout=TIMEOUT_S)).registrations
    if args.json:
        print(json.dumps({"tenant": json_format.MessageToDict(tenant, preserving_proto_field_name=True),
                          "connectors": [json_format.MessageToDict(r, preserving_proto_field_name=True)
                                         for r in registrations]}))
        return 0
    policy = json_format.MessageToDict(tenant.policy)
    print(f"{tenant.tenant_id}: {tenant.display_name} ({tenant.domain})")
    print(f"  request timeout {tenant.request_timeout.ToTimedelta()}, audit kept "
          f"{tenant.audit_retention.ToTimedelta().days} days")
    for index, rule in enumerate(policy.get("rules", [])):
        subject = f" (subject {rule['subject']})" if rule.get("subject") else ""
        print(f"  rule {index}: {rule['effect']:<5} {', '.join(rule['groups'])} -> {', '.join(rule['tools'])}{subject}")
    if policy.get("confirm_before"):
        print(f"  confirm before: {', '.join(policy['confirm_before'])}")
    print("  connectors:")
    for r in registrations:
        linking = "linking: yes" if r.oauth.client_id else "linking: no"
        service = ", service credential" if r.service_credential else ""
        print(f"    {r.connector:<11} {r.endpoint:<22} v{r.manifest_version:<8} "
              f"{'healthy' if r.healthy else 'UNHEALTHY'}  {linking}{service}  {r.instance.base_url}")
    return 0


async def _register_connector(s: _Session, args: argparse.Namespace) -> int:
    secret = ""
    if args.client_secret_env:
        secret = os.environ.get(args.client_secret_env, "")
        if not secret:
            print(f"agentmesh: {args.client_secret_env} is not set", file=sys.stderr)
            return 2
    registration = registry_pb2.ConnectorRegistration(
        tenant_id=args.tenant, connector=args.connector, endpoint=args.endpoint,
        instance=connector_pb2.InstanceSettings(base_url=args.base_url, cloud_id=args.cloud_id,
                                                instance_url=args.instance_url, api_version=args.api_version),
        oauth=registry_pb2.OAuthClient(authorize_url=args.authorize_url, token_url=args.token_url,
                                       client_id=args.client_id, client_secret=secret, scopes=args.scope,
                                       revoke_url=args.revoke_url))
    stored = (await s.stub.RegisterConnector(registry_service_pb2.RegisterConnectorRequest(
        registration=registration), metadata=s.operator(), timeout=TIMEOUT_S)).registration
    print(f"registered {stored.connector} for {stored.tenant_id} at {stored.endpoint} "
          f"(manifest v{stored.manifest_version})")
    return 0


async def _unlink(s: _Session, args: argparse.Namespace) -> int:
    await s.stub.UnlinkAccount(registry_service_pb2.UnlinkAccountRequest(
        connector=args.connector, tenant_id=args.tenant, user=args.user), metadata=s.operator(), timeout=TIMEOUT_S)
    print(f"unlinked {args.user}'s {args.connector} account ({args.tenant}); its tokens were revoked")
    return 0


async def _link_url(s: _Session, args: argparse.Namespace) -> int:
    # Links are the user's own business: the key ring's holder asks as that user.
    who = s.minter.mint_user(args.tenant, args.user)
    answer = await s.stub.StartAccountLink(registry_service_pb2.StartAccountLinkRequest(connector=args.connector),
                                           metadata=client.metadata(who), timeout=TIMEOUT_S)
    print(answer.url)
    return 0


async def _seed(s: _Session, args: argparse.Namespace) -> int:
    from connectors.registry.seed import seed_demo

    await seed_demo(s.endpoints, s.minter)
    print("seeded acme and globex")
    return 0


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`90s`, `15m`, `1h`, `7d` before now, or an ISO 8601 time (UTC when it names no zone)."""
    now = now or datetime.now(UTC)
    span = _SPAN.match(text.strip())
    if span:
        return now - timedelta(**{_UNITS[span.group(2)]: int(span.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--since: {text!r} is neither a span like 1h nor an ISO time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


async def _audit(s: _Session, args: argparse.Namespace) -> int:
    try:
        since = parse_since(args.since)
    except argparse.ArgumentTypeError as err:
        print(f"agentmesh: {err}", file=sys.stderr)
        return 2
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(since)
    rows: list[registry_pb2.AuditEvent] = []
    token = ""
    while len(rows) < args.limit:
        answer = await s.stub.ListAuditEvents(registry_service_pb2.ListAuditEventsRequest(
            tenant_id=args.tenant, since=stamp, user=args.user, page_size=min(args.limit - len(rows), 1000),
            page_token=token), metadata=s.operator(), timeout=TIMEOUT_S)
        rows.extend(answer.events)
        token = answer.next_page_token
        if not token:
            break
    for row in rows:
        if args.json:
            print(json.dumps(_row_dict(row)))
        else:
            what = row.tool or row.kind
            status = row.code if not row.reason else f"{row.code}/{row.reason}"
            acting = f" as {row.acting_identity}" if row.acting_identity else ""
            rule = f"  [{row.rule.split(':')[0]}]" if row.rule else ""
            print(f"{row.create_time.ToDatetime(UTC):%Y-%m-%d %H:%M:%S}  {row.user:<30} {what:<32} "
                  f"{row.outcome:<7} {status:<40} {row.latency.ToMilliseconds():>6} ms{acting}{rule}")
    if not args.json:
        print(f"{len(rows)} rows for {args.tenant} since {since:%Y-%m-%d %H:%M:%S} UTC", file=sys.stderr)
    return 0


def _row_dict(row: registry_pb2.AuditEvent) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(row, preserving_proto_field_name=True)
    out["create_time"] = row.create_time.ToDatetime(UTC).isoformat()
    return out
