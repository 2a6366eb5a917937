"""The `openai` provider (and any OpenAI-compatible server): chat completions with a forced tool call."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx2
import openai

from planner.config import ProviderSettings
from planner.models.errors import broken_stream, from_status
from planner.models.types import Completion, Delta, ModelEvent, ModelRequest, ProviderError, TokenUsage

_REPAIR_CALL_ID = "call_plan_1"


class OpenAIProvider:
    """Chat completions (`POST {base_url}/chat/completions`); retries are the gateway's, so the SDK makes none."""

    kind = "openai"

    def __init__(self, name: str, settings: ProviderSettings) -> None:
        self.name = name
        self.settings = settings
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        self._client = openai.AsyncOpenAI(api_key=key, base_url=settings.base_url, max_retries=0,
                                          timeout=settings.timeout_s)

    async def close(self) -> None:
        await self._client.close()

    def _messages(self, request: ModelRequest) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = [{"role": "system", "content": request.system},
                                          {"role": "user", "content": request.user}]
        if request.repair is not None and request.tool is not None:
            messages.append({"role": "assistant", "content": None, "tool_calls": [{
                "id": _REPAIR_CALL_ID, "type": "function",
                "function": {"name": request.tool.name, "arguments": request.repair.arguments}}]})
            messages.append({"role": "tool", "tool_call_id": _REPAIR_CALL_ID,
                             "content": "Rejected. Fix these problems and call the tool again:\n- "
                                        + "\n- ".join(request.repair.problems)})
        return messages

    def _arguments(self, request: ModelRequest, model: str, timeout_s: float) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": model, "messages": self._messages(request),
                                  "max_tokens": min(request.max_output_tokens, self.settings.max_output_tokens),
                                  "timeout": timeout_s}
        if request.tool is not None:
            kwargs["tools"] = [{"type": "function", "function": {
                "name": request.tool.name, "description": request.tool.description,
                "parameters": request.tool.parameters}}]
            kwargs["tool_choice"] = {"type": "function", "function": {"name": request.tool.name}}
            kwargs["parallel_tool_calls"] = False
        return kwargs

    async def stream(self, request: ModelRequest, model: str, timeout_s: float) -> AsyncGenerator[ModelEvent, None]:
        """Deltas as they arrive, then one Completion; a failure raises ProviderError."""
        kwargs = self._arguments(request, model, timeout_s)
        if not self.settings.stream:
            yield await self._complete(kwargs, model)
            return
        streamed = False
        tool_parts: list[str] = []
        text_parts: list[str] = []
        tool_index: int | None = None
        finished: str | None = None
        usage: TokenUsage | None = None
        answered_model = model
        try:
            stream = await self._client.chat.completions.create(**kwargs, stream=True,
                                                                stream_options={"include_usage": True})
            async with stream:
                async for chunk in stream:
                    answered_model = chunk.model or answered_model
                    if chunk.usage is not None:
                        usage = TokenUsage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
                    for choice in chunk.choices:
                        delta = choice.delta
                        if delta is not None and delta.content:
                            text_parts.append(delta.content)
                            streamed = True
                            yield Delta(delta.content)
                        for call in (delta.tool_calls or []) if delta is not None else []:
                            tool_index = call.index if tool_index is None else tool_index
                            if call.index == tool_index and call.function is not None and call.function.arguments:
                                tool_parts.append(call.function.arguments)
                                streamed = True
                                yield Delta(call.function.arguments)
                        if choice.finish_reason:
                            finished = choice.finish_reason
        except openai.APIStatusError as err:
            raise from_status(err.status_code, err.message, err.response.headers, streamed) from err
        except openai.APITimeoutError as err:
            raise ProviderError("DEADLINE_EXCEEDED", "the provider did not answer in time", None, streamed) from err
        except openai.APIError as err:
            raise ProviderError("UNAVAILABLE", f"{type(err).__name__}: {err.message}", None, streamed) from err
        except httpx2.HTTPError as err:  # a transport failure mid-stream that the SDK passes through
            raise ProviderError("UNAVAILABLE", f"{type(err).__name__}: {err}", None, streamed) from err
        if finished is None:
            raise broken_stream("the stream ended before the model finished")
        text = "".join(text_parts)
        arguments = "".join(tool_parts) if tool_index is not None else None
        yield Completion(arguments, text, usage or _estimate(kwargs, text + (arguments or "")), answered_model)

    async def _complete(self, kwargs: dict[str, Any], model: str) -> Completion:
        try:
            response = await self._client.chat.completions.create(**kwargs)
        except openai.APIStatusError as err:
            raise from_status(err.status_code, err.message, err.response.headers, False) from err
        except openai.APITimeoutError as err:
            raise ProviderError("DEADLINE_EXCEEDED", "the provider did not answer in time") from err
        except openai.APIError as err:
            raise ProviderError("UNAVAILABLE", f"{type(err).__name__}: {err.message}") from err
        except httpx2.HTTPError as err:
            raise ProviderError("UNAVAILABLE", f"{type(err).__name__}: {err}") from err
        if not response.choices:
            raise ProviderError("UNAVAILABLE", "the provider answered without a choice")
        message = response.choices[0].message
        text = message.content or ""
        arguments = None
        for call in message.tool_calls or []:
            function = getattr(call, "function", None)
            if function is not None:
                arguments = function.arguments
                break
        usage = TokenUsage(response.usage.prompt_tokens or 0, response.usage.completion_tokens or 0) \
            if response.usage is not None else _estimate(kwargs, text + (arguments or ""))
        return Completion(arguments, text, usage, response.model or model)


def _estimate(kwargs: dict[str, Any], output: str) -> TokenUsage:
    """About four characters a token, for servers that report no usage (budgets must still count something)."""
    prompt = sum(len(str(m.get("content") or "")) for m in kwargs["messages"])
    return TokenUsage(max(prompt // 4, 1), max(len(output) // 4, 1))
