"""Measures the embedded planner's latency per plan over the eval requests and prints p50, p99 and max."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from planner.embedded.evaluate import FIXTURES_TODAY, load_cases, load_tenants, offered_tools, shared_dir


def main(argv: Sequence[str] | None = None) -> int:
    """Plans every case `--rounds` times after a warm-up and prints the latency distribution in milliseconds."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=Path, action="append",
                        help="JSON-lines case file (repeatable; default: shared/eval/planner-public.jsonl)")
    parser.add_argument("--rounds", type=int, default=20, help="times each request is planned")
    args = parser.parse_args(argv)

    from connectors.common.manifest import tool_specs
    from planner.embedded.planner import EmbeddedPlanner

    started = time.perf_counter()
    specs = tool_specs()
    planner = EmbeddedPlanner(specs)
    print(f"construction (model load + catalog embedding): {(time.perf_counter() - started) * 1000:.0f} ms")
    tenants = load_tenants()
    catalog = [spec["name"] for spec in specs]
    cases = [case for path in (args.cases or [shared_dir() / "eval" / "planner-public.jsonl"])
             for case in load_cases(path)]
    prepared = []
    for case in cases:
        tenant = tenants[case["tenant"]]
        person = tenant.person(case["user"])
        allowed, denied = offered_tools(tenant.policy, person.groups if person else (), catalog, case["user"])
        prepared.append((case["request"], case["user"], allowed, denied, list(tenant.people)))
    for request, user, allowed, denied, people in prepared:
        planner.plan(request, requester=user, allowed_tools=allowed, denied_tools=denied, directory=people,
                     today=FIXTURES_TODAY)
    timings: list[float] = []
    for _ in range(args.rounds):
        for request, user, allowed, denied, people in prepared:
            start = time.perf_counter()
            planner.plan(request, requester=user, allowed_tools=allowed, denied_tools=denied, directory=people,
                         today=FIXTURES_TODAY)
            timings.append((time.perf_counter() - start) * 1000)
    timings.sort()
    p99 = timings[min(len(timings) - 1, int(len(timings) * 0.99))]
    print(f"{len(timings)} plans ({len(prepared)} requests x {args.rounds}): p50 {statistics.median(timings):.1f} ms, "
          f"p99 {p99:.1f} ms, max {timings[-1]:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
