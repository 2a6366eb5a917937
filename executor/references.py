"""References `{{steps.<id>.<path>}}` in step arguments: parsing, dependencies, renaming and resolution."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

_ID = r"[A-Za-z0-9_\-]+"
_SEGMENT = rf"(?:\.{_ID}|\[\d+\])"
REFERENCE = re.compile(rf"\{{\{{\s*steps\.({_ID})({_SEGMENT}*)\s*\}}\}}")
_ANY_BRACES = re.compile(r"\{\{(.*?)\}\}")
_SEGMENTS = re.compile(rf"\.({_ID})|\[(\d+)\]")
_LABEL_KEYS = ("key", "number", "email", "name", "id", "summary", "short_description", "subject")
MAX_CANDIDATES = 10


@dataclass
class ReferenceFailure(Exception):
    """A reference that cannot be resolved to one value: reason NOT_FOUND or AMBIGUOUS_REFERENCE."""

    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)


def referenced_steps(value: Any) -> set[str]:
    """The ids of the steps whose results `value` (an argument value, at any depth) refers to."""
    found: set[str] = set()

    def collect(text: str) -> str:
        found.update(m.group(1) for m in REFERENCE.finditer(text))
        return text

    _walk_strings(value, collect)
    return found


def malformed(value: Any) -> list[str]:
    """The `{{...}}` expressions in `value` that look like step references but do not parse."""
    bad: list[str] = []

    def check(text: str) -> str:
        for match in _ANY_BRACES.finditer(text):
            inner = match.group(1).strip()
            if inner.startswith("steps") and not REFERENCE.fullmatch(match.group(0)):
                bad.append(match.group(0))
        return text

    _walk_strings(value, check)
    return bad


def rename(value: Any, ids: Mapping[str, str]) -> Any:
    """A copy of `value` whose references to the steps in `ids` point at their new ids."""
    def sub(text: str) -> str:
        return REFERENCE.sub(lambda m: "{{steps." + ids.get(m.group(1), m.group(1)) + m.group(2) + "}}", text)

    return _walk_strings(value, sub)


def resolve(arguments: Mapping[str, Any], outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments with every reference replaced by the value it names in `outputs` (step id → result).

    How a path meets lists:
    - `[n]` indexes a list explicitly: `{{steps.s1.issues[0].key}}` is the first issue's key; an index past the end
      (including any index into an empty list) fails with NOT_FOUND.
    - A key applied to a list (`{{steps.s1.issues.key}}`, i.e. "the issue") reads through the list only when it
      holds exactly one item; an empty list fails with NOT_FOUND; a list of several items fails with
      AMBIGUOUS_REFERENCE, metadata `candidates` listing what the path gives on each item (at most 10), so that the
      planner can ask the user which one.
    - A path that ends on a list (`{{steps.s1.issues}}`) is the whole list.
    - A missing key or a null on the way fails with NOT_FOUND.
    An argument that is exactly one reference takes the referenced value with its type; a reference inside longer
    text is replaced by the value's text (JSON for objects and lists).
    """
    def sub(text: str) -> Any:
        whole = REFERENCE.fullmatch(text.strip())
        if whole:
            return _lookup(whole, outputs)
        return REFERENCE.sub(lambda m: _as_text(_lookup(m, outputs)), text)

    resolved: dict[str, Any] = _walk_strings(dict(arguments), sub)
    return resolved


def _lookup(match: re.Match[str], outputs: Mapping[str, Any]) -> Any:
    step_id, path = match.group(1), match.group(2)
    reference = match.group(0)
    if step_id not in outputs or outputs[step_id] is None:
        raise ReferenceFailure("NOT_FOUND", f"{reference}: step {step_id} has no result",
                               {"reference": reference, "step_id": step_id})
    segments: list[str | int] = [int(i) if i else k for k, i in _SEGMENTS.findall(path)]
    return _descend(outputs[step_id], segments, reference, f"steps.{step_id}")


def _descend(value: Any, segments: list[str | int], reference: str, where: str) -> Any:
    for position, segment in enumerate(segments):
        if value is None:
            raise ReferenceFailure("NOT_FOUND", f"{reference}: {where} is empty", {"reference": reference})
        if isinstance(segment, int):
            if not isinstance(value, list):
                raise ReferenceFailure("NOT_FOUND", f"{reference}: {where} is not a list", {"reference": reference})
            if segment >= len(value):
                raise ReferenceFailure("NOT_FOUND", f"{reference}: {where} has {len(value)} item(s), no [{segment}]",
                                       {"reference": reference, "count": str(len(value))})
            value, where = value[segment], f"{where}[{segment}]"
            continue
        if isinstance(value, list):
            if not value:
                raise ReferenceFailure("NOT_FOUND", f"{reference}: {where} is an empty list",
                                       {"reference": reference, "count": "0"})
            if len(value) > 1:
                candidates = [_candidate(item, segments[position:]) for item in value[:MAX_CANDIDATES]]
                raise ReferenceFailure(
                    "AMBIGUOUS_REFERENCE",
                    f"{reference}: {where} holds {len(value)} items; which one is meant? {', '.join(candidates)}",
                    {"reference": reference, "count": str(len(value)), "candidates": ", ".join(candidates)})
            value, where = value[0], f"{where}[0]"
        if not isinstance(value, dict) or segment not in value:
            raise ReferenceFailure("NOT_FOUND", f"{reference}: {where} has no {segment!r}", {"reference": reference})
        value, where = value[segment], f"{where}.{segment}"
    return value


def _candidate(item: Any, rest: list[str | int]) -> str:
    """How one item of an ambiguous list is named to the user: what the rest of the path gives, else a label."""
    try:
        value = _descend(item, rest, "", "")
    except ReferenceFailure:
        value = None
    if value is not None and not isinstance(value, dict | list):
        return str(value)
    if isinstance(item, dict):
        for key in _LABEL_KEYS:
            if item.get(key) not in (None, ""):
                return str(item[key])
    return _as_text(item)[:80]


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _walk_strings(value: Any, fn: Callable[[str], Any]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _walk_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk_strings(v, fn) for v in value]
    return value
