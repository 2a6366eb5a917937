"""The routing classifier: which tier a request starts at (simple → fast, compound → mid, complex → power)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TIERS = ("fast", "mid", "power")

# Verbs that each ask for one action; a request with several asks for several steps.
_ACTIONS = re.compile(
    r"\b(open|create|log|file|raise|submit|reset|unlock|assign|reassign|move|transition|approve|reject|deny|add|"
    r"remove|update|change|set|close|resolve|reopen|comment|mark|push|order|request|find|search|show|list|get|"
    r"check|tell|give|send|escalate|cancel|schedule|notify|link|attach|summari[sz]e|compare)\b",
    re.IGNORECASE)
# Words that tie one part of a request to another part's result ("find X and assign it to me").
_DEPENDENT = re.compile(r"\b(it|them|that one|those|the result|afterwards|after that|then|once)\b", re.IGNORECASE)
_CONDITIONAL = re.compile(r"\b(if|unless|otherwise|except|only when|depending)\b", re.IGNORECASE)
_SIMPLE_WORDS = 25
_POWER_WORDS = 70


@dataclass(frozen=True)
class Route:
    """The starting tier and why."""

    tier: str
    reason: str


def classify(request: str, context: Mapping[str, Any] | None = None, replan: bool = False) -> Route:
    """One short intent → fast; several intents, references or session context → mid; conditionals, many
    intents, long requests or re-plans → power."""
    words = len(request.split())
    actions = len(_ACTIONS.findall(request))
    dependent = bool(_DEPENDENT.search(request))
    if replan:
        return Route("power", "re-plan")
    if _CONDITIONAL.search(request) or actions >= 3 or words > _POWER_WORDS:
        return Route("power", f"{actions} actions, {words} words" + (", conditional" if
                                                                      _CONDITIONAL.search(request) else ""))
    turns = (context or {}).get("turns") or []
    if actions >= 2 or words > _SIMPLE_WORDS or (turns and dependent):
        refers = ", refers to the conversation" if turns and dependent else ""
        return Route("mid", f"{actions} actions, {words} words{refers}")
    return Route("fast", f"{actions} action(s), {words} words")


def chain(start: str) -> list[str]:
    """The tiers tried from `start` down to the cheapest (the gateway appends the embedded planner last)."""
    index = TIERS.index(start) if start in TIERS else 0
    return list(reversed(TIERS[: index + 1]))
