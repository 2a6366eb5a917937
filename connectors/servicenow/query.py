"""ServiceNow encoded queries, the sandbox's declared subset: =, !=, LIKE, STARTSWITH, IN, ISEMPTY, ^, ^OR, ORDERBY."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

# The one dynamic value the subset understands, as in the Table API docs' own example.
CURRENT_USER = "javascript:gs.getUserID()"

_TERM = re.compile(r"([a-z_][a-z0-9_]*)(ISEMPTY|!=|=|LIKE|STARTSWITH|IN)(.*)", re.DOTALL)


class QueryError(ValueError):
    """The query uses something outside the subset, or a field the table does not have."""


@dataclass(frozen=True)
class Condition:
    """One `<field><operator><value>` term."""

    field: str
    op: str
    value: str

    def matches(self, record: Mapping[str, str]) -> bool:
        actual = record.get(self.field, "").lower()
        wanted = self.value.lower()
        if self.op == "=":
            return actual == wanted
        if self.op == "!=":
            return actual != wanted
        if self.op == "LIKE":
            return wanted in actual
        if self.op == "STARTSWITH":
            return actual.startswith(wanted)
        if self.op == "IN":
            return actual in {v.strip() for v in wanted.split(",")}
        return actual == ""  # ISEMPTY


@dataclass
class EncodedQuery:
    """An AND of OR-groups (ServiceNow binds `^OR` tighter than `^`), then the sort order."""

    groups: list[list[Condition]] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)  # (field, descending)

    def matches(self, record: Mapping[str, str]) -> bool:
        return all(any(c.matches(record) for c in group) for group in self.groups)

    def sort(self, records: list[dict[str, str]]) -> list[dict[str, str]]:
        out = list(records)
        for name, descending in reversed(self.order):
            out.sort(key=_sort_by(name), reverse=descending)
        return out


def _sort_by(name: str) -> Callable[[Mapping[str, str]], tuple[int, float, str]]:
    return lambda record: _sort_key(record.get(name, ""))


def _sort_key(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value.lower())


def parse(query: str, fields: Iterable[str], user_id: str, table: str) -> EncodedQuery:
    """Parses `sysparm_query` for a table with these fields, as the user whose sys_id is `user_id`."""
    known = set(fields)
    out = EncodedQuery()
    if not query:
        return out
    for term in query.split("^"):
        if not term:
            raise QueryError("empty condition")
        if term.startswith("ORDERBYDESC"):
            out.order.append((_known(term.removeprefix("ORDERBYDESC"), known, table), True))
            continue
        if term.startswith("ORDERBY"):
            out.order.append((_known(term.removeprefix("ORDERBY"), known, table), False))
            continue
        is_or = term.startswith("OR")
        condition = _condition(term[2:] if is_or else term, known, user_id, table)
        if is_or:
            if not out.groups:
                raise QueryError("^OR without a condition before it")
            out.groups[-1].append(condition)
        else:
            out.groups.append([condition])
    return out


def _condition(term: str, known: set[str], user_id: str, table: str) -> Condition:
    match = _TERM.fullmatch(term)
    if match is None:
        raise QueryError(f"unsupported condition {term!r}")
    name, op, value = match.groups()
    _known(name, known, table)
    if op == "ISEMPTY" and value:
        raise QueryError(f"unsupported condition {term!r}")
    if value == CURRENT_USER:
        value = user_id
    elif value.startswith("javascript:"):
        raise QueryError(f"unsupported script {value!r}")
    return Condition(name, op, value)


def _known(name: str, known: set[str], table: str) -> str:
    if name not in known:
        raise QueryError(f"Unknown field {name} in table {table}")
    return name
