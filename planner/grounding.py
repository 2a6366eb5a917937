"""The grounding check of LLM answers: identifiers, numbers, emails and names must come from sources."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from planner.model import AnswerInput

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# Ticket numbers, issue keys, record ids: letters and digits mixed (INC0010001, ENG-101, 006ACME0000001AAA).
_IDENTIFIER = re.compile(r"\b(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*\b")
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?\s*(k|m|bn|million|thousand)?\b", re.IGNORECASE)
_CAPITALIZED = re.compile(r"\b[A-Z][A-Za-z]*(?:['\u2019][a-z]+)?(?:-[A-Za-z]+)*\b")
_WORD = re.compile(r"[a-z0-9]+(?:['\u2019-][a-z0-9]+)*")
_SENTENCE = re.compile(r"(?<=[.!?:;])\s+|\n+")
_MULTIPLIERS = {"k": 1e3, "thousand": 1e3, "m": 1e6, "million": 1e6, "bn": 1e9}
# Capitalized words an answer may use freely: sentence openers, the systems' own names, calendar words.
_FREE = frozenset(
    "i i'm i've i'll i'd the a an your you you're this that these those it its here there done yes no we my all both "
    "okay ok sure sorry unfortunately also and but however note please hi hello thanks good great nothing none "
    "everything something one two three four five six seven eight nine ten first next then after before "
    "servicenow jira salesforce okta mfa sso it vpn soql id email url "
    "january february march april may june july august september october november december "
    "monday tuesday wednesday thursday friday saturday sunday today tomorrow yesterday".split())


def _flatten(value: Any, out: list[str]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            out.append(str(key))
            _flatten(item, out)
    elif isinstance(value, list | tuple):
        for item in value:
            _flatten(item, out)
    elif value is not None:
        out.append(str(value))


def _counts(value: Any, out: set[float]) -> None:
    """List lengths found in results: an answer may say how many things it found."""
    if isinstance(value, Mapping):
        for item in value.values():
            _counts(item, out)
    elif isinstance(value, list | tuple):
        out.add(float(len(value)))
        for item in value:
            _counts(item, out)


def _numbers(text: str) -> set[float]:
    found: set[float] = set()
    for match in _NUMBER.finditer(text):
        whole, fraction, unit = match.group(1).replace(",", ""), match.group(2), match.group(3)
        value = float(f"{whole}.{fraction}") if fraction else float(whole)
        found.add(value)
        if unit:
            found.add(value * _MULTIPLIERS[unit.lower()])
    for match in re.finditer(r"\d+", text):
        found.add(float(match.group()))
    return found


class Grounding:
    """The vocabulary of what an answer may mention, and the check of an answer against it."""

    def __init__(self, sources: Iterable[str], counts: Iterable[float] = ()) -> None:
        self.text = "\n".join(sources).casefold()
        self.words = set(_WORD.findall(self.text))
        self.numbers = _numbers(self.text) | set(counts) | {0.0, 1.0}

    @classmethod
    def of(cls, inp: AnswerInput) -> Grounding:
        parts: list[str] = [inp.request, inp.requester]
        for step in inp.plan.steps:
            parts.append(step.tool)
            _flatten(step.args, parts)
        for refusal in inp.plan.refusals:
            parts.extend([refusal.tool, refusal.reason])
        parts.extend([inp.plan.question or "", inp.plan.explanation or ""])
        counts: set[float] = {float(len(inp.results)), float(len(inp.plan.steps))}
        for result in inp.results:
            parts.extend([result.tool, result.summary])
            _flatten(dict(result.arguments), parts)
            _flatten(dict(result.output), parts)
            _counts(dict(result.output), counts)
            if result.error is not None:
                parts.extend([result.error.message, json.dumps(dict(result.error.metadata))])
        return cls([p for p in parts if p], counts)

    def ungrounded(self, answer: str) -> list[str]:
        """The emails, identifiers, numbers and names in `answer` that no source holds."""
        bad: list[str] = []
        emails = _EMAIL.findall(answer)
        bad += [e for e in emails if e.casefold() not in self.text]
        rest = _EMAIL.sub(" ", answer)
        for ident in _IDENTIFIER.findall(rest):
            if ident.casefold() not in self.text and not _is_plain_number(ident):
                bad.append(ident)
        for match in _NUMBER.finditer(_IDENTIFIER.sub(lambda m: m.group() if _is_plain_number(m.group()) else " ",
                                                      rest)):
            whole, fraction, unit = match.group(1).replace(",", ""), match.group(2), match.group(3)
            value = float(f"{whole}.{fraction}") if fraction else float(whole)
            candidates = {value, value * _MULTIPLIERS[unit.lower()]} if unit else {value}
            if not candidates & self.numbers:
                bad.append(match.group().strip())
        for sentence in _SENTENCE.split(_IDENTIFIER.sub(" ", rest)):
            words = list(_CAPITALIZED.finditer(sentence))
            for index, match in enumerate(words):
                word = re.sub(r"['\u2019]s$", "", match.group()).casefold()
                opener = index == 0 and not sentence[: match.start()].strip(" \"'(*-")
                if opener or word in _FREE or word in self.words:
                    continue
                if all(part in self.words for part in re.split(r"[-'\u2019]", word) if part):
                    continue
                bad.append(match.group())
        return list(dict.fromkeys(bad))


_NUMERIC = re.compile(r"^\d[\d,]*(?:\.\d+)?(?:k|m|bn)?$", re.IGNORECASE)


def _is_plain_number(token: str) -> bool:
    """A number, possibly with a magnitude suffix (`250`, `100k`): checked as a number, not as an identifier."""
    return bool(_NUMERIC.match(token))
