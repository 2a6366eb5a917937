"""Tenant policy evaluation: which of a tenant's users may call which tool, on whom (catalog.md, "Tenant policy")."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Effect = Literal["allow", "deny"]
Subject = Literal["self", "any"]

# The argument a rule's `subject` constrains, for the tools that have it (the okta.* tools).
SUBJECT_ARGUMENT = "user"


@dataclass(frozen=True)
class Rule:
    """One policy rule: for members of any of `groups`, `effect` applies to the tools matching any of `tools`."""

    effect: Effect
    groups: tuple[str, ...]
    tools: tuple[str, ...]
    subject: Subject | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        """A rule from its policy.json form; rejects unknown effects and subjects."""
        effect = data["effect"]
        if effect not in ("allow", "deny"):
            raise ValueError(f"rule effect must be 'allow' or 'deny', not {effect!r}")
        subject = data.get("subject")
        if subject not in (None, "self", "any"):
            raise ValueError(f"rule subject must be 'self' or 'any', not {subject!r}")
        return cls(effect=effect, groups=tuple(data["groups"]), tools=tuple(data["tools"]), subject=subject)

    def applies_to(self, groups: Iterable[str]) -> bool:
        """Whether the rule is evaluated for a member of `groups`."""
        return not set(self.groups).isdisjoint(groups)

    def names(self, tool: str) -> bool:
        """Whether one of the rule's shell-style patterns matches `tool` (case-sensitive)."""
        return any(fnmatch.fnmatchcase(tool, pattern) for pattern in self.tools)

    def subject_met(self, subject_email: str | None, requester_email: str) -> bool:
        """Whether the call's subject satisfies the rule; a call without a `user` argument always does."""
        if self.subject != "self" or subject_email is None:
            return True
        return _is_requester(subject_email, requester_email)

    def conditional(self) -> bool:
        """Whether the rule's match depends on the call's subject (a `self` rule)."""
        return self.subject == "self"

    def describe(self, index: int) -> str:
        """A readable form, e.g. `rule 2: allow Everyone -> okta.reset_password, okta.unlock_user (subject self)`."""
        text = f"rule {index}: {self.effect} {', '.join(self.groups)} -> {', '.join(self.tools)}"
        return f"{text} (subject {self.subject})" if self.subject else text


@dataclass(frozen=True)
class Decision:
    """The outcome of one authorization: the rule that decided it (None when no rule matched) and why."""

    allowed: bool
    rule_index: int | None
    rule: str
    reason: str


@dataclass(frozen=True)
class ServiceCredentialActions:
    """The self-service actions a tenant runs with its service credential instead of the user's own token."""

    tools: tuple[str, ...] = ()
    subject: Subject | None = None


@dataclass(frozen=True)
class Policy:
    """One tenant's agent policy, as held in fixtures/policy.json under the tenant's id."""

    rules: tuple[Rule, ...]
    connectors: tuple[str, ...] = ()
    confirm_before: tuple[str, ...] = ()
    service_credential_actions: ServiceCredentialActions = field(default_factory=ServiceCredentialActions)
    rate_limits: Mapping[str, int] = field(default_factory=dict)
    model_tiers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        """A policy from one tenant's entry of policy.json; keys starting with `_` are documentation."""
        service = data.get("service_credential_actions") or {}
        return cls(
            rules=tuple(Rule.from_dict(rule) for rule in data.get("rules", [])),
            connectors=tuple(data.get("connectors", [])),
            confirm_before=tuple(data.get("confirm_before", [])),
            service_credential_actions=ServiceCredentialActions(
                tools=tuple(service.get("tools", [])), subject=service.get("subject")
            ),
            rate_limits=dict(data.get("rate_limits", {})),
            model_tiers=dict(data.get("model_tiers", {})),
        )

    def connector_enabled(self, tool: str) -> bool:
        """Whether the tenant registered the tool's connector; a policy listing no connectors restricts none."""
        return not self.connectors or tool.split(".", 1)[0] in self.connectors

    def decide(
        self, groups: Sequence[str], tool: str, subject_email: str | None, requester_email: str
    ) -> Decision:
        """Authorizes one call; `subject_email` is the call's resolved `user` argument, None when it has none.

        A matching deny beats any allow, no match denies, and a rule whose subject is not met does not match.
        """
        if not self.connector_enabled(tool):
            connector = tool.split(".", 1)[0]
            return Decision(False, None, "", f"the {connector} connector is not enabled for this tenant")
        allow: tuple[int, Rule] | None = None
        unmet: tuple[int, Rule] | None = None
        for index, rule in enumerate(self.rules):
            if not rule.applies_to(groups) or not rule.names(tool):
                continue
            if not rule.subject_met(subject_email, requester_email):
                unmet = unmet or (index, rule)
                continue
            if rule.effect == "deny":
                return Decision(False, index, rule.describe(index), f"{tool} is denied by {rule.describe(index)}")
            allow = allow or (index, rule)
        if allow is not None:
            index, rule = allow
            return Decision(True, index, rule.describe(index), f"{tool} is allowed by {rule.describe(index)}")
        if unmet is not None:
            index, rule = unmet
            return Decision(
                False,
                None,
                "",
                f"{tool} is allowed only on oneself ({rule.describe(index)}), and {subject_email} is not the requester",
            )
        return Decision(False, None, "", f"no rule allows {tool} for groups {', '.join(groups) or '(none)'}")

    def may_use(self, groups: Sequence[str], tool: str) -> bool:
        """Whether some rule could allow `tool` for a member of `groups` at all, whatever the call's subject.

        Decides which tools are offered to the planner: a tool only a subject rule could refuse is offered.
        """
        if not self.connector_enabled(tool):
            return False
        applicable = [rule for rule in self.rules if rule.applies_to(groups) and rule.names(tool)]
        if any(rule.effect == "deny" and not rule.conditional() for rule in applicable):
            return False
        return any(rule.effect == "allow" for rule in applicable)

    def needs_confirmation(self, tool: str) -> bool:
        """Whether the tenant wants the user to confirm before `tool` runs."""
        return any(fnmatch.fnmatchcase(tool, pattern) for pattern in self.confirm_before)

    def uses_service_credential(self, tool: str, subject_email: str | None, requester_email: str) -> bool:
        """Whether this call runs with the tenant's service credential (a marked self-service action)."""
        actions = self.service_credential_actions
        if not any(fnmatch.fnmatchcase(tool, pattern) for pattern in actions.tools):
            return False
        if actions.subject == "self":
            return subject_email is None or _is_requester(subject_email, requester_email)
        return True


def load_policies(data: Mapping[str, Any]) -> dict[str, Policy]:
    """Every tenant's policy from the whole policy.json document, keyed by tenant id."""
    return {tenant: Policy.from_dict(entry) for tenant, entry in data.items() if not tenant.startswith("_")}


def _is_requester(subject: str, requester_email: str) -> bool:
    """Whether a subject (an email, or `me` before resolution) is the requester."""
    value = subject.strip().casefold()
    return value == "me" or value == requester_email.strip().casefold()
