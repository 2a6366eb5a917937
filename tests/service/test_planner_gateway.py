"""The model gateway through the real openai and anthropic SDKs against the simulator, with real Redis."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentmesh.planner.v1 import planner_service_pb2
from mesh.config import MeshConfig
from mesh.resilience import BreakerState
from planner import convert
from planner.config import ModelLimits, PlannerConfig
from planner.embedded.evaluate import FIXTURES_TODAY
from planner.embedded.model import PlanResult, PlanStep
from planner.embedded_tier import shared_tier
from planner.local import local_listing
from planner.model import AnswerInput, AnswerOutcome, Deadline, Observation, PlanInput, PlanOutcome, TokenBatch
from planner.models.limits import Exhausted
from planner.models.tenants import StaticTenants, TenantModels
from planner.server import Parts, build
from planner.sim import LLMSimulator, Scripted

ALICE, BOB = "alice.nguyen@acme.example", "bob.smith@acme.example"
MANAGER_PLAN = {"steps": [{"id": "s1", "tool": "okta.get_user", "args": {"user": "me"}}]}
COMPLEX = "Find the flaky checkout test issue, assign it to me and open an incident about it"


class FakeClock:
    """A monotonic clock the test moves by hand (the breakers read it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[LLMSimulator]:
    simulator = LLMSimulator()
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture(autouse=True)
def fresh_sim(sim: LLMSimulator) -> None:
    sim.reset()


@pytest.fixture(scope="module")
def embedded():
    tier = shared_tier()
    tier.warm()
    return tier


def make_config(backing, mesh_config: MeshConfig, sim: LLMSimulator, **overrides: Any) -> PlannerConfig:
    providers = {
        "openai": {"kind": "openai", "api_key": "sk-test", "base_url": f"{sim.base_url}/v1"},
        "anthropic": {"kind": "anthropic", "api_key": "sk-ant-test", "base_url": sim.base_url},
        "vllm": {"kind": "openai", "api_key": "unused", "base_url": f"{sim.base_url}/v1", "stream": False},
        "anthropic-batch": {"kind": "anthropic", "api_key": "sk-ant-test", "base_url": sim.base_url,
                            "stream": False},
        "nokey": {"kind": "openai", "base_url": f"{sim.base_url}/v1"},
    }
    settings: dict[str, Any] = {"state_dir": mesh_config.state_dir, "jwks_path": mesh_config.jwks_path, "port": 0,
                                "redis_url": backing.redis_url, "model_providers": providers,
                                "retry_base_s": 0.01, "retry_cap_s": 0.02, "breaker_min_calls": 2,
                                "breaker_cooldown_s": 10.0, "today": FIXTURES_TODAY, "plan_cache_ttl_s": 0}
    settings.update(overrides)
    return PlannerConfig(**settings)


@pytest.fixture
async def parts_factory(backing, mesh_config, sim, embedded):
    made: list[Parts] = []

    def factory(clock: FakeClock | None = None, **overrides: Any) -> Parts:
        parts = build(make_config(backing, mesh_config, sim, **overrides), tenants=StaticTenants({}, ModelLimits()),
                      embedded=embedded, clock=clock)
        made.append(parts)
        return parts

    yield factory
    for parts in made:
        await parts.close()


def tenant_id() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def plan_input(request: str, tenant: str, user: str = ALICE, *, deadline_s: float = 10.0,
               context: dict[str, Any] | None = None) -> PlanInput:
    listing = local_listing("acme", user)
    proto = planner_service_pb2.PlanRequest(request=request, tools=listing.tools, denied_tools=listing.denied,
                                            people=listing.people, tools_fingerprint=listing.fingerprint)
    for turn in (context or {}).get("turns", []):
        proto.context.turns.add(role=turn["role"], text=turn["text"])
    return convert.plan_input(proto, tenant, user, Deadline.within(deadline_s))


async def run_plan(parts: Parts, inp: PlanInput, models: TenantModels) -> tuple[list[str], PlanOutcome]:
    tokens: list[str] = []
    outcome: PlanOutcome | None = None
    async for item in parts.servicer.planner.plan(inp, models):
        if isinstance(item, TokenBatch):
            assert outcome is None, "tokens after the plan"
            tokens.append(item.text)
        else:
            assert outcome is None, "more than one plan"
            outcome = item
    assert outcome is not None
    return tokens, outcome


def tiers(**given: str) -> TenantModels:
    return TenantModels(dict(given), ModelLimits())


def requests_of(sim: LLMSimulator, api: str | None = None) -> list[Any]:
    return [r for r in sim.requests if api is None or r.api == api]


# --- providers through their SDKs -----------------------------------------------------------------------------------
async def test_openai_streams_a_tool_call_plan_with_usage_and_cost(parts_factory, sim) -> None:
    parts = parts_factory()
    sim.script(Scripted(tool_arguments=MANAGER_PLAN, usage=(1200, 80)))
    tokens, outcome = await run_plan(parts, plan_input("Who is my manager?", tenant_id()),
                                     tiers(fast="openai:gpt-4.1-mini"))
    assert [(s.tool, s.args) for s in outcome.plan.steps] == [("okta.get_user", {"user": ALICE})]
    assert outcome.tier == "fast" and not outcome.cached
    assert (outcome.usage.provider, outcome.usage.model) == ("openai", "gpt-4.1-mini")
    assert (outcome.usage.input_tokens, outcome.usage.output_tokens) == (1200, 80)
    assert outcome.usage.cost_usd == pytest.approx(1.2 * 0.0004 + 0.08 * 0.0016)
    # The tool call's JSON streamed to the caller in batches (not one message per token).
    assert json.loads("".join(tokens)) == MANAGER_PLAN
    assert 1 < len(tokens) < len(json.dumps(MANAGER_PLAN)) / 16
    [sent] = requests_of(sim)
    body = sent.body
    assert sent.stream and body["stream_options"] == {"include_usage": True}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "submit_plan"}}
    assert body["tools"][0]["function"]["name"] == "submit_plan"
    system, user = body["messages"][0]["content"], body["messages"][1]["content"]
    offered, denied = system.split("DENIED TOOLS (JSON)", 1)
    assert '"name":"okta.get_user"' in offered and "okta.reset_factors" not in offered
    assert '"name":"okta.reset_factors"' in denied and "arguments_schema" not in denied  # named, without a schema
    assert "<planning_input>" in user and "Who is my manager?" in user


async def test_anthropic_streams_a_tool_use_plan_with_usage_and_cost(parts_factory, sim) -> None:
    parts = parts_factory()
    sim.script(Scripted(tool_arguments=MANAGER_PLAN, usage=(900, 60), api="anthropic"))
    tokens, outcome = await run_plan(parts, plan_input("Who is my manager?", tenant_id()),
                                     tiers(fast="anthropic:claude-haiku-4-5"))
    assert [(s.tool, s.args) for s in outcome.plan.steps] == [("okta.get_user", {"user": ALICE})]
    assert (outcome.usage.provider, outcome.usage.model) == ("anthropic", "claude-haiku-4-5")
    assert (outcome.usage.input_tokens, outcome.usage.output_tokens) == (900, 60)
    assert outcome.usage.cost_usd == pytest.approx(0.9 * 0.001 + 0.06 * 0.005)
    assert json.loads("".join(tokens)) == MANAGER_PLAN
    [sent] = requests_of(sim, "anthropic")
    assert sent.stream and sent.body["tool_choice"] == {"type": "tool", "name": "submit_plan"}
    assert sent.body["tools"][0]["input_schema"]["required"] == ["steps"]
    assert "<planning_input>" in sent.body["messages"][0]["content"]


@pytest.mark.parametrize("spec, api", [("vllm:llama-3.1-8b-instruct", "openai"),
                                       ("anthropic-batch:claude-haiku-4-5", "anthropic")])
async def test_non_streaming_providers_and_openai_compatible_base_url(parts_factory, sim, spec: str,
                                                                      api: str) -> None:
    parts = parts_factory()
    sim.script(Scripted(tool_arguments=MANAGER_PLAN, usage=(500, 40)))
    tokens, outcome = await run_plan(parts, plan_input("Who is my manager?", tenant_id()), tiers(fast=spec))
    assert tokens == []
    assert [s.tool for s in outcome.plan.steps] == ["okta.get_user"]
    assert outcome.usage.provider == spec.split(":")[0]
    assert (outcome.usage.input_tokens, outcome.usage.output_tokens) == (500, 40)
    [sent] = requests_of(sim, api)
    assert not sent.stream


async def test_a_provider_without_credentials_is_skipped(parts_factory, sim) -> None:
    parts = parts_factory()
    tokens, outcome = await run_plan(parts, plan_input("Who is my manager?", tenant_id()),
                                     tiers(fast="nokey:gpt-4.1", mid="unknown:model"))
    assert sim.requests == [] and tokens == []
    assert outcome.usage.provider == "embedded" and [s.tool for s in outcome.plan.steps] == ["okta.get_user"]


# --- retries and fallback -------------------------------------------------------------------------------------------
async def test_5xx_is_retried_then_the_next_tier_answers(parts_factory, sim) -> None:
    parts = parts_factory(retry_attempts=3, breaker_min_calls=10)
    sim.script(*[Scripted(fault="status", status=503, api="openai")] * 3,
               Scripted(tool_arguments={"steps": [
                   {"id": "s1", "tool": "jira.search_issues", "args": {"text": "flaky checkout test"}},
                   {"id": "s2", "tool": "jira.assign_issue",
                    "args": {"key": "{{steps.s1.issues[0].key}}", "assignee": "me"}}]}, api="anthropic"))
    _, outcome = await run_plan(parts, plan_input(COMPLEX, tenant_id()),
                                tiers(fast="embedded", mid="anthropic:claude-haiku-4-5", power="openai:gpt-4.1"))
    assert len(requests_of(sim, "openai")) == 3 and len(requests_of(sim, "anthropic")) == 1
    assert outcome.tier == "mid" and outcome.usage.provider == "anthropic"
    assert outcome.plan.steps[1].depends_on == ["s1"]  # the reference adds the dependency
    assert outcome.plan.steps[1].args == {"key": "{{steps.s1.issues[0].key}}", "assignee": ALICE}


async def test_429_is_retried_after_the_retry_after_delay(parts_factory, sim) -> None:
    parts = parts_factory()
    sim.script(Scripted(fault="status", status=429, retry_after_s=0.05), Scripted(tool_arguments=MANAGER_PLAN))
    _, outcome = await run_plan(parts, plan_input("Who is my manager?", tenant_id()), tiers(fast="openai:gpt-4.1"))
    assert len(sim.requests) == 2 and outcome.usage.provider == "openai"


@pytest.mark.parametrize("api, spec", [("openai", "openai:gpt-4.1"), ("anthropic", "anthropic:claude-haiku-4-5")])
async def test_a_stream_cut_midway_falls_back_without_retrying(parts_factory, sim, api: str, spec: str) -> None:
    parts = parts_factory(breaker_min_calls=10)
    sim.script(Scripted(fault="cut", tool_arguments=MANAGER_PLAN, cut_after_chars=50))
    tokens, outcome = await run_plan(parts, plan_input("Who is my manager?", tenant_id()), tiers(fast=spec))
    assert len(sim.requests) == 1  # what streamed went out: no retry, the next tier instead
    assert tokens and "".join(tokens) != json.dumps(MANAGER_PLAN)
    assert outcome.usage.provider == "embedded" and [s.tool for s in outcome.plan.steps] == ["okta.get_user"]


async def test_a_hung_provider_times_out_and_falls_back(parts_factory, sim) -> None:
    parts = parts_factory(model_providers={"openai": {"kind": "openai", "api_key": "k", "timeout_s": 0.3,
                                                      "base_url": f"{sim.base_url}/v1"}})
    sim.script(Scripted(fault="hang"))
    _, outcome = await run_plan(parts, plan_input("Who is my manager?", tenant_id(), deadline_s=5.0),
                                tiers(fast="openai:gpt-4.1"))
    assert len(sim.requests) == 1 and outcome.usage.provider == "embedded"


async def test_breaker_opens_fails_fast_then_a_half_open_probe_closes_it(parts_factory, sim) -> None:
    clock = FakeClock()
    parts = parts_factory(clock, retry_attempts=3, breaker_min_calls=2, breaker_failure_rate=0.5,
                          breaker_cooldown_s=10.0)
    models = tiers(fast="openai:gpt-4.1")
    breaker = parts.gateway.breakers.get("openai")
    sim.script(*[Scripted(fault="status", status=500)] * 3)
    _, first = await run_plan(parts, plan_input("Who is my manager?", tenant_id()), models)
    # Two failures in the window open the breaker; the third attempt is refused without a call.
    assert len(sim.requests) == 2 and breaker.state is BreakerState.OPEN and first.usage.provider == "embedded"
    _, second = await run_plan(parts, plan_input("Who is my manager?", tenant_id()), models)
    assert len(sim.requests) == 2 and second.usage.provider == "embedded"  # failed fast: nothing reached the model
    clock.now += 11.0
    assert breaker.state is BreakerState.HALF_OPEN
    sim.reset()
    sim.script(Scripted(tool_arguments=MANAGER_PLAN))
    _, third = await run_plan(parts, plan_input("Who is my manager?", tenant_id()), models)
    assert len(sim.requests) == 1 and third.usage.provider == "openai" and breaker.state is BreakerState.CLOSED


# --- validation and repair ------------------------------------------------------------------------------------------
async def test_an_invalid_plan_gets_one_repair_round(parts_factory, sim) -> None:
    parts = parts_factory()
    sim.script(Scripted(tool_arguments={"steps": [{"id": "s1", "tool": "okta.delete_user", "args": {}}]}),
               Scripted(tool_arguments=MANAGER_PLAN))
    _, outcome = await run_plan(parts, plan_input("Who is my manager?", tenant_id()), tiers(fast="openai:gpt-4.1"))
    assert [s.tool for s in outcome.plan.steps] == ["okta.get_user"] and outcome.usage.provider == "openai"
    first, second = sim.requests
    feedback = second.body["messages"][-1]
    assert feedback["role"] == "tool" and "okta.delete_user is not one of the requester's tools" in feedback["content"]
    assert json.loads(second.body["messages"][-2]["tool_calls"][0]["function"]["arguments"])["steps"][0]["tool"] \
        == "okta.delete_user"


async def test_a_plan_still_invalid_after_repair_goes_to_the_next_tier(parts_factory, sim) -> None:
    parts = parts_factory()
    bad = {"steps": [{"id": "s1", "tool": "servicenow.get_incident", "args": {"number": "12345"}}]}
    sim.script(Scripted(tool_arguments=bad), Scripted(tool_arguments=bad))
    _, outcome = await run_plan(parts, plan_input("What's the status of INC0010001?", tenant_id()),
                                tiers(fast="openai:gpt-4.1"))
    assert len(sim.requests) == 2
    assert "does not match" in sim.requests[1].body["messages"][-1]["content"]
    assert outcome.usage.provider == "embedded"
    assert [(s.tool, s.args["number"]) for s in outcome.plan.steps] == [("servicenow.get_incident", "INC0010001")]


async def test_a_denied_tool_in_a_model_plan_becomes_a_refusal(parts_factory, sim) -> None:
    parts = parts_factory()
    sim.script(Scripted(tool_arguments={"steps": [
        {"id": "s1", "tool": "okta.reset_factors", "args": {"user": "me"}},
        {"id": "s2", "tool": "servicenow.create_incident", "args": {"short_description": "MFA reset for "
                                                                    "{{steps.s1.user.name}}"}}]}))
    _, outcome = await run_plan(parts, plan_input("Reset my MFA and log it", tenant_id()),
                                tiers(fast="openai:gpt-4.1", mid="openai:gpt-4.1"))
    assert outcome.plan.steps == []  # the dependent step went with the refused one
    assert [r.tool for r in outcome.plan.refusals] == ["okta.reset_factors"]
    assert len(sim.requests) == 1


# --- limits (real Redis) --------------------------------------------------------------------------------------------
async def test_rate_limit_rejects_with_retry_info_or_downgrades(parts_factory, sim) -> None:
    parts = parts_factory()
    tenant = tenant_id()
    reject = TenantModels({"fast": "openai:gpt-4.1"}, ModelLimits(requests_per_minute=1, on_exhausted="reject"))
    sim.script(Scripted(tool_arguments=MANAGER_PLAN))
    await run_plan(parts, plan_input("Who is my manager?", tenant), reject)
    with pytest.raises(Exhausted) as info:
        await run_plan(parts, plan_input("Who is my manager?", tenant), reject)
    assert info.value.reason == "RATE_LIMITED" and 0 < info.value.retry_after_s <= 60
    downgrade = TenantModels(reject.tiers, ModelLimits(requests_per_minute=1, on_exhausted="downgrade"))
    _, outcome = await run_plan(parts, plan_input("Who is my manager?", tenant), downgrade)
    assert outcome.usage.provider == "embedded" and len(sim.requests) == 1
    # Another tenant has its own window.
    sim.script(Scripted(tool_arguments=MANAGER_PLAN))
    _, other = await run_plan(parts, plan_input("Who is my manager?", tenant_id()), reject)
    assert other.usage.provider == "openai"


async def test_daily_token_budget_is_spent_then_refused(parts_factory, sim) -> None:
    parts = parts_factory()
    tenant = tenant_id()
    models = TenantModels({"fast": "anthropic:claude-haiku-4-5"}, ModelLimits(daily_tokens=1000))
    sim.script(Scripted(tool_arguments=MANAGER_PLAN, usage=(1500, 50)))
    await run_plan(parts, plan_input("Who is my manager?", tenant), models)
    assert parts.gateway.limiter is not None and await parts.gateway.limiter.used_today(tenant) == 1550
    with pytest.raises(Exhausted) as info:
        await run_plan(parts, plan_input("Who is my manager?", tenant), models)
    assert info.value.reason == "BUDGET_EXHAUSTED" and 0 < info.value.retry_after_s <= 86400
    assert len(sim.requests) == 1


# --- the plan cache -------------------------------------------------------------------------------------------------
async def test_plan_cache_never_serves_one_users_plan_to_another(parts_factory, sim) -> None:
    parts = parts_factory(plan_cache_ttl_s=3600)
    tenant = tenant_id()
    models = tiers(fast="openai:gpt-4.1")
    sim.script(Scripted(tool_arguments=MANAGER_PLAN))
    _, first = await run_plan(parts, plan_input("Who is my manager?", tenant, ALICE), models)
    _, again = await run_plan(parts, plan_input("who is my manager", tenant, ALICE), models)
    assert not first.cached and again.cached and len(sim.requests) == 1
    assert again.plan.steps[0].args == {"user": ALICE} and again.usage.provider == "openai"
    sim.script(Scripted(tool_arguments=MANAGER_PLAN))
    _, bob = await run_plan(parts, plan_input("Who is my manager?", tenant, BOB), models)
    assert not bob.cached and bob.plan.steps[0].args == {"user": BOB} and len(sim.requests) == 2
    sim.script(Scripted(tool_arguments=MANAGER_PLAN))
    _, elsewhere = await run_plan(parts, plan_input("Who is my manager?", tenant_id(), ALICE), models)
    assert not elsewhere.cached and len(sim.requests) == 3


async def test_plans_that_lean_on_the_session_or_replans_are_not_cached(parts_factory, sim) -> None:
    parts = parts_factory(plan_cache_ttl_s=3600)
    tenant = tenant_id()
    context = {"turns": [{"role": "user", "text": "What's the status of INC0010001?"}]}
    plan = {"steps": [{"id": "s1", "tool": "servicenow.add_comment",
                       "args": {"number": "INC0010001", "comment": "still broken"}}]}
    for _ in range(2):
        sim.script(Scripted(tool_arguments=plan))
        _, outcome = await run_plan(parts, plan_input("Add a comment to it: still broken", tenant, context=context),
                                    tiers(fast="openai:gpt-4.1"))
        assert not outcome.cached
    assert len(sim.requests) == 2


# --- answers --------------------------------------------------------------------------------------------------------
def answer_input(tier: str = "fast") -> AnswerInput:
    plan = PlanResult([PlanStep("s1", "servicenow.create_incident", {"short_description": "VPN drops",
                                                                      "caller": ALICE}, [], "WRITE")])
    output = {"number": "INC0010042", "sys_id": "a" * 32, "short_description": "VPN drops", "state": "New",
              "urgency": 2, "category": None, "caller": {"name": "Alice Nguyen", "email": ALICE}, "url": "u"}
    result = Observation("s1", "servicenow.create_incident", "ok", "WRITE", {"short_description": "VPN drops"},
                         output, "created INC0010042")
    return AnswerInput(tenant_id(), ALICE, "My VPN keeps dropping, open a ticket", plan, tier, (result,),
                       "answered", Deadline.within(10))


async def run_answer(parts: Parts, inp: AnswerInput, models: TenantModels) -> tuple[list[str], AnswerOutcome]:
    deltas: list[str] = []
    final: AnswerOutcome | None = None
    async for item in parts.servicer.responder.respond(inp, models):
        if isinstance(item, TokenBatch):
            deltas.append(item.text)
        else:
            final = item
    assert final is not None
    assert final.text.startswith("".join(deltas).strip())  # what streamed is a prefix of the answer
    return deltas, final


async def test_a_grounded_llm_answer_streams_by_sentence(parts_factory, sim) -> None:
    parts = parts_factory()
    sim.script(Scripted(text="I opened INC0010042 (VPN drops) for Alice Nguyen. Its state is New.",
                        usage=(400, 30)))
    deltas, final = await run_answer(parts, answer_input(), tiers(fast="openai:gpt-4.1"))
    assert final.grounded_by == "openai:gpt-4.1" and len(deltas) == 2
    assert final.text == "I opened INC0010042 (VPN drops) for Alice Nguyen. Its state is New."
    assert final.usage.input_tokens == 400 and final.usage.cost_usd > 0


async def test_an_answer_with_an_invented_ticket_number_falls_back_to_the_template(parts_factory, sim) -> None:
    parts = parts_factory()
    sim.script(Scripted(text="I opened INC0099999 for you, Alice Nguyen."))
    _, final = await run_answer(parts, answer_input(), tiers(fast="openai:gpt-4.1"))
    assert final.grounded_by == "template"
    assert "INC0099999" not in final.text and "INC0010042" in final.text and "Alice Nguyen" in final.text


async def test_embedded_tier_answers_from_the_template_without_a_model(parts_factory, sim) -> None:
    parts = parts_factory()
    _, final = await run_answer(parts, answer_input(), tiers(fast="embedded", mid="openai:gpt-4.1"))
    assert sim.requests == [] and final.grounded_by == "template" and "INC0010042" in final.text


async def test_latency_mode_simulator_answers_with_real_plans(parts_factory, embedded) -> None:
    from planner.sim import LatencyModel, embedded_plan_maker

    simulator = LLMSimulator(LatencyModel(ttft_ms=5, tokens_per_s=20_000), embedded_plan_maker(), seed=7)
    await simulator.start()
    try:
        parts = parts_factory(model_providers={"openai": {"kind": "openai", "api_key": "k",
                                                          "base_url": f"{simulator.base_url}/v1"}})
        tokens, outcome = await run_plan(parts, plan_input(
            "Find the Jira issue about the flaky checkout test and assign it to me", tenant_id()),
            tiers(fast="openai:gpt-4.1", mid="openai:gpt-4.1"))
    finally:
        await simulator.stop()
    assert outcome.usage.provider == "openai" and tokens
    assert [s.tool for s in outcome.plan.steps] == ["jira.search_issues", "jira.assign_issue"]
    assert outcome.plan.steps[1].args["assignee"] == ALICE and outcome.plan.steps[1].depends_on == ["s1"]


async def test_the_plans_question_reaches_the_user_whatever_the_model_wrote(parts_factory, sim) -> None:
    parts = parts_factory()
    base = answer_input()
    inp = AnswerInput(base.tenant, base.requester, base.request,
                      PlanResult(base.plan.steps, question="Which laptop model do you want?"), "fast", base.results,
                      "no_action", Deadline.within(10))
    sim.script(Scripted(text="I opened INC0010042 for you."))
    deltas, final = await run_answer(parts, inp, tiers(fast="openai:gpt-4.1"))
    assert final.text == "I opened INC0010042 for you.\n\nWhich laptop model do you want?"
    assert "".join(deltas) == final.text
