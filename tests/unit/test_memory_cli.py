"""`agentmesh bench memory` registers under a `bench` command whether or not another package made it first."""

from __future__ import annotations

import argparse

from memory.cli import register, subcommands


def _parser(first_bench_owner: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentmesh")
    sub = parser.add_subparsers(dest="command", required=True)
    if first_bench_owner:
        other = subcommands(sub, "bench", "benchmarks of one component", "component")
        other.add_parser("gateway").set_defaults(func=lambda args: 0)
    register(sub)
    return parser


def test_bench_memory_parses_beside_other_benches() -> None:
    for shared in (False, True):
        parser = _parser(shared)
        args = parser.parse_args(["bench", "memory", "--facts", "100", "--turns", "10", "--budget", "500"])
        assert (args.facts, args.turns, args.requests, args.budget) == (100, 10, 300, 500) and callable(args.func)
        if shared:
            assert parser.parse_args(["bench", "gateway"]).func(None) == 0
