"""Runs planner eval cases at plan level, judged as shared/eval/README.md "At plan level" says, and prints the score."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.registry.policy import Policy, load_policies
from planner.embedded.model import Person, PlanResult, PlanStep

PERSON_ARGUMENTS = frozenset({"user", "assignee", "assigned_to", "owner", "caller", "requested_for"})
FIXTURES_TODAY = dt.date(2026, 11, 26)
_REFERENCE = re.compile(r"\{\{\s*steps\.")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def shared_dir() -> Path:
    """The read-only shared folder (`AGENTMESH_SHARED`, default `../shared` beside the repository)."""
    env = os.environ.get("AGENTMESH_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared"


def fixtures_dir() -> Path:
    """The demo tenants' fixtures (`AGENTMESH_FIXTURES`, default `<shared>/fixtures`)."""
    env = os.environ.get("AGENTMESH_FIXTURES")
    return Path(env) if env else shared_dir() / "fixtures"


@dataclass(frozen=True)
class Tenant:
    """One demo tenant as the planner sees it: its policy and its directory."""

    policy: Policy
    people: tuple[Person, ...]

    def person(self, email: str) -> Person | None:
        """The directory entry with this email."""
        return next((p for p in self.people if p.email.casefold() == email.casefold()), None)


def load_tenants(directory: Path | None = None) -> dict[str, Tenant]:
    """The demo tenants (policy and people) from the fixtures folder."""
    folder = directory or fixtures_dir()
    policies = load_policies(json.loads((folder / "policy.json").read_text()))
    tenants: dict[str, Tenant] = {}
    for tenant_id, policy in policies.items():
        data = json.loads((folder / f"{tenant_id}.json").read_text())
        people = tuple(
            Person(email=u["email"], name=f"{u['first_name']} {u['last_name']}", first_name=u["first_name"],
                   last_name=u["last_name"], groups=tuple(u.get("groups", ())))
            for u in data["users"]
        )
        tenants[tenant_id] = Tenant(policy, people)
    return tenants


def offered_tools(policy: Policy, groups: Sequence[str], catalog: Sequence[str], requester: str) -> (
        tuple[set[str], dict[str, str]]):
    """The tools the user may use at all (offered to the planner), and the ones denied outright with why."""
    allowed: set[str] = set()
    denied: dict[str, str] = {}
    for tool in catalog:
        if not policy.connector_enabled(tool):
            continue
        if policy.may_use(groups, tool):
            allowed.add(tool)
        else:
            denied[tool] = policy.decide(groups, tool, None, requester).reason
    return allowed, denied


def load_cases(path: Path) -> list[dict[str, Any]]:
    """The cases of a JSON-lines eval file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---- judging ------------------------------------------------------------------------------------------------------


def _resolve(value: str, requester: str, people: Sequence[Person]) -> str | None:
    """The email of the directory entry `value` names (`me`, an email, a first or a full name)."""
    text = value.strip().casefold()
    if text == "me":
        return requester.casefold()
    for person in people:
        full = f"{person.first_name} {person.last_name}".casefold()
        if text in (person.email.casefold(), full, person.name.casefold(), person.first_name.casefold()):
            return person.email.casefold()
    return None


def argument_matches(name: str, expected: Any, planned: Any, requester: str, people: Sequence[Person]) -> bool:
    """Whether a planned argument satisfies an expected one; a planned reference is not judged."""
    if isinstance(planned, str) and _REFERENCE.search(planned):
        return True
    if isinstance(expected, Mapping) and "contains" in expected:
        return isinstance(planned, str) and all(part.lower() in planned.lower() for part in expected["contains"])
    if planned is None:
        return False
    if name in PERSON_ARGUMENTS and isinstance(expected, str) and isinstance(planned, str):
        want = _resolve(expected, requester, people)
        got = _resolve(planned, requester, people)
        return want is not None and want == got
    if isinstance(expected, bool) or isinstance(planned, bool):
        return expected is planned
    if isinstance(expected, int | float):
        return isinstance(planned, int | float) and float(planned) == float(expected)
    if isinstance(expected, str) and _ISO_DATE.match(expected.strip()):
        return isinstance(planned, str) and planned.strip()[:10] == expected.strip()
    if isinstance(expected, str):
        return isinstance(planned, str) and planned.strip().casefold() == expected.strip().casefold()
    return bool(expected == planned)


def call_matches(call: Mapping[str, Any], step: PlanStep, requester: str, people: Sequence[Person]) -> str | None:
    """None when `step` matches the expected `call`, else why not."""
    if step.tool != call["tool"]:
        return f"tool {step.tool}"
    for name, expected in call.get("args", {}).items():
        planned = step.args.get(name)
        if not argument_matches(name, expected, planned, requester, people):
            return f"{name}={planned!r} (expected {expected!r})"
    return None


def _assign(calls: Sequence[Mapping[str, Any]], steps: Sequence[PlanStep], requester: str,
            people: Sequence[Person]) -> str | None:
    """None when every expected call matches a distinct planned step, else the first call that could not."""

    def search(index: int, used: frozenset[int]) -> bool:
        if index == len(calls):
            return True
        return any(
            position not in used and call_matches(calls[index], step, requester, people) is None
            and search(index + 1, used | {position})
            for position, step in enumerate(steps)
        )

    if search(0, frozenset()):
        return None
    for call in calls:
        same_tool = [s for s in steps if s.tool == call["tool"]]
        if not same_tool:
            return f"{call['tool']} not planned"
        reasons = [call_matches(call, s, requester, people) for s in same_tool]
        if all(reasons):
            return f"{call['tool']}: {reasons[0]}"
    return "expected calls do not match distinct steps"


def judge(case: Mapping[str, Any], plan: PlanResult, people: Sequence[Person], *, strict: bool = False) -> str | None:
    """None when the plan passes the case at plan level, else why it fails.

    With `strict`, a WRITE step that matches no expected call also fails (the run-level rule).
    """
    expect = case["expect"]
    outcomes = expect["outcome"] if isinstance(expect["outcome"], list) else [expect["outcome"]]
    calls = expect.get("calls", [])
    requester = case["user"]
    reasons = []
    for outcome in outcomes:
        reason = _judge_outcome(outcome, calls, plan, requester, people)
        if reason is None and strict:
            reason = _unexpected_write(calls, plan, requester, people)
        if reason is None:
            return None
        reasons.append(f"{outcome}: {reason}")
    return "; ".join(reasons)


def _judge_outcome(outcome: str, calls: Sequence[Mapping[str, Any]], plan: PlanResult, requester: str,
                   people: Sequence[Person]) -> str | None:
    if outcome == "no_action":
        writes = [s.tool for s in plan.steps if s.effect == "WRITE"]
        if writes:
            return f"planned WRITE {', '.join(writes)}"
        if not (plan.question or plan.explanation):
            return "no question or explanation"
        return None
    if outcome == "denied" and any(r.tool in {c["tool"] for c in calls} for r in plan.refusals):
        return None
    if outcome in ("answered", "denied", "failed"):
        return _assign(calls, plan.steps, requester, people)
    return f"unknown outcome {outcome}"


def _unexpected_write(calls: Sequence[Mapping[str, Any]], plan: PlanResult, requester: str,
                      people: Sequence[Person]) -> str | None:
    for step in plan.steps:
        if step.effect == "WRITE" and not any(call_matches(c, step, requester, people) is None for c in calls):
            return f"unexpected WRITE {step.tool}"
    return None


def describe(plan: PlanResult) -> str:
    """A one-line rendering of a plan for failure reports."""
    parts = [f"{s.id} {s.tool}({', '.join(f'{k}={v!r}' for k, v in s.args.items() if v is not None)})"
             + (f" after {','.join(s.depends_on)}" if s.depends_on else "") for s in plan.steps]
    parts += [f"refuse {r.tool}" for r in plan.refusals]
    if plan.question:
        parts.append(f"ask {plan.question!r}")
    if plan.explanation:
        parts.append(f"explain {plan.explanation!r}")
    return "; ".join(parts) or "(empty plan)"


Planner = Callable[..., PlanResult]


@dataclass(frozen=True)
class Outcome:
    """One case's verdict."""

    case_id: str
    request: str
    reason: str | None
    plan: PlanResult


def run_cases(cases: Sequence[Mapping[str, Any]], plan: Planner, tenants: Mapping[str, Tenant], catalog: Sequence[str],
              today: dt.date, *, strict: bool = False) -> list[Outcome]:
    """Plans and judges every case; `plan` is `EmbeddedPlanner.plan` or anything with its signature."""
    outcomes = []
    for case in cases:
        tenant = tenants[case["tenant"]]
        requester = case["user"]
        person = tenant.person(requester)
        groups = person.groups if person else ()
        allowed, denied = offered_tools(tenant.policy, groups, catalog, requester)
        result = plan(case["request"], requester=requester, allowed_tools=allowed, denied_tools=denied,
                      directory=list(tenant.people), today=today, context=None)
        outcomes.append(Outcome(case["id"], case["request"], judge(case, result, tenant.people, strict=strict),
                                result))
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluates the planner on eval files; exits non-zero when the pass rate is under --min-pass."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=Path, action="append",
                        help="JSON-lines case file (repeatable; default: shared/eval/planner-public.jsonl)")
    parser.add_argument("--today", type=dt.date.fromisoformat, default=FIXTURES_TODAY,
                        help="the date relative dates resolve against (default: the fixtures' 2026-11-26)")
    parser.add_argument("--strict", action="store_true", help="also fail plans with a WRITE no expected call matches")
    parser.add_argument("--verbose", action="store_true", help="print every plan, not only the failures")
    parser.add_argument("--min-pass", type=float, default=0.0, help="exit 1 under this pass percentage")
    args = parser.parse_args(argv)

    from connectors.common.manifest import tool_specs
    from planner.embedded.planner import EmbeddedPlanner

    specs = tool_specs()
    planner = EmbeddedPlanner(specs)
    tenants = load_tenants()
    catalog = [spec["name"] for spec in specs]
    files = args.cases or [shared_dir() / "eval" / "planner-public.jsonl"]
    passed = total = 0
    for path in files:
        outcomes = run_cases(load_cases(path), planner.plan, tenants, catalog, args.today, strict=args.strict)
        for outcome in outcomes:
            if outcome.reason is not None or args.verbose:
                status = "FAIL" if outcome.reason else "ok"
                print(f"{status} {outcome.case_id}: {outcome.request!r}")
                if outcome.reason:
                    print(f"     reason: {outcome.reason}")
                print(f"     plan:   {describe(outcome.plan)}")
        file_passed = sum(o.reason is None for o in outcomes)
        if len(files) > 1:
            print(f"{path.name}: {file_passed}/{len(outcomes)} passed")
        passed += file_passed
        total += len(outcomes)
    percent = 100.0 * passed / total if total else 0.0
    print(f"{passed}/{total} passed ({percent:.1f}%)")
    return 0 if percent >= args.min_pass else 1


if __name__ == "__main__":
    sys.exit(main())
