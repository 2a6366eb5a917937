"""The price table: US dollars per 1K input and output tokens, per model (tokens x price = the cost of a call)."""

from __future__ import annotations

from collections.abc import Mapping

# Public list prices (USD per 1K tokens: input, output). Dated model names match their family by prefix; a model
# not listed (a self-hosted one) costs nothing unless the deployment prices it (PlannerConfig.model_prices).
PRICES: dict[str, tuple[float, float]] = {
    "embedded": (0.0, 0.0),
    "gpt-4.1": (0.002, 0.008),
    "gpt-4.1-mini": (0.0004, 0.0016),
    "gpt-4.1-nano": (0.0001, 0.0004),
    "gpt-4o": (0.0025, 0.01),
    "gpt-4o-mini": (0.00015, 0.0006),
    "gpt-5": (0.00125, 0.01),
    "gpt-5-mini": (0.00025, 0.002),
    "gpt-5-nano": (0.00005, 0.0004),
    "o4-mini": (0.0011, 0.0044),
    "claude-haiku": (0.001, 0.005),
    "claude-3-5-haiku": (0.0008, 0.004),
    "claude-haiku-4-5": (0.001, 0.005),
    "claude-sonnet": (0.003, 0.015),
    "claude-sonnet-4": (0.003, 0.015),
    "claude-sonnet-4-5": (0.003, 0.015),
    "claude-opus-4": (0.015, 0.075),
    "claude-opus-4-1": (0.015, 0.075),
}


class PriceTable:
    """Looks a model up exactly, then by the longest listed prefix (`gpt-4.1-2025-04-14` → `gpt-4.1`)."""

    def __init__(self, extra: Mapping[str, tuple[float, float]] | None = None) -> None:
        self.prices = {**PRICES, **(extra or {})}
        self._prefixes = sorted(self.prices, key=len, reverse=True)

    def price(self, model: str) -> tuple[float, float]:
        found = self.prices.get(model)
        if found is not None:
            return found
        for prefix in self._prefixes:
            if model.startswith(prefix):
                return self.prices[prefix]
        return (0.0, 0.0)

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        """The cost in USD of one call."""
        per_in, per_out = self.price(model)
        return input_tokens / 1000.0 * per_in + output_tokens / 1000.0 * per_out
