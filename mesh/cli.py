"""The `agentmesh` command: subcommands are contributed by the packages that own them (entry points)."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys
from importlib.metadata import entry_points
from typing import Any

GROUP = "agentmesh.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentmesh", description="agentmesh: the agent mesh's command line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        try:
            register = ep.load()
        except ModuleNotFoundError as err:
            # A package named in pyproject whose module is not in this checkout contributes nothing.
            if err.name and ep.value.split(":")[0].startswith(err.name):
                continue
            raise
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    result: Any = args.func(args)
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    sys.exit(int(result or 0))


if __name__ == "__main__":
    main()
