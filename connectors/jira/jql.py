"""JQL: the subset the sandbox parses (refusing the rest with Jira's own messages) and the connector's quoting."""

from __future__ import annotations

import re
from dataclasses import dataclass

_VALID_OPERATORS = ("The valid operators are '=', '!=', '<', '>', '<=', '>=', '~', '!~', 'IN', 'NOT IN', 'IS' and "
                    "'IS NOT'.")
# Operators of real JQL that this subset does not evaluate.
_UNSUPPORTED_OPERATORS = frozenset({"<", ">", "<=", ">=", "!~", "was", "changed"})
_KEYWORDS = frozenset({"and", "or", "not", "in", "is", "empty", "null", "order", "by", "asc", "desc"})
_SYMBOLS = ("!=", "!~", ">=", "<=", "=", "~", ">", "<", "(", ")", ",")
# Unquoted words: anything but blanks, operators, quotes and JQL's reserved characters.
_WORD = re.compile(r"[^\s()=,!~<>\"';?|/%^$#+@*]+")
FUNCTIONS = frozenset({"currentuser"})
_ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)


class JqlError(Exception):
    """A query Jira would refuse; the message is what Jira puts in `errorMessages`."""


@dataclass(frozen=True)
class Func:
    """A JQL function call in value position, e.g. currentUser()."""

    name: str


@dataclass(frozen=True)
class EmptyValue:
    """The EMPTY / NULL keyword."""


EMPTY = EmptyValue()
Value = str | Func | EmptyValue


@dataclass(frozen=True)
class Clause:
    """`field operator values`; operator is one of =, !=, ~, in, not in, is, is not."""

    field: str
    operator: str
    values: tuple[Value, ...]
    position: int


@dataclass(frozen=True)
class BoolOp:
    """AND / OR over two or more sub-expressions."""

    op: str
    items: tuple[Node, ...]


Node = Clause | BoolOp


@dataclass(frozen=True)
class SortKey:
    """One ORDER BY field."""

    field: str
    descending: bool


@dataclass(frozen=True)
class Query:
    """A parsed query: the restriction (None when there is none) and the ORDER BY fields."""

    where: Node | None
    order_by: tuple[SortKey, ...]


@dataclass(frozen=True)
class _Token:
    kind: str  # "word", "string", "symbol", "end"
    text: str
    position: int  # 1-based character

    @property
    def keyword(self) -> str:
        return self.text.lower() if self.kind == "word" else ""


def _where(token: _Token) -> str:
    return f"(line 1, character {token.position})"


def _tokens(jql: str) -> list[_Token]:
    out: list[_Token] = []
    i = 0
    while i < len(jql):
        ch = jql[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "\"'":
            start, i = i, i + 1
            chars: list[str] = []
            while i < len(jql) and jql[i] != ch:
                if jql[i] == "\\" and i + 1 < len(jql):
                    i += 1
                chars.append(jql[i])
                i += 1
            if i >= len(jql):
                raise JqlError(f"Error in the JQL Query: The quoted string '{''.join(chars)}' has not been completed. "
                               f"(line 1, character {start + 1})")
            out.append(_Token("string", "".join(chars), start + 1))
            i += 1
            continue
        symbol = next((s for s in _SYMBOLS if jql.startswith(s, i)), None)
        if symbol is not None:
            out.append(_Token("symbol", symbol, i + 1))
            i += len(symbol)
            continue
        match = _WORD.match(jql, i)
        if match is None:
            raise JqlError(f"Error in the JQL Query: The character '{ch}' is a reserved JQL character. You must "
                           f"enclose it in a string or use the escape '\\u{ord(ch):04x}' instead. "
                           f"(line 1, character {i + 1})")
        out.append(_Token("word", match.group(), i + 1))
        i = match.end()
    out.append(_Token("end", "", len(jql) + 1))
    return out


class _Parser:
    def __init__(self, jql: str) -> None:
        self.tokens = _tokens(jql)
        self.i = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def at_keyword(self, *words: str) -> bool:
        return self.token.keyword in words

    def query(self) -> Query:
        where: Node | None = None
        if self.token.kind != "end" and not self._at_order_by():
            where = self.or_expr()
        order: list[SortKey] = []
        if self._at_order_by():
            self.take()
            self.take()
            order.append(self.sort_key())
            while self.token.text == "," and self.token.kind == "symbol":
                self.take()
                order.append(self.sort_key())
        if self.token.kind != "end":
            raise JqlError(f"Error in the JQL Query: Expecting either 'OR' or 'AND' but got '{self.token.text}'. "
                           f"{_where(self.token)}")
        return Query(where, tuple(order))

    def _at_order_by(self) -> bool:
        nxt = self.tokens[self.i + 1] if self.i + 1 < len(self.tokens) else self.token
        return self.token.keyword == "order" and nxt.keyword == "by"

    def sort_key(self) -> SortKey:
        token = self.take()
        if token.kind not in ("word", "string") or token.keyword in _KEYWORDS:
            raise JqlError(f"Error in the JQL Query: Expecting a field name but got '{token.text or 'end of query'}'. "
                           f"{_where(token)}")
        descending = False
        if self.at_keyword("asc", "desc"):
            descending = self.take().keyword == "desc"
        return SortKey(token.text, descending)

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.at_keyword("or"):
            self.take()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def and_expr(self) -> Node:
        items = [self.primary()]
        while self.at_keyword("and"):
            self.take()
            items.append(self.primary())
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def primary(self) -> Node:
        token = self.token
        if token.kind == "symbol" and token.text == "(":
            self.take()
            node = self.or_expr()
            closing = self.take()
            if closing.text != ")" or closing.kind != "symbol":
                raise JqlError(f"Error in the JQL Query: Expecting ')' but got "
                               f"'{closing.text or 'end of query'}'. {_where(closing)}")
            return node
        if token.keyword == "not":
            raise JqlError(f"Error in the JQL Query: The operator 'NOT' before a clause is not supported by the "
                           f"agentmesh Jira sandbox. {_where(token)}")
        return self.clause()

    def clause(self) -> Clause:
        token = self.take()
        if token.kind not in ("word", "string") or (token.kind == "word" and token.keyword in _KEYWORDS):
            shown = token.text or "end of query"
            raise JqlError(f"Error in the JQL Query: Expecting a field name but got '{shown}'. {_where(token)}")
        operator, op_token = self.operator()
        if operator in ("in", "not in"):
            values = self.value_list()
        elif operator in ("is", "is not"):
            value_token = self.take()
            if value_token.keyword not in ("empty", "null"):
                raise JqlError(f"Error in the JQL Query: Expecting 'EMPTY' or 'NULL' after '{operator.upper()}' but "
                               f"got '{value_token.text or 'end of query'}'. {_where(value_token)}")
            values = (EMPTY,)
        else:
            values = (self.value(),)
            if values[0] is EMPTY and operator in ("=", "!="):
                operator = "is" if operator == "=" else "is not"
        return Clause(token.text, operator, values, op_token.position)

    def operator(self) -> tuple[str, _Token]:
        token = self.take()
        text = token.text.lower()
        if token.kind == "symbol" and text in ("=", "!=", "~"):
            return text, token
        if token.kind == "word" and text == "in":
            return "in", token
        if token.kind == "word" and text in ("not", "is"):
            if text == "not":
                nxt = self.take()
                if nxt.keyword != "in":
                    raise JqlError(f"Error in the JQL Query: Expecting 'IN' after 'NOT' but got "
                                   f"'{nxt.text or 'end of query'}'. {_where(nxt)}")
                return "not in", token
            if self.at_keyword("not"):
                self.take()
                return "is not", token
            return "is", token
        if text in _UNSUPPORTED_OPERATORS:
            raise JqlError(f"Error in the JQL Query: The operator '{token.text.upper()}' is not supported by the "
                           f"agentmesh Jira sandbox. {_where(token)}")
        shown = token.text or "end of query"
        raise JqlError(f"Error in the JQL Query: Expecting operator but got '{shown}'. {_VALID_OPERATORS} "
                       f"{_where(token)}")

    def value(self) -> Value:
        token = self.take()
        if token.kind == "string":
            return token.text
        if token.kind == "word":
            if token.keyword in ("empty", "null"):
                return EMPTY
            if token.keyword in _KEYWORDS:
                raise JqlError(f"Error in the JQL Query: '{token.text}' is a reserved JQL word. You must surround "
                               f"it in quotation marks to use it in a query. {_where(token)}")
            if self.token.kind == "symbol" and self.token.text == "(":
                self.take()
                closing = self.take()
                if closing.text != ")":
                    raise JqlError(f"Error in the JQL Query: Expecting ')' but got "
                                   f"'{closing.text or 'end of query'}'. {_where(closing)}")
                if token.text.lower() not in FUNCTIONS:
                    raise JqlError(f"Unable to find JQL function '{token.text}()'.")
                return Func(token.text.lower())
            return token.text
        shown = token.text or "end of query"
        raise JqlError(f"Error in the JQL Query: Expecting either a value, list or function but got '{shown}'. "
                       f"{_where(token)}")

    def value_list(self) -> tuple[Value, ...]:
        opening = self.take()
        if opening.text != "(" or opening.kind != "symbol":
            raise JqlError(f"Error in the JQL Query: Expecting '(' but got '{opening.text or 'end of query'}'. "
                           f"{_where(opening)}")
        values = [self.value()]
        while self.token.kind == "symbol" and self.token.text == ",":
            self.take()
            values.append(self.value())
        closing = self.take()
        if closing.text != ")" or closing.kind != "symbol":
            raise JqlError(f"Error in the JQL Query: Expecting ')' but got '{closing.text or 'end of query'}'. "
                           f"{_where(closing)}")
        return tuple(values)


def parse(jql: str) -> Query:
    """Parses a query of the subset; raises JqlError with Jira's message for anything else.

    The subset: clauses `field = v`, `!=`, `~`, `IN (..)`, `NOT IN (..)`, `IS [NOT] EMPTY`; `AND`, `OR` and
    parentheses; the function `currentUser()`; `ORDER BY field [ASC|DESC], ...`. Field names (including
    `issue.property[key].path`) and values are for the caller to check against its data.
    """
    return _Parser(jql).query()


def quote(value: str) -> str:
    """A JQL string literal: the value in double quotes with quotes and backslashes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_order_by(jql: str) -> tuple[str, str]:
    """(restriction, "ORDER BY ...") of a query, splitting at a top-level ORDER BY outside quoted strings."""
    quote_char = ""
    i = 0
    while i < len(jql):
        ch = jql[i]
        if quote_char:
            if ch == "\\":
                i += 2
                continue
            if ch == quote_char:
                quote_char = ""
        elif ch in "\"'":
            quote_char = ch
        else:
            match = _ORDER_BY.match(jql, i)
            if match and (i == 0 or not (jql[i - 1].isalnum() or jql[i - 1] == "_")):
                return jql[:i].strip(), jql[i:].strip()
        i += 1
    return jql.strip(), ""
