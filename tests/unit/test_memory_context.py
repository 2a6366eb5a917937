"""The context window manager and the extractive summarizer, without servers: budgets, priority, selection."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import numpy as np

from memory.context import ContextBuilder
from memory.facts import Fact
from memory.sessions import Turn, split_sentences
from memory.summarizer import Sentence, summarize, textrank
from mesh import tokens

WORDS = ("vpn ticket laptop okta password jira bug project salesforce renewal globex manager incident network "
         "printer badge the a of and to is was my please open close assign update status quarter deal").split()


def unit(rng: np.random.Generator, dim: int = 16) -> np.ndarray:
    v = rng.normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def random_turn(rng: random.Random, nrng: np.random.Generator, i: int) -> Turn:
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30))) + "."
                 for _ in range(rng.randint(1, 5))]
    text = " ".join(sentences)
    split = split_sentences(text)
    return Turn("user" if i % 2 == 0 else "assistant", text, sentences=split,
                vectors=np.stack([unit(nrng) for _ in split]))


def fact(text: str, score: float = 0.5) -> Fact:
    now = datetime.now(UTC)
    return Fact(id=text[:8], text=text, kind="preference", create_time=now, expire_time=now, score=score)


async def test_budget_is_never_exceeded_and_recent_turns_stay_whole_and_in_order() -> None:
    rng, nrng = random.Random(7), np.random.default_rng(7)
    builder = ContextBuilder(tokens.count)
    for _ in range(150):
        turns = [random_turn(rng, nrng, i) for i in range(rng.randint(0, 70))]
        state = {f"s{i}": {"status": "ok", "rows": rng.randint(0, 999)} for i in range(rng.randint(0, 6))}
        facts = [fact(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 25)))) for _ in range(rng.randint(0, 6))]
        budget = rng.choice([1, 5, 17, 40, 90, 200, 500, 1200, 5000])
        ctx = await builder.build(state, facts, turns, unit(nrng), budget)
        assert ctx.total == tokens.count(ctx.text) <= budget
        if ctx.turns:
            assert ctx.turns == turns[len(turns) - len(ctx.turns):]
        if ctx.summary:
            assert ctx.condensed_turns == len(turns) - len(ctx.turns) > 0


async def test_priority_is_task_state_then_facts_then_turns() -> None:
    rng, nrng = random.Random(1), np.random.default_rng(1)
    builder = ContextBuilder(tokens.count)
    turns = [random_turn(rng, nrng, i) for i in range(30)]
    state = {"s1": {"tool": "servicenow.create_incident", "number": "INC0010042"}}
    facts = [fact("The user's default Jira project is ENG."), fact("The user's computer is a ThinkPad.")]
    state_cost = (await builder.build(state, [], [], None, 10_000)).total
    both_cost = (await builder.build(state, facts, [], None, 10_000)).total
    only_state = await builder.build(state, facts, turns, None, state_cost + 2)
    assert only_state.working_state == state and not only_state.facts and not only_state.turns
    state_and_facts = await builder.build(state, facts, turns, None, both_cost + 2)
    assert state_and_facts.working_state == state and len(state_and_facts.facts) == 2 and not state_and_facts.turns
    roomy = await builder.build(state, facts, turns, None, 400)
    assert roomy.working_state == state and len(roomy.facts) == 2 and roomy.turns and roomy.summary
    # A state larger than the budget keeps the keys that fit rather than nothing.
    big = {"a": "x " * 300, "b": "small"}
    partial = await builder.build(big, [], [], None, 30)
    assert partial.working_state == {"b": "small"}


def test_textrank_ranks_the_central_sentence_first() -> None:
    base = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
    near = [base + np.array(d, dtype=np.float32) for d in ([0, .3, 0, 0], [0, -.3, 0, 0], [0, 0, .3, 0],
                                                            [0, 0, -.3, 0])]
    outlier = np.array([0.0, 0.0, 0.0, 1.0], dtype=np.float32)
    vectors = np.stack([v / np.linalg.norm(v) for v in [*near, base, outlier]])
    rank = textrank(vectors)
    assert abs(rank.sum() - 1) < 1e-6
    assert int(np.argmax(rank)) == 4 and int(np.argmin(rank)) == 5  # the cluster's centre first, the outlier last


def test_summary_prefers_what_the_request_is_about_and_keeps_conversation_order() -> None:
    nrng = np.random.default_rng(3)
    query = unit(nrng)
    texts = ["we talked about the printer on floor three", "the VPN drops every ten minutes on office wifi",
             "the badge reader at the door was fixed", "the salesforce renewal for globex moves to june"]
    vectors = [unit(nrng) for _ in texts]
    vectors[1] = query  # the VPN sentence is the one the request is about
    sentences = [Sentence("user", t, i, 0, v) for i, (t, v) in enumerate(zip(texts, vectors, strict=True))]
    one_line = tokens.count("user: " + texts[1] + "\n")
    assert summarize(sentences, query, one_line, tokens.count) == "user: " + texts[1]
    everything = summarize(sentences, query, 1000, tokens.count)
    assert everything.splitlines() == [f"user: {t}" for t in texts]
    duplicate = [*sentences, Sentence("assistant", "the VPN keeps dropping on office wifi", 5, 0, query)]
    assert summarize(duplicate, query, 1000, tokens.count).count("VPN") == 1
    assert summarize([Sentence("user", "ok thanks", 0, 0, query)], query, 100, tokens.count) == ""
