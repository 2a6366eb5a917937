"""`agentmesh conformance --target HOST:PORT --profile FILE`: run the kit against any ConnectorService."""

from __future__ import annotations

import argparse
from pathlib import Path

from mesh.config import MeshConfig
from mesh.principal import KeyRing, Minter

from .kit import Conformance, Profile


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("conformance", help="check that a ConnectorService behaves as agentmesh expects")
    parser.add_argument("--target", required=True, help="HOST:PORT of the connector")
    parser.add_argument("--profile", type=Path, required=True, help="profile JSON (see connectors/README.md)")
    parser.add_argument("--keys-dir", type=Path, help="key ring whose jwks.json the connector trusts "
                                                      "(default: the local stack's state_dir/keys)")
    parser.set_defaults(func=_run)


async def _run(args: argparse.Namespace) -> int:
    keys = args.keys_dir or MeshConfig().state_dir / "keys"
    results = await Conformance(args.target, Profile.load(args.profile), Minter(KeyRing(keys).ensure())).run()
    for r in results:
        print(f"{'PASS' if r.passed else 'FAIL'}  {r.name}" + (f"  — {r.detail}" if r.detail else ""))
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0
