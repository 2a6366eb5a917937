"""The context window manager: task state, then relevant facts, then recent turns, older turns condensed, in budget."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memory.facts import Fact
from memory.sessions import Turn
from memory.summarizer import Sentence, summarize

STATE_HEADER = "## Task state of this run"
FACTS_HEADER = "## Remembered about the user"
SUMMARY_HEADER = "## Earlier in this conversation (condensed)"
TURNS_HEADER = "## Recent conversation"
SUMMARY_SHARE = 0.25  # of what is left after state and facts, kept for the summary when turns do not all fit
SUMMARY_MAX = 400  # tokens
SUMMARY_MIN = 24  # below this a summary says too little to be worth its header
_SEPARATOR = "\n\n"

# Condenses older turns into at most the given number of tokens, with the request's embedding for relevance.
Condense = Callable[[list[Turn], np.ndarray | None, int], Awaitable[str]]


@dataclass
class BuiltContext:
    """An assembled context: what it holds, its text, and token counts (`total` counts `text` exactly)."""

    working_state: dict[str, Any] = field(default_factory=dict)
    facts: list[Fact] = field(default_factory=list)
    summary: str = ""
    turns: list[Turn] = field(default_factory=list)
    condensed_turns: int = 0
    text: str = ""
    state_tokens: int = 0
    facts_tokens: int = 0
    summary_tokens: int = 0
    turns_tokens: int = 0
    total: int = 0
    budget: int = 0


def state_json(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def turn_line(turn: Turn) -> str:
    return f"{turn.role}: {turn.text}"


def render(ctx: BuiltContext) -> str:
    """The context as prompt text: sections in reading order, empty ones left out."""
    sections = []
    if ctx.working_state:
        sections.append(f"{STATE_HEADER}\n{state_json(ctx.working_state)}")
    if ctx.facts:
        sections.append(FACTS_HEADER + "".join(f"\n- {f.text}" for f in ctx.facts))
    if ctx.summary:
        sections.append(f"{SUMMARY_HEADER}\n{ctx.summary}")
    if ctx.turns:
        sections.append(TURNS_HEADER + "".join(f"\n{turn_line(t)}" for t in ctx.turns))
    return _SEPARATOR.join(sections)


def extractive(count: Callable[[str], int]) -> Condense:
    """The default condenser: the extractive summarizer over the turns' stored sentence embeddings."""
    async def condense(older: list[Turn], query: np.ndarray | None, budget: int) -> str:
        sentences = [Sentence(t.role, s, i, j, t.vectors[j])
                     for i, t in enumerate(older) if t.vectors is not None
                     for j, s in enumerate(t.sentences) if j < len(t.vectors)]
        return summarize(sentences, query, budget, count)

    return condense


class ContextBuilder:
    """Packs a context into a token budget with `count` (mesh.tokens) as the measure."""

    def __init__(self, count: Callable[[str], int], condense: Condense | None = None) -> None:
        self.count = count
        self.condense = condense or extractive(count)
        self._separator = count(_SEPARATOR)

    def _header(self, header: str) -> int:
        return self.count(header) + self._separator

    def _state(self, values: dict[str, Any], budget: int) -> tuple[dict[str, Any], int]:
        if not values:
            return {}, 0
        cost = self._header(STATE_HEADER) + self.count("\n" + state_json(values))
        if cost <= budget:
            return values, cost
        kept: dict[str, Any] = {}
        cost = 0
        for key, value in values.items():
            trial = {**kept, key: value}
            trial_cost = self._header(STATE_HEADER) + self.count("\n" + state_json(trial))
            if trial_cost <= budget:
                kept, cost = trial, trial_cost
        return kept, cost

    def _facts(self, facts: list[Fact], budget: int) -> tuple[list[Fact], int]:
        kept: list[Fact] = []
        cost = self._header(FACTS_HEADER)
        for fact in facts:
            line = self.count(f"\n- {fact.text}")
            if cost + line <= budget:
                kept.append(fact)
                cost += line
        return (kept, cost) if kept else ([], 0)

    async def _pack(self, state: dict[str, Any], facts: list[Fact], turns: list[Turn], query: np.ndarray | None,
                    budget: int, condense: Condense) -> BuiltContext:
        ctx = BuiltContext(budget=budget)
        ctx.working_state, ctx.state_tokens = self._state(state, budget)
        left = budget - ctx.state_tokens
        ctx.facts, ctx.facts_tokens = self._facts(facts, left)
        left -= ctx.facts_tokens
        costs = [self.count("\n" + turn_line(t)) for t in turns]
        header = self._header(TURNS_HEADER)
        if turns and header + sum(costs) <= left:
            ctx.turns, ctx.turns_tokens = list(turns), header + sum(costs)
            return ctx
        reserve = min(int(left * SUMMARY_SHARE), SUMMARY_MAX)
        if reserve < SUMMARY_MIN:
            reserve = 0
        # The most recent turns that fit, kept whole and in order; the rest are condensed.
        used = header
        first = len(turns)
        while first > 0 and used + costs[first - 1] <= left - reserve:
            first -= 1
            used += costs[first]
        if first < len(turns):
            ctx.turns, ctx.turns_tokens = turns[first:], used
        left -= ctx.turns_tokens
        older = turns[:first]
        summary_budget = left - self._header(SUMMARY_HEADER) - 1
        if older and summary_budget >= SUMMARY_MIN // 2:
            text = await condense(older, query, summary_budget)
            if text:
                ctx.summary = text
                ctx.summary_tokens = self._header(SUMMARY_HEADER) + self.count("\n" + text)
                ctx.condensed_turns = len(older)
        return ctx

    async def build(self, state: dict[str, Any], facts: list[Fact], turns: list[Turn], query: np.ndarray | None,
                    budget: int, condense: Condense | None = None) -> BuiltContext:
        """The context for `budget` tokens: never more, counted exactly on the rendered text.

        Priority: task state, then facts (best first), then the most recent turns, then a summary of older turns
        (by `condense`, the builder's own condenser when None).
        """
        target = budget
        for _ in range(8):
            ctx = await self._pack(state, facts, turns, query, max(target, 0), condense or self.condense)
            ctx.text = render(ctx)
            ctx.total = self.count(ctx.text)
            ctx.budget = budget
            if ctx.total <= budget:
                return ctx
            target -= ctx.total - budget + 1  # section counts were estimates at the joins; pack tighter
        return BuiltContext(budget=budget)
