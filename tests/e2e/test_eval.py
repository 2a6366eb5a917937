"""`agentmesh eval` over the public cases through the gateway must pass at least 90 % of them."""

from __future__ import annotations

import io
from pathlib import Path

from gateway.evalrun import run_cases
from gateway.evaluation import load_cases
from tests.e2e.conftest import Mesh

CASES = Path(__file__).resolve().parents[3] / "shared" / "eval" / "planner-public.jsonl"
REQUIRED_PASS_RATE = 90.0


async def test_public_eval_cases_pass_at_least_90_percent(mesh: Mesh) -> None:
    out = io.StringIO()
    report = await run_cases(load_cases(CASES), mesh.endpoints, out)
    printed = out.getvalue()
    print(printed)
    lines = printed.strip().splitlines()
    assert lines[-1] == f"{report.passed} passed, {report.failed} failed"
    assert len(report.verdicts) == 36
    assert report.rate >= REQUIRED_PASS_RATE, printed
