"""Typed values written in words: amounts, urgencies and priorities, statuses, states, stages and counts."""

from __future__ import annotations

import re
from collections.abc import Sequence

_MULTIPLIERS = {"k": 1_000, "thousand": 1_000, "grand": 1_000, "m": 1_000_000, "mm": 1_000_000, "mil": 1_000_000,
                "million": 1_000_000, "b": 1_000_000_000, "bn": 1_000_000_000, "billion": 1_000_000_000}
_AMOUNT = re.compile(
    r"(?P<currency>[$€£]|\b(?:usd|eur|gbp)\s*)?(?<![\w-])(?P<number>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?!-)\s*(?P<unit>k|mm|m|bn|b|thousand|grand|million|mil|billion)?\b(?P<after>\s*(?:dollars|usd|euros?|eur|bucks))?",
    re.IGNORECASE,
)
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
                 "ten": 10, "a couple of": 2, "a pair of": 2, "a dozen": 12, "dozen": 12}


def amounts(text: str) -> list[float]:
    """Money amounts in `text` ("$100k", "120,000 dollars", "1.2M"), in order; bare small numbers are not money."""
    found: list[float] = []
    for match in _AMOUNT.finditer(text):
        number = float(match.group("number").replace(",", ""))
        unit = (match.group("unit") or "").lower()
        money = bool(match.group("currency") or match.group("after") or unit)
        if not money and (number < 1000 or _looks_like_year(match, text)):
            continue
        if _inside_identifier(match, text):
            continue
        value = number * _MULTIPLIERS.get(unit, 1)
        found.append(int(value) if value.is_integer() else value)
    return found


def _looks_like_year(match: re.Match[str], text: str) -> bool:
    number = match.group("number")
    return len(number) == 4 and number.startswith("20") and "," not in number


def _inside_identifier(match: re.Match[str], text: str) -> bool:
    before = text[match.start() - 1] if match.start() else ""
    after = text[match.end()] if match.end() < len(text) else ""
    return before.isalpha() or before in ("-", "/") or after in ("-", "/")


def count_word(text: str) -> int | None:
    """A small count written as digits or words right before a noun ("two monitors" → 2)."""
    match = re.search(r"\b(\d{1,2}|one|two|three|four|five|six|seven|eight|nine|ten|a couple of|a pair of|a dozen)\s+"
                      r"(?:new\s+|more\s+|extra\s+|additional\s+)?[a-z]", text, re.IGNORECASE)
    if not match:
        return None
    word = match.group(1).lower()
    return int(word) if word.isdigit() else _NUMBER_WORDS.get(word)


_URGENCY_WORDS: tuple[tuple[str, int], ...] = (
    (r"\b(?:high|urgent|urgently|critical|asap|emergency|sev ?1|p1|top|highest|blocker|immediately|right away)\b", 1),
    (r"\b(?:medium|normal|moderate|sev ?2|p2)\b", 2),
    (r"\b(?:low|lowest|minor|no rush|whenever|not urgent|sev ?3|p3)\b", 3),
)


def urgency(text: str) -> int | None:
    """ServiceNow urgency (1 high, 2 medium, 3 low) from words like "urgent" or "low priority"."""
    lowered = text.lower()
    if re.search(r"\bnot (?:urgent|critical|a priority)\b|\bno rush\b", lowered):
        return 3
    for pattern, value in _URGENCY_WORDS:
        if re.search(pattern, lowered):
            return value
    return None


def priority(text: str) -> str | None:
    """A priority name (Highest, High, Medium, Low, Lowest) when the text states one."""
    lowered = text.lower()
    match = re.search(r"\b(highest|high|medium|normal|low|lowest|critical|urgent|blocker)\s*(?:-\s*)?priority\b|"
                      r"\bpriority\s*(?:of|to|:|=)?\s*(highest|high|medium|normal|low|lowest|critical)\b|"
                      r"\b(urgent|critical|blocker)\b", lowered)
    if not match:
        return None
    word = next(g for g in match.groups() if g)
    return {"critical": "Highest", "blocker": "Highest", "urgent": "High", "normal": "Medium"}.get(word, word.title())


# Jira statuses people name, and the words that mean them.
JIRA_STATUSES: tuple[tuple[str, str], ...] = (
    ("In Progress", r"\bin[- ]?progress\b|\bstart(?:ed)?\b|\bstart work|\bworking on it\b|\bwip\b|\bdoing\b"),
    ("In Review", r"\bin[- ]?review\b|\bcode review\b|\breview\b"),
    ("To Do", r"\bto[- ]?do\b|\btodo\b|\breopen|\bbacklog\b|\bnot started\b"),
    ("Done", r"\bdone\b|\bcomplete[d]?\b|\bfinish(?:ed)?\b|\bclosed?\b|\bresolved?\b|\bfixed\b"),
    ("Blocked", r"\bblocked\b"),
)


def jira_status(text: str, *, target: bool) -> str | None:
    """The Jira status named in `text`; with `target`, the one after "to"/"as"/"into" wins (the move's target)."""
    lowered = text.lower()
    if target:
        after = re.search(r"\b(?:to|as|into|in)\s+(?:the\s+)?(?:status\s+)?['\"]?([a-z][a-z /-]{1,30}?)['\"]?"
                          r"\s*(?:status|column)?\s*(?:[,.;!?]|$|\band\b|\bplease\b)", lowered)
        if after:
            for status, pattern in JIRA_STATUSES:
                if re.search(pattern, after.group(1)):
                    return status
    for status, pattern in JIRA_STATUSES:
        if re.search(pattern, lowered):
            return status
    if target:
        free = re.search(r"\b(?:to|as|into)\s+['\"]?([A-Z][\w]*(?: [A-Z][\w]*)*)['\"]?\s*$", text.strip(" .!?"))
        if free:
            return free.group(1)
    return None


_INCIDENT_STATES: tuple[tuple[str, str], ...] = (
    ("Resolved", r"\bresolve[d]?\b|\bsolved?\b|\bfixed\b|\bfix(?:ed)? it\b"),
    ("Closed", r"\bclose[d]?\b"),
    ("On Hold", r"\bon[- ]hold\b|\bhold\b|\bpause[d]?\b|\bwaiting (?:for|on) (?:the )?vendor\b"),
    ("In Progress", r"\bin[- ]progress\b|\breopen|\bback to work\b|\bwork(?:ing)? on\b"),
    ("New", r"\bback to new\b|\bto new\b|\bas new\b"),
    ("Canceled", r"\bcancel(?:l?ed)?\b"),
)


def incident_state(text: str, allowed: Sequence[str]) -> str | None:
    """The ServiceNow incident state `text` asks for, among the schema's allowed values."""
    lowered = text.lower()
    for state, pattern in _INCIDENT_STATES:
        if (not allowed or state in allowed) and re.search(pattern, lowered):
            return state
    return None


def list_state(text: str, allowed: Sequence[str]) -> str | None:
    """For listing incidents: open, resolved or all, when the text says which."""
    lowered = text.lower()
    if "all" in allowed and re.search(r"\ball\b|\bevery\b|\bopen or closed\b|\bopen and closed\b|\bever\b|"
                                      r"\bincluding (?:the )?(?:closed|resolved)\b|\bhistory\b", lowered):
        return "all"
    if "resolved" in allowed and re.search(r"\bresolved\b|\bclosed\b|\bfixed\b|\bsolved\b|\bpast\b|\bold\b",
                                           lowered):
        return "resolved"
    return None


def approval_state(text: str, allowed: Sequence[str]) -> str | None:
    """For listing approvals: which decisions, when the text asks for past ones."""
    lowered = text.lower()
    for state, pattern in (("approved", r"\bapproved\b"), ("rejected", r"\brejected\b|\bdeclined\b"),
                           ("cancelled", r"\bcancell?ed\b")):
        if state in allowed and re.search(pattern, lowered):
            return state
    return None


def stages_from(description: str) -> list[str]:
    """The stage names an argument's description lists after "e.g.", comma separated."""
    match = re.search(r"e\.g\.\s*(.+?)\.?$", description)
    if not match:
        return []
    return [s.strip() for s in match.group(1).split(",") if s.strip()]


def stage(text: str, known: Sequence[str]) -> str | None:
    """The opportunity stage `text` names: a known stage by its name or first word, or won/lost."""
    lowered = text.lower().replace("-", " ")
    for name in sorted(known, key=len, reverse=True):
        plain = name.lower().replace("/", " ").replace("-", " ")
        spaced = re.escape(plain).replace(r"\ ", r"[\s/]+")
        if re.search(rf"\b{spaced}\b", lowered) or re.search(rf"\b{re.escape(name.lower())}\b", text.lower()):
            return name
    if re.search(r"\bwon\b|\bwin\b|\bsigned\b", lowered):
        return _named(known, "Closed Won")
    if re.search(r"\blost\b|\bdead\b", lowered):
        return _named(known, "Closed Lost")
    for name in known:
        first = name.lower().split("/")[0].split()[0]
        if first not in ("closed",) and len(first) > 4 and re.search(rf"\b{re.escape(first)}\b", lowered):
            return name
    return None


def _named(known: Sequence[str], name: str) -> str:
    return next((k for k in known if k.lower() == name.lower()), name)


def issue_type(text: str, allowed: Sequence[str]) -> str | None:
    """The Jira issue type `text` names (bug, story, task), among the allowed ones."""
    lowered = text.lower()
    for name in allowed:
        if re.search(rf"\b{re.escape(str(name).lower())}s?\b", lowered):
            return str(name)
    if "Bug" in allowed and re.search(r"\bdefect\b|\bbroken\b|\bcrash", lowered):
        return "Bug"
    return None


def limit(text: str) -> int | None:
    """A requested number of results ("top 5", "last 3", "10 most recent")."""
    match = re.search(r"\b(?:top|last|first|latest|recent|newest|oldest)\s+(\d{1,3})\b|"
                      r"\b(\d{1,3})\s+(?:most recent|latest|newest|oldest|recent|last)\b", text, re.IGNORECASE)
    if not match:
        return None
    return int(next(g for g in match.groups() if g))
