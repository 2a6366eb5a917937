"""Extractive summary of older turns: TextRank centrality blended with relevance to the request, within a budget."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DAMPING = 0.85
RELEVANCE_WEIGHT = 0.5  # share of the score that is similarity to the request (the rest is centrality)
REDUNDANT = 0.9  # a sentence this similar to one already chosen adds nothing
MIN_WORDS = 3  # "ok", "thanks!" carry nothing worth keeping


@dataclass
class Sentence:
    """One sentence of an older turn, with its position (turn, order) and unit embedding."""

    role: str
    text: str
    turn: int
    order: int
    vector: np.ndarray


def textrank(vectors: np.ndarray, iterations: int = 50, tolerance: float = 1e-6) -> np.ndarray:
    """PageRank over the cosine-similarity graph of sentences (negative similarities dropped); sums to 1."""
    n = vectors.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    sim = np.clip(vectors @ vectors.T, 0.0, None)
    np.fill_diagonal(sim, 0.0)
    out = sim.sum(axis=1, keepdims=True)
    # A sentence similar to nothing links to every sentence alike (the random-surfer convention).
    transition = np.where(out > 0, sim / np.where(out > 0, out, 1.0), 1.0 / n)
    rank = np.full(n, 1.0 / n)
    for _ in range(iterations):
        updated = (1 - DAMPING) / n + DAMPING * (transition.T @ rank)
        if np.abs(updated - rank).sum() < tolerance:
            rank = updated
            break
        rank = updated
    return rank / rank.sum()


def line(sentence: Sentence) -> str:
    return f"{sentence.role}: {sentence.text}"


def summarize(sentences: list[Sentence], query: np.ndarray | None, budget_tokens: int,
              count: Callable[[str], int]) -> str:
    """The best sentences that fit in `budget_tokens`, one line each, in conversation order.

    Scores blend TextRank centrality with similarity to the query; near-duplicates are skipped.
    """
    useful = [s for s in sentences if len(s.text.split()) >= MIN_WORDS]
    if not useful or budget_tokens <= 0:
        return ""
    vectors = np.stack([s.vector for s in useful]).astype(np.float32)
    rank = textrank(vectors)
    score = rank / rank.max()
    if query is not None:
        relevance = np.clip(vectors @ query.astype(np.float32), 0.0, None)
        if relevance.max() > 0:
            score = (1 - RELEVANCE_WEIGHT) * score + RELEVANCE_WEIGHT * relevance / relevance.max()
    chosen: list[int] = []
    used = 0
    for i in np.argsort(-score, kind="stable"):
        if chosen and float(np.max(vectors[chosen] @ vectors[i])) >= REDUNDANT:
            continue
        cost = count(line(useful[i]) + "\n")
        if used + cost > budget_tokens:
            continue
        chosen.append(int(i))
        used += cost
    picked = sorted((useful[i] for i in chosen), key=lambda s: (s.turn, s.order))
    return "\n".join(line(s) for s in picked)
