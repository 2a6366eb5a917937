"""What the model gateway exchanges with providers: requests, streamed events, usage, and provider failures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ToolDefinition:
    """A function the model is asked to call (the planner's `submit_plan`)."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Repair:
    """A rejected tool call and why, fed back to the model for one more try."""

    arguments: str
    problems: tuple[str, ...]


@dataclass(frozen=True)
class ModelRequest:
    """One call: instructions, the user's message, optionally a tool the model must call and a repair round."""

    system: str
    user: str
    tool: ToolDefinition | None = None
    repair: Repair | None = None
    max_output_tokens: int = 1500


@dataclass(frozen=True)
class TokenUsage:
    """Tokens one call used, as the provider reported them."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class ModelWait:
    """Time spent awaiting model providers for one Plan or Respond: each try from sending its request until its
    stream ended (or broke, or timed out), summed over retries, fallbacks and repair rounds."""

    seconds: float = 0.0


@dataclass(frozen=True)
class Delta:
    """A piece of model output: answer text, or a fragment of the tool call's JSON arguments."""

    text: str


@dataclass(frozen=True)
class Completion:
    """The end of a call: the tool call's arguments (JSON text) when one was made, the text, and the usage."""

    tool_arguments: str | None
    text: str
    usage: TokenUsage
    model: str


ModelEvent = Delta | Completion


@dataclass
class ProviderError(Exception):
    """A failed provider call, classified as the gRPC status it amounts to (resilience speaks code names).

    `streamed` is true when output had already been streamed when the call broke: such a call is not retried (its
    tokens went out); the gateway falls back to the next tier instead.
    """

    code: str
    message: str
    retry_after_s: float | None = None
    streamed: bool = False
    status: int | None = field(default=None)

    def __post_init__(self) -> None:
        super().__init__(self.message)
