"""The memory package's subcommands: `agentmesh bench memory`."""

from __future__ import annotations

import argparse
from typing import Any


def subcommands(subparsers: Any, name: str, help_text: str, dest: str) -> Any:
    """The sub-subparsers of command `name`, creating the command when no other package has yet (shared `bench`)."""
    parser = subparsers.choices.get(name)
    if parser is None:
        parser = subparsers.add_parser(name, help=help_text)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest=dest, required=True, metavar="COMPONENT")


def register(subparsers: Any) -> None:
    bench = subcommands(subparsers, "bench", "benchmarks of one component", "component")
    parser = bench.add_parser("memory", help="BuildContext latency with long-term facts and a long session, "
                                             "against a Redis and PostgreSQL it starts")
    parser.add_argument("--facts", type=int, default=10_000, help="long-term facts of the user")
    parser.add_argument("--turns", type=int, default=50, help="turns in the session")
    parser.add_argument("--requests", type=int, default=300, help="BuildContext calls measured")
    parser.add_argument("--budget", type=int, default=1000, help="token budget of each context")
    parser.add_argument("--seed", type=int, default=7)

    def run(args: argparse.Namespace) -> Any:
        from memory.bench import command  # torch and the model load only when the bench runs

        return command(args)

    parser.set_defaults(func=run)
