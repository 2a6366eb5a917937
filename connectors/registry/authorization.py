"""Authorization of one tool call: the tenant policy on the resolved subject, and which credential the call uses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from connectors.registry.catalog import Tool
from connectors.registry.policy import SUBJECT_ARGUMENT, Decision, Policy
from mesh.errors import MeshError, Reason

DOMAIN = "agentmesh.registry"
NO_RULE = "no rule allows it (default deny)"


@dataclass(frozen=True)
class Authorization:
    """The decision, the subject it was made for, and whether the call runs on the tenant's service credential."""

    decision: Decision
    subject: str | None
    service_credential: bool

    @property
    def rule(self) -> str:
        return self.decision.rule or NO_RULE


def subject_of(tool: Tool, arguments: Mapping[str, Any]) -> str | None:
    """The call's subject for `subject` rules: its resolved `user` argument, for the tools that have one."""
    if not tool.has_subject:
        return None
    value = arguments.get(SUBJECT_ARGUMENT)
    return str(value) if value is not None else None


def authorize(policy: Policy, groups: Sequence[str], tool: Tool, arguments: Mapping[str, Any],
              requester: str) -> Authorization:
    """Decides a call whose person arguments are already resolved to emails."""
    subject = subject_of(tool, arguments)
    decision = policy.decide(groups, tool.name, subject, requester)
    service = decision.allowed and policy.uses_service_credential(tool.name, subject, requester)
    return Authorization(decision, subject, service)


def precheck(policy: Policy, groups: Sequence[str], tool: str, requester: str) -> Decision | None:
    """A deny decided before the arguments are looked at: the user may not use the tool at all. None: go on."""
    if policy.may_use(groups, tool):
        return None
    return policy.decide(groups, tool, None, requester)


def denied(tool: str, decision: Decision) -> MeshError:
    """PERMISSION_DENIED / POLICY_DENIED naming the rule that decided (or the default deny)."""
    metadata = {"rule": decision.rule or NO_RULE, "tool": tool}
    if decision.rule_index is not None:
        metadata["rule_index"] = str(decision.rule_index)
    return MeshError(Reason.POLICY_DENIED, decision.reason or f"{tool} is not allowed", domain=DOMAIN,
                     metadata=metadata)
