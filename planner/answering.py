"""Answering: an LLM answer checked sentence by sentence against the step results, else the template."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator

from mesh.resilience import CircuitOpen
from planner.grounding import Grounding
from planner.model import AnswerInput, AnswerOutcome, TokenBatch, Usage
from planner.models.gateway import ModelGateway, Target
from planner.models.limits import Exhausted
from planner.models.routing import TIERS
from planner.models.tenants import TenantModels
from planner.models.types import Completion, Delta, ModelRequest, ModelWait, ProviderError
from planner.prompts import answer_system, answer_user
from planner.templates import render

log = logging.getLogger("agentmesh.planner")
_BOUNDARY = re.compile(r"(?<=[.!?])\s+|\n+")
_TEMPLATE_BATCH = 160


class Ungrounded(Exception):
    """An LLM answer named something no source holds."""

    def __init__(self, tokens: list[str]) -> None:
        super().__init__(", ".join(tokens))
        self.tokens = tokens


class Responder:
    """Streams one answer per request; the text streamed is always a prefix of the final answer."""

    def __init__(self, gateway: ModelGateway) -> None:
        self.gateway = gateway

    async def respond(self, inp: AnswerInput, models: TenantModels,
                      waited: ModelWait | None = None) -> AsyncIterator[TokenBatch | AnswerOutcome]:
        """Answer batches, then the AnswerOutcome; the time spent awaiting model providers is added to `waited`
        (an LLM answer that was tried and not used included)."""
        template = render(inp)
        usage = Usage()
        start = inp.tier if inp.tier in TIERS else "fast"
        for target in self.gateway.targets(models, start):
            if target.embedded:
                break
            emitted: list[str] = []
            try:
                async for sentence in self._llm(target, inp, models, usage, waited):
                    emitted.append(sentence)
                    yield TokenBatch(sentence)
            except (Exhausted, CircuitOpen, ProviderError, Ungrounded) as err:
                log.info("LLM answer not used", extra={"fields": {"tenant": inp.tenant, "model": target.spec,
                                                                  "why": type(err).__name__, "detail": str(err)}})
            except Exception:  # never let the LLM path cost the user the templated answer
                log.exception("LLM answer failed unexpectedly", extra={"fields": {"model": target.spec}})
            else:
                text = "".join(emitted).strip()
                question = (inp.plan.question or "").strip()
                if question and question not in text:
                    # The plan's question must reach the user whatever the model wrote.
                    yield TokenBatch("\n\n" + question)
                    text += "\n\n" + question
                yield AnswerOutcome(text, usage, grounded_by=target.spec)
                return
            if emitted:
                # Part of a grounded answer went out; the template completes it, so what streamed stays a prefix.
                tail = "\n\n" + template
                yield TokenBatch(tail)
                yield AnswerOutcome("".join(emitted).strip() + tail, usage, "template")
                return
        for start_at in range(0, len(template), _TEMPLATE_BATCH):
            yield TokenBatch(template[start_at:start_at + _TEMPLATE_BATCH])
        yield AnswerOutcome(template, usage, "template")

    async def _llm(self, target: Target, inp: AnswerInput, models: TenantModels, usage: Usage,
                   waited: ModelWait | None) -> AsyncIterator[str]:
        """Grounded sentences of the model's answer as they complete; raises Ungrounded at the first that is not."""
        grounding = Grounding.of(inp)
        request = ModelRequest(answer_system(), answer_user(_answer_input(inp)), max_output_tokens=400)
        pending = ""
        completion: Completion | None = None
        async with contextlib.aclosing(self.gateway.call(target, request, inp.tenant, models.limits,
                                                         inp.deadline, waited)) as events:
            async for event in events:
                if isinstance(event, Delta):
                    pending += event.text
                    while True:
                        match = _BOUNDARY.search(pending)
                        if match is None:
                            break
                        sentence, pending = pending[: match.end()], pending[match.end():]
                        _check(grounding, sentence)
                        yield sentence
                else:
                    completion = event
        if completion is None:
            raise ProviderError("UNAVAILABLE", "the model ended without an answer")
        usage.add(completion.usage.input_tokens, completion.usage.output_tokens,
                  self.gateway.cost(completion.model, completion.usage.input_tokens, completion.usage.output_tokens),
                  target.provider, completion.model)
        if not completion.text.strip():
            raise ProviderError("UNAVAILABLE", "the model answered with no text")
        if pending.strip():
            _check(grounding, pending)
            yield pending


def _check(grounding: Grounding, sentence: str) -> None:
    bad = grounding.ungrounded(sentence)
    if bad:
        raise Ungrounded(bad)


def _answer_input(inp: AnswerInput) -> dict[str, object]:
    return {
        "request": inp.request,
        "requester": inp.requester,
        "outcome": inp.outcome,
        "refusals": [{"tool": r.tool, "reason": r.reason} for r in inp.plan.refusals],
        "question": inp.plan.question,
        "explanation": inp.plan.explanation,
        "results": [r.as_data() for r in inp.results],
    }
