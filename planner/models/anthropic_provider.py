"""The `anthropic` provider: the Messages API with a forced tool use, streamed, through the official anthropic SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import anthropic
import httpx2

from planner.config import ProviderSettings
from planner.models.errors import broken_stream, from_status
from planner.models.types import Completion, Delta, ModelEvent, ModelRequest, ProviderError, TokenUsage

_REPAIR_TOOL_USE_ID = "toolu_plan_1"


class AnthropicProvider:
    """Messages (`POST {base_url}/v1/messages`); retries are the gateway's, so the SDK makes none."""

    kind = "anthropic"

    def __init__(self, name: str, settings: ProviderSettings) -> None:
        self.name = name
        self.settings = settings
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        self._client = anthropic.AsyncAnthropic(api_key=key, base_url=settings.base_url, max_retries=0,
                                                timeout=settings.timeout_s, open_telemetry=False)

    async def close(self) -> None:
        await self._client.close()

    def _messages(self, request: ModelRequest) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = [{"role": "user", "content": request.user}]
        if request.repair is not None and request.tool is not None:
            try:
                given = json.loads(request.repair.arguments)
            except ValueError:
                given = None
            problems = list(request.repair.problems)
            if not isinstance(given, dict):
                given = {}
                problems.insert(0, "the tool input was not a JSON object")
            messages.append({"role": "assistant", "content": [
                {"type": "tool_use", "id": _REPAIR_TOOL_USE_ID, "name": request.tool.name, "input": given}]})
            messages.append({"role": "user", "content": [{
                "type": "tool_result", "tool_use_id": _REPAIR_TOOL_USE_ID, "is_error": True,
                "content": "Rejected. Fix these problems and call the tool again:\n- " + "\n- ".join(problems)}]})
        return messages

    def _arguments(self, request: ModelRequest, model: str, timeout_s: float) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": model, "system": request.system, "messages": self._messages(request),
                                  "max_tokens": min(request.max_output_tokens, self.settings.max_output_tokens),
                                  "timeout": timeout_s}
        if request.tool is not None:
            kwargs["tools"] = [{"name": request.tool.name, "description": request.tool.description,
                                "input_schema": request.tool.parameters}]
            kwargs["tool_choice"] = {"type": "tool", "name": request.tool.name}
        return kwargs

    async def stream(self, request: ModelRequest, model: str, timeout_s: float) -> AsyncGenerator[ModelEvent, None]:
        """Deltas as they arrive, then one Completion; a failure raises ProviderError."""
        kwargs = self._arguments(request, model, timeout_s)
        if not self.settings.stream:
            yield await self._complete(kwargs, model)
            return
        streamed = False
        blocks: dict[int, str] = {}  # index -> "text" | "tool_use"
        tool_block: int | None = None
        tool_parts: list[str] = []
        text_parts: list[str] = []
        input_tokens = output_tokens = 0
        stopped = False
        answered_model = model
        try:
            stream = await self._client.messages.create(**kwargs, stream=True)
            async with stream:
                async for event in stream:
                    if event.type == "message_start":
                        answered_model = event.message.model or model
                        input_tokens = event.message.usage.input_tokens
                        output_tokens = event.message.usage.output_tokens
                    elif event.type == "content_block_start":
                        blocks[event.index] = event.content_block.type
                        if event.content_block.type == "tool_use" and tool_block is None:
                            tool_block = event.index
                    elif event.type == "content_block_delta":
                        delta = event.delta
                        if delta.type == "text_delta":
                            text_parts.append(delta.text)
                            streamed = True
                            yield Delta(delta.text)
                        elif delta.type == "input_json_delta" and event.index == tool_block:
                            tool_parts.append(delta.partial_json)
                            streamed = True
                            yield Delta(delta.partial_json)
                    elif event.type == "message_delta":
                        output_tokens = event.usage.output_tokens
                        if event.usage.input_tokens:
                            input_tokens = event.usage.input_tokens
                    elif event.type == "message_stop":
                        stopped = True
        except anthropic.APIStatusError as err:
            raise from_status(err.status_code, str(err.message), err.response.headers, streamed) from err
        except anthropic.APITimeoutError as err:
            raise ProviderError("DEADLINE_EXCEEDED", "the provider did not answer in time", None, streamed) from err
        except anthropic.APIError as err:
            raise ProviderError("UNAVAILABLE", f"{type(err).__name__}: {err.message}", None, streamed) from err
        except httpx2.HTTPError as err:  # a transport failure mid-stream that the SDK passes through
            raise ProviderError("UNAVAILABLE", f"{type(err).__name__}: {err}", None, streamed) from err
        if not stopped:
            raise broken_stream("the stream ended before message_stop")
        arguments = ("".join(tool_parts) or "{}") if tool_block is not None else None
        yield Completion(arguments, "".join(text_parts), TokenUsage(input_tokens, output_tokens), answered_model)

    async def _complete(self, kwargs: dict[str, Any], model: str) -> Completion:
        try:
            message = await self._client.messages.create(**kwargs, stream=False)
        except anthropic.APIStatusError as err:
            raise from_status(err.status_code, str(err.message), err.response.headers, False) from err
        except anthropic.APITimeoutError as err:
            raise ProviderError("DEADLINE_EXCEEDED", "the provider did not answer in time") from err
        except anthropic.APIError as err:
            raise ProviderError("UNAVAILABLE", f"{type(err).__name__}: {err.message}") from err
        except httpx2.HTTPError as err:
            raise ProviderError("UNAVAILABLE", f"{type(err).__name__}: {err}") from err
        text = "".join(block.text for block in message.content if block.type == "text")
        arguments = next((json.dumps(block.input) for block in message.content if block.type == "tool_use"), None)
        usage = TokenUsage(message.usage.input_tokens, message.usage.output_tokens)
        return Completion(arguments, text, usage, message.model or model)
