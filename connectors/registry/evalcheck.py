"""The registry's authorization decisions on the public eval cases' expected calls, checked against their outcomes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.common.manifest import load_all
from connectors.common.sandbox import fixtures_dir, load_fixtures
from connectors.registry.authorization import authorize
from connectors.registry.catalog import Tool, tools_of
from connectors.registry.directory import person_from_fixture, resolve
from connectors.registry.policy import load_policies

DEFAULT_CASES = fixtures_dir().parent / "eval" / "planner-public.jsonl"


@dataclass(frozen=True)
class CallDecision:
    """One expected call of a case and what the registry decides on it."""

    tool: str
    arguments: dict[str, Any]
    allowed: bool
    rule: str
    reason: str


@dataclass(frozen=True)
class CaseResult:
    """A case's expected outcome, the decisions on its expected calls, and whether they agree."""

    case_id: str
    tenant: str
    user: str
    outcome: str
    decisions: list[CallDecision]

    @property
    def matches(self) -> bool:
        """`denied` needs a denied call; `answered` and `failed` need every call allowed; `no_action` has none."""
        outcomes = {self.outcome} if isinstance(self.outcome, str) else set(self.outcome)
        denied = any(not d.allowed for d in self.decisions)
        if "denied" in outcomes and denied:
            return True
        return bool(outcomes & {"answered", "failed", "no_action"}) and not denied


def _tools() -> dict[str, Tool]:
    return {tool.name: tool for manifest in load_all().values() for tool in tools_of(manifest)}


def _argument(value: Any) -> Any:
    """A case argument as a call would carry it; matchers ({"contains": [...]}) stand for some text."""
    if isinstance(value, Mapping) and "contains" in value:
        return " ".join(str(v) for v in value["contains"])
    return value


def check(cases_path: Path = DEFAULT_CASES) -> list[CaseResult]:
    """The decisions on every expected call of every case."""
    fixtures = load_fixtures()
    policies = load_policies(json.loads((fixtures_dir() / "policy.json").read_text()))
    tools = _tools()
    results: list[CaseResult] = []
    for line in cases_path.read_text().splitlines():
        if not line.strip():
            continue
        case = json.loads(line)
        tenant, user = case["tenant"], case["user"].lower()
        people = [person_from_fixture(u) for u in fixtures[tenant]["users"]]
        groups = next(p.groups for p in people if p.email == user)
        decisions: list[CallDecision] = []
        for call in case["expect"]["calls"]:
            tool = tools[call["tool"]]
            arguments = tool.with_defaults({k: _argument(v) for k, v in call.get("args", {}).items()})
            for name in tool.person_arguments:
                if isinstance(arguments.get(name), str):
                    arguments[name] = resolve(people, arguments[name], user, argument=name).email
            decided = authorize(policies[tenant], groups, tool, arguments, user)
            decisions.append(CallDecision(tool.name, arguments, decided.decision.allowed, decided.rule,
                                          decided.decision.reason))
        results.append(CaseResult(case["id"], tenant, user, case["expect"]["outcome"], decisions))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=Path, default=DEFAULT_CASES)
    parser.add_argument("--json", action="store_true", help="one JSON object per case")
    args = parser.parse_args(argv)
    results = check(args.cases)
    for r in results:
        if args.json:
            print(json.dumps({"id": r.case_id, "tenant": r.tenant, "user": r.user, "expected": r.outcome,
                              "matches": r.matches, "calls": [{"tool": d.tool, "allowed": d.allowed,
                                                               "rule": d.rule} for d in r.decisions]}))
            continue
        calls = "; ".join(f"{d.tool} {'allowed' if d.allowed else 'DENIED'} ({d.rule.split(':')[0]})"
                          for d in r.decisions)
        print(f"{r.case_id}  {r.tenant:6} {r.user:28} expect {r.outcome!s:9} "
              f"{'ok ' if r.matches else 'MISMATCH'}  {calls or '(no tool calls expected)'}")
    agree = sum(r.matches for r in results)
    if not args.json:
        print(f"{agree}/{len(results)} cases: the registry's decisions match the expected outcomes")
    return 0 if agree == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
