"""The whole planning path on the public eval cases and paraphrases at plan level; prints the pass rate."""

from __future__ import annotations

import json

from agentmesh.planner.v1 import planner_service_pb2
from mesh.config import REPO_ROOT
from mesh.resilience import BreakerRegistry, RetryPolicy
from planner import convert
from planner.embedded.evaluate import FIXTURES_TODAY, describe, judge, load_tenants, shared_dir
from planner.embedded_tier import shared_tier
from planner.local import local_listing
from planner.model import Deadline, PlanOutcome
from planner.models.gateway import ModelGateway
from planner.models.prices import PriceTable
from planner.models.tenants import TenantModels
from planner.planning import Planner, PlannerSettings
from planner.relevance import ToolRanker

FILES = (shared_dir() / "eval" / "planner-public.jsonl", REPO_ROOT / "tests" / "data" / "planner-paraphrases.jsonl")


async def test_validated_plans_pass_the_eval_at_plan_level() -> None:
    planner = Planner(ModelGateway({}, PriceTable(), BreakerRegistry(), RetryPolicy()), shared_tier(), None,
                      ToolRanker(), PlannerSettings(), lambda: FIXTURES_TODAY)
    tenants = load_tenants()
    failures: list[str] = []
    total = 0
    for path in FILES:
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            case = json.loads(line)
            listing = local_listing(case["tenant"], case["user"])
            request = planner_service_pb2.PlanRequest(request=case["request"], tools=listing.tools,
                                                      denied_tools=listing.denied, people=listing.people)
            inp = convert.plan_input(request, case["tenant"], case["user"], Deadline.within(30))
            [outcome] = [item async for item in planner.plan(inp, TenantModels()) if isinstance(item, PlanOutcome)]
            verdict = judge(case, outcome.plan, tenants[case["tenant"]].people)
            total += 1
            if verdict is not None:
                failures.append(f"{case['id']} {case['request']!r}: {verdict} — {describe(outcome.plan)}")
    rate = 100.0 * (total - len(failures)) / total
    print(f"\nplanning path at plan level: {total - len(failures)}/{total} passed ({rate:.1f}%)")
    for failure in failures:
        print("  FAIL", failure)
    assert rate >= 90.0, "\n".join(failures)
