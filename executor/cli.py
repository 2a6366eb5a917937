"""`agentmesh dlq list | show ID | replay ID`: the executor's dead-letter queue, as an operator."""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from agentmesh.common.v1 import common_pb2
from agentmesh.executor.v1 import executor_pb2, executor_service_pb2, executor_service_pb2_grpc
from mesh import client
from mesh.config import MeshConfig, read_endpoints
from mesh.errors import details_of
from mesh.principal import KeyRing, Minter

RPC_TIMEOUT_S = 10.0
REPLAY_TIMEOUT_S = 60.0


def register(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help="list, show and replay the executor's dead letters (runs that owe a WRITE)")
    commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", help="list dead letters, newest first")
    listing.add_argument("--tenant", default="", help="only this tenant's")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    show = commands.add_parser("show", help="show one dead letter and its run")
    show.add_argument("id", help="the dead letter id (dl-...)")
    replay = commands.add_parser("replay", help="re-execute a dead letter's run with the same idempotency keys")
    replay.add_argument("id", help="the dead letter id (dl-...)")
    replay.add_argument("--timeout", type=float, default=REPLAY_TIMEOUT_S, help="seconds the replay may take")
    for parser in (listing, show, replay):
        parser.add_argument("--state-dir", type=Path, default=None, help="the stack's state directory")
        parser.add_argument("--executor", default="", help="the executor's address (default: from endpoints.json)")
        parser.add_argument("--operator", default=f"{getpass.getuser()}@{socket.gethostname()}",
                            help="who you are, as recorded in the audit log")
        parser.add_argument("--json", action="store_true", help="print JSON objects, one per line")
    listing.set_defaults(func=_list)
    show.set_defaults(func=_show)
    replay.set_defaults(func=_replay)


class _Context:
    """The executor's address and the operator principals minted from the local key ring."""

    def __init__(self, args: argparse.Namespace) -> None:
        state_dir = args.state_dir or MeshConfig().state_dir
        endpoints = read_endpoints(state_dir)
        self.address = args.executor or endpoints["services"].get("executor", "")
        if not self.address:
            raise SystemExit("agentmesh: the stack runs no executor (endpoints.json has no services.executor)")
        self.minter = Minter(KeyRing(Path(endpoints.get("keys_dir") or state_dir / "keys")))
        self.operator = args.operator

    def metadata(self, *, tenant: str = "*", on_behalf_of: str = "", run_id: str = "") -> Any:
        return client.metadata(self.minter.mint_operator(self.operator, tenant=tenant, on_behalf_of=on_behalf_of,
                                                         run_id=run_id))


def _when(ts: Any) -> str:
    return datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ts.seconds else "-"


def _fail(err: grpc.aio.AioRpcError) -> int:
    details = details_of(err)
    print(f"agentmesh: {details.code.name} {details.reason}: {details.message}", file=sys.stderr)
    return 1


def _as_json(message: Any) -> str:
    return json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True))


async def _list(args: argparse.Namespace) -> int:
    ctx = _Context(args)
    async with client.channel(ctx.address) as chan:
        stub = executor_service_pb2_grpc.ExecutorServiceStub(chan)
        try:
            answer = await stub.ListDeadLetters(executor_service_pb2.ListDeadLettersRequest(
                tenant_id=args.tenant, page_size=args.limit), metadata=ctx.metadata(), timeout=RPC_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            return _fail(err)
    for entry in answer.dead_letters:
        if args.json:
            print(_as_json(entry))
        else:
            print(f"{entry.dead_letter_id}  {entry.tenant_id:<10} replays={entry.replay_count}  "
                  f"{_when(entry.create_time)}  {entry.reason}")
    if not answer.dead_letters and not args.json:
        print("no dead letters")
    return 0


async def _show(args: argparse.Namespace) -> int:
    ctx = _Context(args)
    async with client.channel(ctx.address) as chan:
        stub = executor_service_pb2_grpc.ExecutorServiceStub(chan)
        try:
            answer = await stub.GetDeadLetter(executor_service_pb2.GetDeadLetterRequest(dead_letter_id=args.id),
                                              metadata=ctx.metadata(), timeout=RPC_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            return _fail(err)
    entry = answer.dead_letter
    if args.json:
        print(_as_json(entry))
        return 0
    run = entry.run
    print(f"{entry.dead_letter_id}  tenant {entry.tenant_id}  run {run.run_id}  user {run.user}  "
          f"replays {entry.replay_count}  {_when(entry.create_time)}")
    print(f"state {executor_pb2.RunState.Name(run.state)}  reason: {entry.reason}")
    for step in run.steps:
        error = f"  {step.error.reason}: {step.error.message}" if step.HasField("error") else ""
        print(f"  {step.step_id:<8} {step.tool:<32} {_status(step.status):<8} attempts={step.attempts}{error}")
    return 0


async def _replay(args: argparse.Namespace) -> int:
    ctx = _Context(args)
    async with client.channel(ctx.address) as chan:
        stub = executor_service_pb2_grpc.ExecutorServiceStub(chan)
        try:
            entry = (await stub.GetDeadLetter(executor_service_pb2.GetDeadLetterRequest(dead_letter_id=args.id),
                                              metadata=ctx.metadata(), timeout=RPC_TIMEOUT_S)).dead_letter
            # The replay acts for the run's user and for that run only; the registry audits both identities.
            metadata = ctx.metadata(tenant=entry.tenant_id, on_behalf_of=entry.run.user, run_id=entry.run.run_id)
            done = False
            async for answer in stub.ReplayDeadLetter(executor_service_pb2.ReplayDeadLetterRequest(
                    dead_letter_id=args.id), metadata=metadata, timeout=args.timeout):
                event = answer.event
                if args.json:
                    print(_as_json(event), flush=True)
                if event.HasField("step_finished") and not args.json:
                    step = event.step_finished
                    error = f"  {step.error.reason}" if step.HasField("error") else ""
                    print(f"  {step.step_id:<8} {step.tool:<32} {_status(step.status)}{error}", flush=True)
                if event.HasField("run_finished"):
                    run = event.run_finished.run
                    done = run.state == executor_pb2.RUN_STATE_SUCCEEDED or (
                        run.state == executor_pb2.RUN_STATE_COMPLETED and run.outcome != common_pb2.OUTCOME_FAILED)
                    if not args.json:
                        print(f"run {run.run_id}: {executor_pb2.RunState.Name(run.state)}"
                              + (f" ({run.error.message})" if run.HasField("error") else ""))
        except grpc.aio.AioRpcError as err:
            return _fail(err)
    return 0 if done else 1


def _status(value: int) -> str:
    return common_pb2.StepStatus.Name(value).removeprefix("STEP_STATUS_").lower()
