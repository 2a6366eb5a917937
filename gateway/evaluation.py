"""Judges an agent run against an eval case exactly as shared/eval/README.md "How a case is judged" says."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PERSON_ARGUMENTS = frozenset({"user", "assignee", "assigned_to", "owner", "caller", "requested_for"})
OUTCOMES = frozenset({"answered", "denied", "no_action", "failed"})
_ISO_DATE = re.compile(r"^\s*(\d{4}-\d{2}-\d{2})")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class Person:
    """A directory entry as judging needs it."""

    email: str
    first_name: str
    last_name: str

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


@dataclass(frozen=True)
class Verdict:
    """A case's result and why."""

    case_id: str
    passed: bool
    reason: str


def load_cases(path: Path) -> list[dict[str, Any]]:
    cases = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                cases.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise SystemExit(f"agentmesh: {path}:{number}: not a JSON case ({err})") from None
    return cases


def directory_of(fixture: Mapping[str, Any]) -> list[Person]:
    return [Person(u["email"].lower(), u.get("first_name", ""), u.get("last_name", "")) for u in fixture["users"]]


def resolve_person(value: Any, requester: str, people: Sequence[Person]) -> str | None:
    """The directory email a person argument names (`me`, an email, a first name or a full name), or None."""
    if not isinstance(value, str):
        return None
    text = value.strip().casefold()
    if text in ("me", "myself"):
        return requester.lower()
    if "@" in text:
        return text
    full = [p for p in people if p.full_name.casefold() == text]
    if len(full) == 1:
        return full[0].email
    first = [p for p in people if p.first_name.casefold() == text]
    return first[0].email if len(first) == 1 else None


def _iso_date(value: Any) -> dt.date | None:
    if not isinstance(value, str):
        return None
    match = _ISO_DATE.match(value)
    if match is None:
        return None
    try:
        return dt.date.fromisoformat(match.group(1))
    except ValueError:
        return None


def argument_matches(name: str, expected: Any, actual: Any, requester: str, people: Sequence[Person]) -> bool:
    """One argument per the README: strings ignoring case and surrounding space, {"contains": [...]}, persons by
    directory entry, numbers by value, dates by ISO date."""
    if isinstance(expected, dict) and "contains" in expected:
        text = str(actual if actual is not None else "").casefold()
        return all(str(part).casefold() in text for part in expected["contains"])
    if name in PERSON_ARGUMENTS and isinstance(expected, str):
        want = resolve_person(expected, requester, people)
        got = resolve_person(actual, requester, people)
        if want is not None and got is not None:
            return want == got
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected == actual
    if isinstance(expected, int | float):
        try:
            return float(actual) == float(expected)
        except (TypeError, ValueError):
            return False
    if isinstance(expected, str):
        want_date = _iso_date(expected) if _DATE.fullmatch(expected.strip()) else None
        if want_date is not None:
            return _iso_date(actual) == want_date
        return isinstance(actual, str | int | float) and str(actual).strip().casefold() == expected.strip().casefold()
    return bool(expected == actual)


def call_matches(call: Mapping[str, Any], step: Mapping[str, Any], requester: str, people: Sequence[Person]) -> bool:
    if step.get("tool") != call.get("tool"):
        return False
    args = step.get("args") or {}
    return all(argument_matches(k, v, args.get(k), requester, people) for k, v in (call.get("args") or {}).items())


def _distinct_match(calls: Sequence[Mapping[str, Any]], steps: Sequence[Mapping[str, Any]], requester: str,
                    people: Sequence[Person]) -> int | None:
    """Index of the first expected call that cannot get a distinct matching step, or None when all can."""
    options = [[j for j, s in enumerate(steps) if call_matches(c, s, requester, people)] for c in calls]
    owner: dict[int, int] = {}

    def assign(i: int, seen: set[int]) -> bool:  # augmenting paths: a maximum bipartite matching
        for j in options[i]:
            if j in seen:
                continue
            seen.add(j)
            if j not in owner or assign(owner[j], seen):
                owner[j] = i
                return True
        return False

    for i in range(len(calls)):
        if not assign(i, set()):
            return i
    return None


def judge(case: Mapping[str, Any], events: Sequence[Mapping[str, Any]], people: Sequence[Person]) -> Verdict:
    """The verdict of one case from the JSON-line events of its run."""
    case_id = str(case.get("id", "?"))
    requester = str(case.get("user", "")).lower()
    expect = case.get("expect") or {}
    finals = [e for e in events if e.get("type") == "final"]
    if not finals:
        return Verdict(case_id, False, "the run produced no final event")
    final = finals[-1]
    outcome = final.get("outcome")
    wanted = expect.get("outcome")
    allowed = {str(w) for w in wanted} if isinstance(wanted, list) else {str(wanted)}
    if outcome not in allowed:
        return Verdict(case_id, False, f"outcome {outcome!r}, expected {' or '.join(map(str, sorted(allowed)))}"
                       f" — {str(final.get('text', ''))[:160]!r}")
    steps = [e for e in events if e.get("type") == "step"]
    ok_steps = [s for s in steps if s.get("status") == "ok"]
    calls = list(expect.get("calls") or [])
    if outcome == "answered":
        missing = _distinct_match(calls, ok_steps, requester, people)
        if missing is not None:
            call = calls[missing]
            tried = [f"{s.get('tool')}({s.get('status')}) {json.dumps(s.get('args'), sort_keys=True)}"
                     for s in steps if s.get("tool") == call.get("tool")]
            return Verdict(case_id, False, f"no successful step matches {call.get('tool')} "
                           f"{json.dumps(call.get('args') or {}, sort_keys=True)}"
                           + (f"; steps: {'; '.join(tried)}" if tried else "; the tool was not called"))
    else:
        for call in calls:
            hit = next((s for s in ok_steps if call_matches(call, s, requester, people)), None)
            if hit is not None:
                return Verdict(case_id, False, f"{call.get('tool')} succeeded but the outcome is {outcome}")
    for step in ok_steps:
        if step.get("effect") == "WRITE" and not any(call_matches(c, step, requester, people) for c in calls):
            return Verdict(case_id, False, f"unexpected successful WRITE {step.get('tool')} "
                           f"{json.dumps(step.get('args'), sort_keys=True)}")
    text = str(final.get("text") or "").casefold()
    for entry in case.get("answer_mentions") or []:
        options = entry if isinstance(entry, list) else [entry]
        if not any(str(o).casefold() in text for o in options):
            return Verdict(case_id, False, f"the answer does not mention {' or '.join(map(repr, options))}: "
                           f"{str(final.get('text', ''))[:200]!r}")
    for entry in case.get("answer_excludes") or []:
        if str(entry).casefold() in text:
            return Verdict(case_id, False, f"the answer mentions {entry!r}, which it must not")
    return Verdict(case_id, True, f"{outcome}; {len(ok_steps)} step(s) ok")
