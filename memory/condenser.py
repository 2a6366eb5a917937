"""Condensing older turns with a configured chat model (OpenAI-compatible), cached per session, extractive fallback."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

import numpy as np
import openai

from memory.context import Condense
from memory.sessions import SummaryCache, Turn

log = logging.getLogger("agentmesh.memory")

MAX_INPUT_TOKENS = 12_000  # of older turns sent to the model, newest kept first
_INSTRUCTIONS = (
    "You condense the earlier part of a conversation between an employee and a workplace assistant that acts on "
    "ServiceNow, Jira, Salesforce and Okta. Keep facts, names, record numbers, decisions and open questions; drop "
    "pleasantries. Write plain short lines, at most {budget} tokens in all, with no preamble.")


class ModelCondenser:
    """Asks the chat model for a summary within the budget; reuses the session's cached one for the same turns;
    falls back to `fallback` when the model fails or overruns the budget (a context never exceeds its budget)."""

    def __init__(self, client: openai.AsyncOpenAI, model: str, count: Callable[[str], int], cache: SummaryCache,
                 fallback: Condense) -> None:
        self.client = client
        self.model = model
        self.count = count
        self.cache = cache
        self.fallback = fallback

    def _transcript(self, older: list[Turn]) -> str:
        lines: list[str] = []
        used = 0
        for turn in reversed(older):
            line = f"{turn.role}: {turn.text}"
            used += self.count(line) + 1
            if used > MAX_INPUT_TOKENS:
                break
            lines.append(line)
        return "\n".join(reversed(lines))

    async def _ask(self, transcript: str, budget: int) -> str | None:
        try:
            response = await self.client.chat.completions.create(
                model=self.model, temperature=0, max_tokens=budget,
                messages=[{"role": "system", "content": _INSTRUCTIONS.format(budget=budget)},
                          {"role": "user", "content": transcript}])
        except openai.APIError as err:
            log.warning("summary model failed; extractive summary used",
                        extra={"fields": {"model": self.model, "error": err.__class__.__name__}})
            return None
        content = response.choices[0].message.content if response.choices else None
        return content.strip() if content else None

    def for_session(self, tenant: str, user: str, session_id: str) -> Condense:
        """The condenser of one session (the cache is scoped to the tenant, user and session)."""
        async def condense(older: list[Turn], query: np.ndarray | None, budget: int) -> str:
            transcript = self._transcript(older)
            digest = hashlib.sha256(f"{self.model}\n{transcript}".encode()).hexdigest()[:32]
            cached = await self.cache.get(tenant, user, session_id, digest)
            if cached and self.count("\n" + cached) <= budget:
                return cached
            text = await self._ask(transcript, budget)
            if text and self.count("\n" + text) <= budget:
                await self.cache.put(tenant, user, session_id, digest, text)
                return text
            return await self.fallback(older, query, budget)

        return condense

    async def close(self) -> None:
        await self.client.close()
