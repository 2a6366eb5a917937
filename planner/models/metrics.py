"""Prometheus metrics of the model gateway: calls by outcome, tokens, cost, and which tier made each plan."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

MODEL_CALLS = Counter("agentmesh_model_calls", "model calls by outcome (ok, or the failure's code)",
                      ["provider", "model", "outcome"])
MODEL_TOKENS = Counter("agentmesh_model_tokens", "model tokens", ["provider", "model", "direction"])
MODEL_COST = Counter("agentmesh_model_cost_usd", "model cost from the price table", ["tenant", "provider"])
MODEL_LATENCY = Histogram("agentmesh_model_call_seconds", "one model call, first attempt to last event",
                          ["provider"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20))
PLANS = Counter("agentmesh_plans", "plans made, by the tier and provider that made them",
                ["tier", "provider", "cached"])
