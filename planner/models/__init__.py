"""The model gateway: providers (OpenAI, Anthropic, OpenAI-compatible, embedded), tiers, breakers, limits, cache."""
