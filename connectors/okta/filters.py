"""The subset of Okta's SCIM-style `search` / `filter` expressions that the Okta sandbox evaluates."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# Operators the sandbox understands: equality, inequality, starts-with and presence (as Okta's `search`).
OPERATORS = ("eq", "ne", "sw", "pr")

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<lparen>\()
    | (?P<rparen>\))
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    | (?P<number>-?\d+(?:\.\d+)?)
    )""", re.VERBOSE)

Predicate = Callable[[dict[str, Any]], bool]


class FilterError(ValueError):
    """An expression outside the subset: Okta answers E0000031 (invalid search criteria)."""


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


def _tokens(expression: str) -> list[_Token]:
    out: list[_Token] = []
    pos = 0
    while pos < len(expression):
        if expression[pos:].strip() == "":
            break
        match = _TOKEN.match(expression, pos)
        if match is None or match.end() == pos:
            raise FilterError(f"unexpected text at position {pos}: {expression[pos:pos + 20]!r}")
        kind = match.lastgroup or ""
        out.append(_Token(kind, match.group(kind)))
        pos = match.end()
    return out


def _unquote(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal[1:-1])


def attribute(resource: dict[str, Any], path: str) -> Any:
    """The value at a dotted attribute path (`profile.email`), or None."""
    value: Any = resource
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _compare(op: str, actual: Any, expected: Any) -> bool:
    if op == "pr":
        return actual not in (None, "")
    if isinstance(actual, str) and isinstance(expected, str):
        actual, expected = actual.casefold(), expected.casefold()
    if op == "eq":
        return bool(actual == expected)
    if op == "ne":
        return bool(actual != expected)
    return isinstance(actual, str) and isinstance(expected, str) and actual.startswith(expected)


class _Parser:
    """Recursive descent: or-expressions of and-expressions of comparisons or parenthesised expressions."""

    def __init__(self, tokens: list[_Token], attributes: Callable[[str], bool], operators: tuple[str, ...]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.allowed = attributes
        self.operators = operators

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise FilterError("the expression ends too early")
        self.pos += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "word" and token.text.lower() == word:
            self.pos += 1
            return True
        return False

    def expression(self) -> Predicate:
        parts = [self.conjunction()]
        while self.keyword("or"):
            parts.append(self.conjunction())
        if len(parts) == 1:
            return parts[0]
        return lambda r: any(p(r) for p in parts)

    def conjunction(self) -> Predicate:
        parts = [self.term()]
        while self.keyword("and"):
            parts.append(self.term())
        if len(parts) == 1:
            return parts[0]
        return lambda r: all(p(r) for p in parts)

    def term(self) -> Predicate:
        token = self.take()
        if token.kind == "lparen":
            inner = self.expression()
            if self.take().kind != "rparen":
                raise FilterError("a parenthesis is not closed")
            return inner
        if token.kind != "word" or token.text.lower() in ("and", "or", "not"):
            raise FilterError(f"expected an attribute, found {token.text!r}")
        path = token.text
        if not self.allowed(path):
            raise FilterError(f"the attribute {path!r} cannot be searched")
        op_token = self.take()
        op = op_token.text.lower()
        if op_token.kind != "word" or op not in self.operators:
            raise FilterError(f"the operator {op_token.text!r} is not supported")
        if op == "pr":
            return lambda r: _compare("pr", attribute(r, path), None)
        value = self._value(self.take())
        return lambda r: _compare(op, attribute(r, path), value)

    @staticmethod
    def _value(token: _Token) -> Any:
        if token.kind == "string":
            return _unquote(token.text)
        if token.kind == "number":
            return float(token.text) if "." in token.text else int(token.text)
        if token.kind == "word" and token.text in ("true", "false"):
            return token.text == "true"
        if token.kind == "word" and token.text == "null":
            return None
        raise FilterError(f"expected a value, found {token.text!r}")


def compile_filter(expression: str, attributes: Iterable[str], prefixes: Iterable[str] = (),
                   operators: tuple[str, ...] | None = None) -> Predicate:
    """A predicate for `expression`; only `attributes` (or paths under `prefixes`) may be named, only `operators`
    (default: all of OPERATORS) used."""
    names = set(attributes)
    starts = tuple(f"{p}." for p in prefixes)

    def allowed(path: str) -> bool:
        return path in names or (bool(starts) and path.startswith(starts))

    tokens = _tokens(expression)
    if not tokens:
        raise FilterError("the expression is empty")
    parser = _Parser(tokens, allowed, operators or OPERATORS)
    predicate = parser.expression()
    if parser.peek() is not None:
        raise FilterError(f"unexpected {parser.peek().text!r}")  # type: ignore[union-attr]
    return predicate

