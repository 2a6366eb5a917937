"""The sandbox's SOQL subset: parse a SELECT against object metadata, then filter, order, limit and shape rows."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

# Keywords of the subset; other SOQL keywords (GROUP BY, OFFSET, NOT, TYPEOF, ...) are unexpected tokens here.
_KEYWORDS = frozenset({"SELECT", "FROM", "WHERE", "AND", "OR", "IN", "LIKE", "ORDER", "BY", "ASC", "DESC", "NULLS",
                       "FIRST", "LAST", "LIMIT", "TRUE", "FALSE", "NULL"})
_RESERVED = _KEYWORDS | {"GROUP", "HAVING", "OFFSET", "NOT", "WITH", "FOR", "TYPEOF", "USING", "INCLUDES",
                         "EXCLUDES", "UPDATE", "VIEW", "REFERENCE", "ROLLUP", "CUBE"}
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})(?![\w:])
  | (?P<number>-?\d+(?:\.\d+)?)(?![\w.])
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op>!=|<>|<=|>=|=|<|>)
  | (?P<punct>[(),])
""", re.VERBOSE | re.DOTALL)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\"}
_ID = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
MAX_RELATIONSHIP_DEPTH = 5


class FieldType(enum.Enum):
    """How a field's values are typed, compared and written."""

    ID = "id"
    REFERENCE = "reference"
    STRING = "string"
    NUMBER = "number"
    DATE = "date"
    DATETIME = "datetime"
    BOOLEAN = "boolean"


@dataclass(frozen=True)
class Relationship:
    """A lookup from one object to a parent: `Account` via `AccountId`; polymorphic ones answer as `Name`."""

    name: str
    field: str
    targets: tuple[str, ...]
    polymorphic: bool = False


@dataclass(frozen=True)
class SObjectType:
    """An object's describe: its fields with types and its parent relationships."""

    name: str
    key_prefix: str
    fields: Mapping[str, FieldType]
    relationships: Mapping[str, Relationship] = field(default_factory=dict)

    def field_named(self, name: str) -> str | None:
        """The canonical field name for a case-insensitive name."""
        lowered = name.lower()
        return next((f for f in self.fields if f.lower() == lowered), None)

    def relationship_named(self, name: str) -> Relationship | None:
        lowered = name.lower()
        return next((r for k, r in self.relationships.items() if k.lower() == lowered), None)


# What a polymorphic relationship (Case.Owner, Task.What) exposes: the fields of the `Name` object.
NAME_OBJECT = SObjectType("Name", "", {
    "Id": FieldType.ID, "Name": FieldType.STRING, "Type": FieldType.STRING, "Email": FieldType.STRING,
    "FirstName": FieldType.STRING, "LastName": FieldType.STRING, "Username": FieldType.STRING,
    "IsActive": FieldType.BOOLEAN,
})


class SoqlError(Exception):
    """A query the org rejects: errorCode (MALFORMED_QUERY, INVALID_FIELD, INVALID_TYPE, ...) and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int

    @property
    def upper(self) -> str:
        return self.text.upper()


@dataclass(frozen=True)
class Path:
    """A resolved field reference: relationship hops, then a field of the last object, with its type."""

    hops: tuple[Relationship, ...]
    field: str
    type: FieldType

    @property
    def names(self) -> tuple[str, ...]:
        return (*(h.name for h in self.hops), self.field)


@dataclass(frozen=True)
class Literal:
    kind: str  # string, number, date, datetime, boolean, null
    value: Any
    raw: str = ""  # a string literal's text between the quotes, escapes intact (LIKE needs them)


@dataclass(frozen=True)
class Compare:
    path: Path
    op: str
    value: Literal


@dataclass(frozen=True)
class InList:
    path: Path
    values: tuple[Literal, ...]


@dataclass(frozen=True)
class Like:
    path: Path
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class BoolOp:
    op: str  # AND / OR
    terms: tuple[Condition, ...]


Condition = Compare | InList | Like | BoolOp


@dataclass(frozen=True)
class OrderKey:
    path: Path
    descending: bool
    nulls_last: bool


@dataclass(frozen=True)
class Query:
    """A parsed SELECT of the subset."""

    sobject: SObjectType
    fields: tuple[Path, ...]
    where: Condition | None
    order: tuple[OrderKey, ...]
    limit: int | None


def unescape(raw: str) -> str:
    """The value of a string literal's body; `\\%` and `\\_` stay escaped only inside LIKE patterns."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\":
            nxt = raw[i + 1] if i + 1 < len(raw) else ""
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
            elif nxt in "%_":
                out.append(nxt)
            elif nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", raw[i + 2:i + 6]):
                out.append(chr(int(raw[i + 2:i + 6], 16)))
                i += 4
            else:
                raise ValueError(f"Invalid string literal '{raw}'. Illegal character sequence '\\{nxt}' in string "
                                 "literal.")
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def like_pattern(raw: str) -> re.Pattern[str]:
    """A LIKE pattern (literal body, escapes intact) as a case-insensitive regex: % any run, _ one character."""
    parts: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\":
            parts.append(re.escape(unescape(raw[i:i + 2])))
            i += 2
            continue
        parts.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


class _Parser:
    def __init__(self, soql: str, objects: Mapping[str, SObjectType]) -> None:
        self.soql = soql
        self.objects = objects
        self.tokens = self._lex(soql)
        self.i = 0
        self.sobject: SObjectType | None = None

    # --- errors in Salesforce's own shape: the query, a caret under the spot, row and column --------------------
    def error(self, code: str, text: str, pos: int) -> SoqlError:
        line_start = self.soql.rfind("\n", 0, pos) + 1
        row = self.soql.count("\n", 0, pos) + 1
        column = pos - line_start + 1
        line = self.soql[line_start:].split("\n", 1)[0]
        return SoqlError(code, f"\n{line}\n{' ' * (column - 1)}^\nERROR at Row:{row}:Column:{column}\n{text}")

    def unexpected(self, token: Token | None = None) -> SoqlError:
        token = token or self.peek()
        shown = "<EOF>" if token.kind == "eof" else f"'{token.text}'"
        return self.error("MALFORMED_QUERY", f"unexpected token: {shown}", token.pos)

    def _lex(self, soql: str) -> list[Token]:
        tokens: list[Token] = []
        pos = 0
        while pos < len(soql):
            match = _TOKEN.match(soql, pos)
            if match is None or match.lastgroup is None:
                bad = soql[pos:].split(None, 1)[0] if soql[pos:].strip() else soql[pos]
                raise self.error("MALFORMED_QUERY", f"unexpected token: '{bad[:40]}'", pos)
            if match.lastgroup != "ws":
                tokens.append(Token(match.lastgroup, match.group(match.lastgroup), pos))
            pos = match.end()
        tokens.append(Token("eof", "", len(soql)))
        return tokens

    # --- token helpers ------------------------------------------------------------------------------------------
    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def at_keyword(self, *words: str) -> bool:
        token = self.peek()
        return token.kind == "ident" and token.upper in words

    def keyword(self, word: str) -> Token:
        if not self.at_keyword(word):
            raise self.unexpected()
        return self.take()

    def punct(self, text: str) -> Token:
        token = self.peek()
        if token.kind != "punct" or token.text != text:
            raise self.unexpected()
        return self.take()

    # --- grammar ------------------------------------------------------------------------------------------------
    def parse(self) -> Query:
        self.keyword("SELECT")
        field_tokens = [self.field_token()]
        while self.peek().kind == "punct" and self.peek().text == ",":
            self.take()
            field_tokens.append(self.field_token())
        self.keyword("FROM")
        name_token = self.take()
        if name_token.kind != "ident" or "." in name_token.text or name_token.upper in _RESERVED:
            raise self.unexpected(name_token)
        sobject = next((o for n, o in self.objects.items() if n.lower() == name_token.text.lower()), None)
        if sobject is None:
            raise self.error("INVALID_TYPE", f"sObject type '{name_token.text}' is not supported. If you are "
                             "attempting to use a custom object, be sure to append the '__c' after the entity name. "
                             "Please reference your WSDL or the describe call for the appropriate names.",
                             name_token.pos)
        self.sobject = sobject
        fields = tuple(self.path(t) for t in field_tokens)
        where = None
        if self.at_keyword("WHERE"):
            self.take()
            where = self.condition()
        order: list[OrderKey] = []
        if self.at_keyword("ORDER"):
            self.take()
            self.keyword("BY")
            order.append(self.order_key())
            while self.peek().kind == "punct" and self.peek().text == ",":
                self.take()
                order.append(self.order_key())
        limit = None
        if self.at_keyword("LIMIT"):
            self.take()
            token = self.take()
            if token.kind != "number" or not token.text.isdigit():
                raise self.unexpected(token)
            limit = int(token.text)
        if self.peek().kind != "eof":
            raise self.unexpected()
        return Query(sobject, fields, where, tuple(order), limit)

    def field_token(self) -> Token:
        token = self.take()
        if token.kind != "ident" or token.upper in _RESERVED:
            raise self.unexpected(token)
        return token

    def path(self, token: Token) -> Path:
        assert self.sobject is not None
        parts = token.text.split(".")
        current = self.sobject
        hops: list[Relationship] = []
        for part in parts[:-1]:
            relationship = current.relationship_named(part)
            if relationship is None or len(hops) >= MAX_RELATIONSHIP_DEPTH:
                raise self.error("INVALID_FIELD", f"Didn't understand relationship '{part}' in field path. If you "
                                 "are attempting to use a custom relationship, be sure to append the '__r' after the "
                                 "custom relationship name. Please reference your WSDL or the describe call for the "
                                 "appropriate names.", token.pos)
            hops.append(relationship)
            current = NAME_OBJECT if relationship.polymorphic else self.objects[relationship.targets[0]]
        name = current.field_named(parts[-1])
        if name is None:
            raise self.error("INVALID_FIELD", f"No such column '{parts[-1]}' on entity '{current.name}'. If you are "
                             "attempting to use a custom field, be sure to append the '__c' after the custom field "
                             "name. Please reference your WSDL or the describe call for the appropriate names.",
                             token.pos)
        return Path(tuple(hops), name, current.fields[name])

    def condition(self) -> Condition:
        terms = [self.term()]
        joiner: str | None = None
        while self.at_keyword("AND", "OR"):
            token = self.take()
            if joiner is not None and token.upper != joiner:
                raise self.unexpected(token)  # SOQL needs parentheses to mix AND and OR
            joiner = token.upper
            terms.append(self.term())
        return terms[0] if joiner is None else BoolOp(joiner, tuple(terms))

    def term(self) -> Condition:
        token = self.peek()
        if token.kind == "punct" and token.text == "(":
            self.take()
            inner = self.condition()
            self.punct(")")
            return inner
        path = self.path(self.field_token())
        op = self.take()
        if op.kind == "op":
            value = self.literal()
            self.check_type(path, value, op)
            if op.text in ("<", ">", "<=", ">=") and (value.kind == "null" or path.type is FieldType.BOOLEAN):
                raise self.error("INVALID_QUERY_FILTER_OPERATOR", f"invalid operator on field '{path.field}'", op.pos)
            return Compare(path, "!=" if op.text == "<>" else op.text, value)
        if op.kind == "ident" and op.upper == "LIKE":
            value = self.literal()
            if value.kind != "string" or path.type not in (FieldType.STRING, FieldType.ID, FieldType.REFERENCE):
                raise self.error("INVALID_QUERY_FILTER_OPERATOR", f"invalid operator on field '{path.field}'", op.pos)
            return Like(path, like_pattern(value.raw))
        if op.kind == "ident" and op.upper == "IN":
            self.punct("(")
            values = [self.literal()]
            while self.peek().kind == "punct" and self.peek().text == ",":
                self.take()
                values.append(self.literal())
            self.punct(")")
            for value in values:
                self.check_type(path, value, op)
            return InList(path, tuple(values))
        raise self.unexpected(op)

    def literal(self) -> Literal:
        token = self.take()
        if token.kind == "string":
            raw = token.text[1:-1]
            try:
                return Literal("string", unescape(raw), raw)
            except ValueError as err:
                raise self.error("MALFORMED_QUERY", str(err), token.pos) from None
        if token.kind == "number":
            return Literal("number", float(token.text))
        if token.kind == "date":
            try:
                return Literal("date", date.fromisoformat(token.text).isoformat())
            except ValueError:
                raise self.unexpected(token) from None
        if token.kind == "datetime":
            try:
                return Literal("datetime", parse_datetime(token.text))
            except ValueError:
                raise self.unexpected(token) from None
        if token.kind == "ident" and token.upper in ("TRUE", "FALSE"):
            return Literal("boolean", token.upper == "TRUE")
        if token.kind == "ident" and token.upper == "NULL":
            return Literal("null", None)
        raise self.unexpected(token)

    def check_type(self, path: Path, value: Literal, op: Token) -> None:
        if value.kind == "null":
            return
        wanted = {FieldType.ID: "string", FieldType.REFERENCE: "string", FieldType.STRING: "string",
                  FieldType.NUMBER: "number", FieldType.DATE: "date", FieldType.DATETIME: "datetime",
                  FieldType.BOOLEAN: "boolean"}[path.type]
        if value.kind != wanted:
            shown = {"string": "string", "number": "double", "date": "date", "datetime": "dateTime",
                     "boolean": "boolean"}[wanted]
            quoting = "should be enclosed in quotes" if wanted == "string" else "should not be enclosed in quotes"
            raise self.error("INVALID_FIELD", f"value of filter criterion for field '{path.field}' must be of type "
                             f"{shown} and {quoting}", op.pos)
        if path.type in (FieldType.ID, FieldType.REFERENCE) and not _ID.match(value.value):
            raise self.error("INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {value.value}", op.pos)

    def order_key(self) -> OrderKey:
        path = self.path(self.field_token())
        descending = False
        if self.at_keyword("ASC", "DESC"):
            descending = self.take().upper == "DESC"
        nulls_last = descending
        if self.at_keyword("NULLS"):
            self.take()
            if not self.at_keyword("FIRST", "LAST"):
                raise self.unexpected()
            nulls_last = self.take().upper == "LAST"
        return OrderKey(path, descending, nulls_last)


def parse(soql: str, objects: Mapping[str, SObjectType]) -> Query:
    """Parses a SELECT of the subset against the org's objects, or raises SoqlError as the org would."""
    return _Parser(soql, objects).parse()


def parse_datetime(text: str) -> datetime:
    """A SOQL or API dateTime (`2026-11-20T09:14:00Z`, `...+0000`, `....000+00:00`) as an aware datetime."""
    normalized = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", text.replace("Z", "+00:00"))
    return datetime.fromisoformat(normalized)


# --- evaluation --------------------------------------------------------------------------------------------------
Record = dict[str, Any]
Lookup = Callable[[str], tuple[str, Record] | None]  # record id -> (its object name, the record), or None


def _hop(record: Record, relationship: Relationship, lookup: Lookup) -> tuple[str, Record] | None:
    if not record.get(relationship.field):
        return None
    return lookup(record[relationship.field])


def value_of(path: Path, sobject: str, record: Record, lookup: Lookup) -> Any:
    """A path's value on a record, following parents; a polymorphic parent's Type is its object name."""
    current, current_type = record, sobject
    for hop in path.hops:
        found = _hop(current, hop, lookup)
        if found is None:
            return None
        current_type, current = found
    if path.field == "Type" and path.hops and path.hops[-1].polymorphic:
        return current_type
    return current.get(path.field)


def _comparable(path: Path, value: Any) -> Any:
    if value is None:
        return None
    if path.type in (FieldType.ID, FieldType.REFERENCE):
        return str(value)[:15]
    if path.type is FieldType.STRING:
        return str(value).lower()
    if path.type is FieldType.DATETIME and isinstance(value, str):
        return parse_datetime(value)
    return value


def _compare(path: Path, op: str, left: Any, right: Any) -> bool:
    left, right = _comparable(path, left), _comparable(path, right)
    if op == "=":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if left is None or right is None:
        return False
    return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]


def matches(condition: Condition | None, sobject: str, record: Record, lookup: Lookup) -> bool:
    """Whether a record satisfies a WHERE condition."""
    if condition is None:
        return True
    if isinstance(condition, BoolOp):
        results = (matches(t, sobject, record, lookup) for t in condition.terms)
        return all(results) if condition.op == "AND" else any(results)
    value = value_of(condition.path, sobject, record, lookup)
    if isinstance(condition, Compare):
        return _compare(condition.path, condition.op, value, condition.value.value)
    if isinstance(condition, InList):
        return any(_compare(condition.path, "=", value, v.value) for v in condition.values)
    return value is not None and condition.pattern.fullmatch(str(value)) is not None


def run(query: Query, records: list[Record], lookup: Lookup) -> list[Record]:
    """The matching records, ordered and limited (not yet shaped)."""
    name = query.sobject.name
    rows = [r for r in records if matches(query.where, name, r, lookup)]
    for key in reversed(query.order):  # stable sorts, last key first
        keyed = [(_comparable(key.path, value_of(key.path, name, r, lookup)), r) for r in rows]
        present = sorted((kr for kr in keyed if kr[0] is not None), key=lambda kr: kr[0], reverse=key.descending)
        absent = [r for v, r in keyed if v is None]
        rows = [r for _, r in present]
        rows = rows + absent if key.nulls_last else absent + rows
    return rows[:query.limit] if query.limit is not None else rows


def shape(query: Query, record: Record, lookup: Lookup, url_of: Callable[[str, str], str]) -> Record:
    """A result row as the REST API returns it: `attributes`, the selected fields, parents nested (or null)."""
    row: Record = {"attributes": {"type": query.sobject.name, "url": url_of(query.sobject.name, record["Id"])}}
    for path in query.fields:
        target: Record | None = row
        current, kind = record, query.sobject.name
        for hop in path.hops:
            assert target is not None
            found = _hop(current, hop, lookup)
            if found is None:
                target.setdefault(hop.name, None)
                target = None
                break
            kind, current = found
            if target.get(hop.name) is None:
                target[hop.name] = {"attributes": {"type": "Name" if hop.polymorphic else kind,
                                                   "url": url_of(kind, current["Id"])}}
            target = target[hop.name]
        if target is not None:
            polymorphic_type = path.field == "Type" and bool(path.hops) and path.hops[-1].polymorphic
            target[path.field] = kind if polymorphic_type else current.get(path.field)
    return row
