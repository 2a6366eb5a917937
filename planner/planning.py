"""Planning: route, consult the cache, try each tier (one repair round), end at the embedded planner."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from mesh.resilience import CircuitOpen
from planner.embedded.model import PlanResult
from planner.embedded_tier import EmbeddedTier, revise
from planner.model import PlanInput, PlanOutcome, TokenBatch, Usage
from planner.models.cache import CacheKey, PlanCache, depends_on_session, directory_digest, permissions_fingerprint
from planner.models.gateway import ModelGateway, Target
from planner.models.limits import Exhausted
from planner.models.metrics import PLANS
from planner.models.routing import classify
from planner.models.tenants import TenantModels
from planner.models.types import Completion, Delta, ModelRequest, ModelWait, ProviderError, Repair
from planner.prompts import PLAN_TOOL, PromptTool, plan_system, plan_user
from planner.relevance import ToolRanker
from planner.validation import People, ToolCatalog, Validation, plan_arguments, validate

log = logging.getLogger("agentmesh.planner")

FALLBACK_QUESTION = ("I couldn't work out a plan for that. Could you say it another way, naming the record, person "
                     "or system you mean?")
_MAX_PEOPLE_IN_PROMPT = 40


class TokenBatcher:
    """Gathers streamed model output into batches: one message per few dozen characters, not per token."""

    def __init__(self, max_chars: int, max_ms: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_chars = max_chars
        self.max_s = max_ms / 1000.0
        self.clock = clock
        self._parts: list[str] = []
        self._size = 0
        self._since = clock()

    def add(self, text: str) -> str | None:
        """Adds text; returns a batch when one is due."""
        if not text:
            return None
        if not self._parts:
            self._since = self.clock()
        self._parts.append(text)
        self._size += len(text)
        if self._size >= self.max_chars or self.clock() - self._since >= self.max_s:
            return self.flush()
        return None

    def flush(self) -> str | None:
        if not self._parts:
            return None
        out = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        return out


@dataclass(frozen=True)
class PlannerSettings:
    """The planner's tunables (from PlannerConfig)."""

    token_batch_chars: int = 48
    token_batch_ms: float = 40.0
    max_prompt_tools: int = 24


class Planner:
    """Produces exactly one validated plan per request, streaming model tokens on the way."""

    def __init__(self, gateway: ModelGateway, embedded: EmbeddedTier, cache: PlanCache | None,
                 ranker: ToolRanker, settings: PlannerSettings, today: Callable[[], dt.date]) -> None:
        self.gateway = gateway
        self.embedded = embedded
        self.cache = cache
        self.ranker = ranker
        self.settings = settings
        self.today = today

    async def plan(self, inp: PlanInput, models: TenantModels,
                   waited: ModelWait | None = None) -> AsyncIterator[TokenBatch | PlanOutcome]:
        """Token batches (LLM tiers), then one PlanOutcome. Raises Exhausted when a limit ran out and the tenant
        rejects rather than downgrades. The time spent awaiting model providers, every tier tried, is added to
        `waited`."""
        catalog = ToolCatalog(inp.tools, inp.denied)
        people = inp.directory or People(inp.people)
        known = {s.id for s in inp.previous_plan.steps} if inp.previous_plan else set()
        known |= {o.step_id for o in inp.observations}
        round_ = inp.previous_round + 1 if inp.replan else 0
        route = classify(inp.request, inp.context, inp.replan)
        targets = self.gateway.targets(models, route.tier)
        key = self._cache_key(inp, targets[0])
        if key is not None and self.cache is not None:
            hit = await self.cache.get(key)
            if hit is not None:
                plan = {k: hit.get(k) for k in ("steps", "refusals", "question", "explanation") if k in hit}
                checked = validate(plan, catalog, people, inp.requester, known)
                if checked.ok:
                    PLANS.labels(str(hit.get("tier", "")), str(hit.get("provider", "")), "true").inc()
                    yield PlanOutcome(checked.plan, Usage(provider=str(hit.get("provider", "embedded")),
                                                          model=str(hit.get("model", "embedded"))),
                                      str(hit.get("tier", targets[0].tier)), round_, cached=True)
                    return
        usage = Usage()
        for position, target in enumerate(targets):
            found: Validation | None = None
            if target.embedded:
                found = await self._embedded(inp, catalog, people, known)
                usage.add(0, 0, 0.0, "embedded", "embedded")
            else:
                try:
                    async for item in self._llm(target, inp, catalog, people, known, models, usage, waited):
                        if isinstance(item, TokenBatch):
                            yield item
                        else:
                            found = item
                except Exhausted:
                    if models.limits.on_exhausted != "downgrade":
                        raise
                    log.info("model limit reached; trying a cheaper tier", extra={"fields": {
                        "tenant": inp.tenant, "model": target.spec}})
                    continue
                except CircuitOpen as err:
                    log.info("model breaker open; next tier", extra={"fields": {
                        "tenant": inp.tenant, "model": target.spec, "retry_after_s": round(err.retry_after_s, 2)}})
                    continue
                except ProviderError as err:
                    log.warning("model tier failed; next tier", extra={"fields": {
                        "tenant": inp.tenant, "model": target.spec, "code": err.code, "error": err.message}})
                    continue
                except Exception:  # never let one tier's defect cost the request its embedded fallback
                    log.exception("model tier failed unexpectedly; next tier", extra={"fields": {
                        "tenant": inp.tenant, "model": target.spec}})
                    continue
                if found is None:
                    continue
            assert found is not None
            outcome = PlanOutcome(found.plan, usage, target.tier, round_)
            if key is not None and self.cache is not None and position == 0 and found.ok:
                await self.cache.put(key, {**plan_arguments(found.plan), "tier": target.tier,
                                           "provider": usage.provider, "model": usage.model})
            PLANS.labels(target.tier, usage.provider, "false").inc()
            yield outcome
            return

    def _cache_key(self, inp: PlanInput, head: Target) -> CacheKey | None:
        if self.cache is None or inp.replan or depends_on_session(inp.request, inp.context):
            return None
        fingerprint = inp.fingerprint or permissions_fingerprint(((t.name, t.version) for t in inp.tools),
                                                                 inp.denied)
        facts = tuple(str(f.get("text", "")) for f in inp.context.get("facts", []) if isinstance(f, Mapping))
        return CacheKey(inp.tenant, inp.requester, fingerprint, inp.request,
                        tuple(f"{t.name}@{t.version}" for t in inp.tools), head.spec, self.today().isoformat(),
                        inp.people_fingerprint or directory_digest([(p.email, p.name) for p in inp.people]), facts)

    async def _embedded(self, inp: PlanInput, catalog: ToolCatalog, people: People,
                        known: set[str]) -> Validation:
        """The embedded tier's plan (or re-plan), validated like any other; invalid output becomes a question."""
        if inp.previous_plan is not None:
            raw: Any = revise(inp.previous_plan, inp.observations)
        else:
            turns = [{"role": t.get("role", ""), "text": t.get("text", "")} for t in inp.context.get("turns", [])
                     if isinstance(t, Mapping)]
            try:
                result = await asyncio.to_thread(
                    self.embedded.plan, inp.request, requester=inp.requester, allowed=set(catalog.tools),
                    denied=catalog.denied, people=inp.people, today=self.today(), context={"turns": turns})
            except Exception:  # a defect on some input must not become INTERNAL for the user: ask instead
                log.exception("embedded planner failed", extra={"fields": {"tenant": inp.tenant}})
                # The problem stays on record, so the question is used but never cached.
                return Validation(PlanResult(question=FALLBACK_QUESTION), ["the embedded planner failed"])
            raw = plan_arguments(result)
        checked = validate(raw, catalog, people, inp.requester, known)
        if checked.ok:
            return checked
        log.warning("embedded plan failed validation", extra={"fields": {"tenant": inp.tenant,
                                                                          "problems": checked.problems}})
        return Validation(PlanResult(refusals=checked.plan.refusals, question=FALLBACK_QUESTION), checked.problems)

    async def _llm(self, target: Target, inp: PlanInput, catalog: ToolCatalog, people: People, known: set[str],
                   models: TenantModels, usage: Usage,
                   waited: ModelWait | None) -> AsyncIterator[TokenBatch | Validation]:
        """Token batches and, when the model's plan (or its one repair) validates, the Validation."""
        request = self._prompt(inp, catalog)
        for attempt in (1, 2):
            batcher = TokenBatcher(self.settings.token_batch_chars, self.settings.token_batch_ms)
            completion: Completion | None = None
            async with contextlib.aclosing(self.gateway.call(target, request, inp.tenant, models.limits,
                                                             inp.deadline, waited)) as events:
                async for event in events:
                    if isinstance(event, Delta):
                        batch = batcher.add(event.text)
                        if batch:
                            yield TokenBatch(batch)
                    else:
                        completion = event
            tail = batcher.flush()
            if tail:
                yield TokenBatch(tail)
            if completion is None:
                raise ProviderError("UNAVAILABLE", "the model ended without a result")
            usage.add(completion.usage.input_tokens, completion.usage.output_tokens,
                      self.gateway.cost(completion.model, completion.usage.input_tokens,
                                        completion.usage.output_tokens), target.provider, completion.model)
            arguments = completion.tool_arguments
            problems: list[str]
            if arguments is None:
                problems = ["call submit_plan with the plan; do not answer in text"]
            else:
                try:
                    raw = json.loads(arguments)
                except ValueError as err:
                    problems = [f"the arguments are not valid JSON ({err})"]
                else:
                    checked = validate(raw, catalog, people, inp.requester, known)
                    if checked.ok:
                        yield checked
                        return
                    problems = checked.problems
            log.info("model plan invalid", extra={"fields": {"tenant": inp.tenant, "model": target.spec,
                                                             "attempt": attempt, "problems": problems[:10]}})
            request = replace(request, repair=Repair(arguments or "{}", tuple(problems[:20])))

    def _prompt(self, inp: PlanInput, catalog: ToolCatalog) -> ModelRequest:
        keep = {s.tool for s in inp.previous_plan.steps} if inp.previous_plan else set()
        tools = self.ranker.select(inp.request, list(catalog.tools.values()), self.settings.max_prompt_tools, keep)
        prompt_tools = [PromptTool(t.name, t.description, t.effect, t.arguments_schema) for t in tools]
        today = self.today().isoformat()
        planning_input = {
            "request": inp.request,
            "requester": inp.requester,
            "today": today,
            "tools": [t.name for t in tools],
            "denied_tools": dict(catalog.denied),
            "people": [{"email": p.email, "name": p.name, "first_name": p.first_name, "last_name": p.last_name}
                       for p in _relevant_people(inp)],
        }
        context = {k: v for k, v in inp.context.items() if v}
        previous = plan_arguments(inp.previous_plan) if inp.previous_plan is not None else None
        return ModelRequest(plan_system(prompt_tools, catalog.denied, today, inp.replan),
                            plan_user(planning_input, context, previous, [o.as_data() for o in inp.observations]),
                            PLAN_TOOL)


def _relevant_people(inp: PlanInput) -> Sequence[Any]:
    """The whole directory when small; otherwise the requester and the people the request or context names."""
    if len(inp.people) <= _MAX_PEOPLE_IN_PROMPT:
        return inp.people
    text = (inp.request + " " + json.dumps(inp.context.get("turns", []), default=str)).casefold()
    words = set(re.findall(r"[\w.@'-]+", text))
    return [p for p in inp.people
            if p.email.casefold() == inp.requester.casefold() or p.email.casefold() in text
            or p.first_name.casefold() in words or p.last_name.casefold() in words]
