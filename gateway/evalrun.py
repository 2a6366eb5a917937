"""`agentmesh eval`: each case through the gateway on reset sandboxes, judged, then `N passed, M failed`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from agentmesh.agent.v1 import agent_service_pb2 as pb
from connectors.cli import reset_all
from connectors.common.sandbox import load_fixtures
from gateway.client import AgentClient, gateway_target
from gateway.evaluation import Person, Verdict, directory_of, judge
from gateway.events import JsonLines


@dataclass
class Report:
    """An eval run's verdicts."""

    verdicts: list[Verdict]

    @property
    def passed(self) -> int:
        return sum(v.passed for v in self.verdicts)

    @property
    def failed(self) -> int:
        return len(self.verdicts) - self.passed

    @property
    def rate(self) -> float:
        return 100.0 * self.passed / len(self.verdicts) if self.verdicts else 0.0


async def approve(approval: pb.ApprovalNeeded) -> bool:
    return True


async def ask_json(client: AgentClient, user: str, text: str, *, session_id: str = "",
                   yes: bool = True) -> list[dict[str, Any]]:
    """One request as `agentmesh ask --json --yes` prints it, as a list of objects."""
    lines = JsonLines()
    out: list[dict[str, Any]] = []
    turn = await client.turn(text, user=user, session_id=session_id, confirm=approve if yes else None,
                             on_event=lambda e: out.extend(lines.event(e)))
    if turn.failure is not None:
        out.extend(lines.failure(turn.failure))
    return out


def _directories(cases: Sequence[dict[str, Any]]) -> dict[str, list[Person]]:
    tenants = tuple(sorted({str(c.get("tenant")) for c in cases}))
    try:
        fixtures = load_fixtures(tenants)
    except FileNotFoundError:
        fixtures = load_fixtures()
    return {t: directory_of(f) for t, f in fixtures.items()}


async def run_cases(cases: Sequence[dict[str, Any]], endpoints: dict[str, Any], out: TextIO = sys.stdout,
                    *, verbose: bool = False) -> Report:
    """Runs and judges each case; one client per tenant (each tenant's key)."""
    directories = _directories(cases)
    clients: dict[str, AgentClient] = {}
    verdicts: list[Verdict] = []
    try:
        for case in cases:
            tenant = str(case["tenant"])
            if tenant not in clients:
                clients[tenant] = AgentClient(*gateway_target(endpoints, tenant))
            await reset_all(endpoints.get("sandbox_admin") or {})
            events = await ask_json(clients[tenant], str(case["user"]), str(case["request"]))
            verdict = judge(case, events, directories.get(tenant, []))
            verdicts.append(verdict)
            print(f"{'PASS' if verdict.passed else 'FAIL'} {verdict.case_id}: {verdict.reason}", file=out, flush=True)
            if verbose and not verdict.passed:
                for event in events:
                    print(f"    {event}", file=out)
    finally:
        for c in clients.values():
            await c.close()
    report = Report(verdicts)
    print(f"pass rate {report.rate:.1f} % ({report.passed}/{len(verdicts)})", file=out)
    print(f"{report.passed} passed, {report.failed} failed", file=out, flush=True)
    return report
