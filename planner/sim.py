"""An LLM simulator speaking the OpenAI chat completions and Anthropic messages APIs, for tests and benches."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from planner.prompts import ANSWER_INPUT, PLANNING_INPUT, read_block

Api = Literal["openai", "anthropic"]
Fault = Literal["status", "cut", "hang"]
_CHARS_PER_TOKEN = 4


@dataclass
class Scripted:
    """One scripted answer: a tool call (`tool_arguments`), text, or a fault.

    fault "status" answers HTTP `status` (with `retry-after` when `retry_after_s` is set); "cut" streams
    `cut_after_chars` characters of the answer and drops the connection; "hang" never answers. `api` / `model`
    restrict which request consumes the entry (None: any).
    """

    tool_arguments: Any = None
    text: str | None = None
    fault: Fault | None = None
    status: int = 500
    retry_after_s: float | None = None
    cut_after_chars: int = 12
    usage: tuple[int, int] | None = None
    api: Api | None = None
    model: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scripted:
        usage = data.get("usage")
        return cls(tool_arguments=data.get("tool_arguments"), text=data.get("text"), fault=data.get("fault"),
                   status=int(data.get("status", 500)), retry_after_s=data.get("retry_after_s"),
                   cut_after_chars=int(data.get("cut_after_chars", 12)),
                   usage=(int(usage[0]), int(usage[1])) if usage else None, api=data.get("api"),
                   model=data.get("model"))


@dataclass(frozen=True)
class LatencyModel:
    """Time to first token (log-normal around `ttft_ms`) and a steady `tokens_per_s` afterwards."""

    ttft_ms: float = 300.0
    tokens_per_s: float = 80.0
    sigma: float = 0.25
    error_rate: float = 0.0

    def ttft_s(self, rng: random.Random) -> float:
        return rng.lognormvariate(math.log(max(self.ttft_ms, 0.001) / 1000.0), self.sigma)


@dataclass
class Recorded:
    """A request the simulator served."""

    api: Api
    model: str
    body: dict[str, Any]
    stream: bool


@dataclass
class _Answer:
    tool_arguments: str | None
    text: str
    usage: tuple[int, int]
    fault: Scripted | None = None


PlanMaker = Callable[[Mapping[str, Any]], dict[str, Any]]


class LLMSimulator:
    """The simulator's state and aiohttp app; `start()` serves it, `script()` queues answers.

    Answers come from the script (answers and faults that tests queue) or, when it is empty, from the latency model,
    whose plans the embedded planner makes from the prompt's planning input, so that load tests get real plans.
    The real SDKs talk to it over HTTP.
    """

    def __init__(self, latency: LatencyModel | None = None, plan_maker: PlanMaker | None = None,
                 seed: int | None = None) -> None:
        self.latency = latency
        self._plan_maker = plan_maker
        self._rng = random.Random(seed)
        self._queue: deque[Scripted] = deque()
        self.requests: list[Recorded] = []
        self._ids = itertools.count(1)
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- control -------------------------------------------------------------------------------------------------
    def script(self, *entries: Scripted | Mapping[str, Any]) -> None:
        """Queues answers, consumed in order by the requests they match."""
        for entry in entries:
            self._queue.append(entry if isinstance(entry, Scripted) else Scripted.from_dict(entry))

    def reset(self) -> None:
        self._queue.clear()
        self.requests.clear()

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/__sim/script", self._post_script)
        app.router.add_post("/__sim/reset", self._post_reset)
        app.router.add_get("/__sim/requests", self._get_requests)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serves on host:port (0 picks one); returns the base URL (OpenAI clients add `/v1`)."""
        self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- admin endpoints -----------------------------------------------------------------------------------------
    async def _post_script(self, request: web.Request) -> web.Response:
        data = await request.json()
        entries = data if isinstance(data, list) else [data]
        self.script(*entries)
        return web.json_response({"queued": len(entries), "pending": self.pending})

    async def _post_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"pending": 0})

    async def _get_requests(self, request: web.Request) -> web.Response:
        return web.json_response([{"api": r.api, "model": r.model, "stream": r.stream, "body": r.body}
                                  for r in self.requests])

    # --- answering -----------------------------------------------------------------------------------------------
    def _next(self, api: Api, model: str) -> Scripted | None:
        for index, entry in enumerate(self._queue):
            if entry.api in (None, api) and entry.model in (None, model):
                del self._queue[index]
                return entry
        return None

    async def _answer(self, api: Api, body: dict[str, Any], prompt: str, tool_name: str | None) -> _Answer:
        entry = self._next(api, str(body.get("model", "")))
        prompt_tokens = max(len(prompt) // _CHARS_PER_TOKEN, 1)
        if entry is None:
            if self.latency is not None and self.latency.error_rate and self._rng.random() < self.latency.error_rate:
                return _Answer(None, "", (prompt_tokens, 0), Scripted(fault="status", status=503))
            return await self._generated(prompt, prompt_tokens, tool_name)
        if entry.fault in ("status", "hang"):
            return _Answer(None, "", (prompt_tokens, 0), entry)
        arguments: str | None = None
        if entry.tool_arguments is not None:
            arguments = entry.tool_arguments if isinstance(entry.tool_arguments, str) \
                else json.dumps(entry.tool_arguments)
        text = entry.text or ""
        output = len((arguments or "") + text)
        usage = entry.usage or (prompt_tokens, max(output // _CHARS_PER_TOKEN, 1))
        return _Answer(arguments, text, usage, entry if entry.fault == "cut" else None)

    async def _generated(self, prompt: str, prompt_tokens: int, tool_name: str | None) -> _Answer:
        """Latency mode: a plan from the embedded planner (tool requests) or an answer from the results."""
        if tool_name is not None:
            planning = read_block(prompt, PLANNING_INPUT)
            if isinstance(planning, Mapping) and self._plan_maker is not None:
                plan = await asyncio.to_thread(self._plan_maker, planning)
            else:
                plan = {"steps": [], "question": "What would you like me to do?"}
            arguments = json.dumps(plan)
            return _Answer(arguments, "", (prompt_tokens, max(len(arguments) // _CHARS_PER_TOKEN, 1)))
        answer = read_block(prompt, ANSWER_INPUT)
        text = _summary_answer(answer)
        return _Answer(None, text, (prompt_tokens, max(len(text) // _CHARS_PER_TOKEN, 1)))

    async def _delay_first(self) -> None:
        if self.latency is not None:
            await asyncio.sleep(self.latency.ttft_s(self._rng))

    def _chunks(self, text: str) -> list[tuple[str, float]]:
        """The text in pieces of a few tokens with the pause before each (the latency model), or no pause."""
        size = 4 * _CHARS_PER_TOKEN
        pieces = [text[i:i + size] for i in range(0, len(text), size)] or [""]
        if self.latency is None:
            return [(piece, 0.0) for piece in pieces]
        pause = (size / _CHARS_PER_TOKEN) / max(self.latency.tokens_per_s, 0.001)
        return [(piece, pause if i else 0.0) for i, piece in enumerate(pieces)]

    async def _fault(self, answer: _Answer, api: Api) -> web.Response | None:
        fault = answer.fault
        if fault is None or fault.fault == "cut":
            return None
        if fault.fault == "hang":
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=3600)
            except TimeoutError:
                pass
            raise web.HTTPServiceUnavailable()
        headers = {"retry-after": f"{fault.retry_after_s:g}"} if fault.retry_after_s is not None else {}
        if api == "openai":
            body: dict[str, Any] = {"error": {"message": f"simulated {fault.status}", "type": "server_error"
                                              if fault.status >= 500 else "rate_limit_error", "code": None}}
        else:
            kind = "overloaded_error" if fault.status == 529 else "rate_limit_error" if fault.status == 429 \
                else "api_error"
            body = {"type": "error", "error": {"type": kind, "message": f"simulated {fault.status}"}}
        return web.json_response(body, status=fault.status, headers=headers)

    # --- OpenAI --------------------------------------------------------------------------------------------------
    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = str(body.get("model", ""))
        stream = bool(body.get("stream"))
        self.requests.append(Recorded("openai", model, body, stream))
        prompt = "\n".join(_text_of(m.get("content")) for m in body.get("messages", []))
        tools = body.get("tools") or []
        tool_name = tools[0]["function"]["name"] if tools else None
        answer = await self._answer("openai", body, prompt, tool_name)
        refused = await self._fault(answer, "openai")
        if refused is not None:
            return refused
        completion_id = f"chatcmpl-sim{next(self._ids)}"
        call_id = f"call_sim{next(self._ids)}"
        created = int(time.time())
        finish = "tool_calls" if answer.tool_arguments is not None else "stop"
        usage = {"prompt_tokens": answer.usage[0], "completion_tokens": answer.usage[1],
                 "total_tokens": answer.usage[0] + answer.usage[1]}
        await self._delay_first()
        if not stream:
            message: dict[str, Any] = {"role": "assistant", "content": answer.text or None}
            if answer.tool_arguments is not None:
                message["tool_calls"] = [{"id": call_id, "type": "function",
                                          "function": {"name": tool_name, "arguments": answer.tool_arguments}}]
            return await self._json(request, {
                "id": completion_id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                "usage": usage}, answer.fault)

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}

        events: list[tuple[dict[str, Any], float]] = []
        if answer.tool_arguments is not None:
            events.append((chunk({"role": "assistant", "content": None, "tool_calls": [{
                "index": 0, "id": call_id, "type": "function",
                "function": {"name": tool_name, "arguments": ""}}]}), 0.0))
            for piece, pause in self._chunks(answer.tool_arguments):
                events.append((chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}), pause))
        else:
            events.append((chunk({"role": "assistant", "content": ""}), 0.0))
            for piece, pause in self._chunks(answer.text):
                events.append((chunk({"content": piece}), pause))
        events.append((chunk({}, finish), 0.0))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if include_usage:
            events.append(({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                            "model": model, "choices": [], "usage": usage}, 0.0))
        frames = [(f"data: {json.dumps(e)}\n\n", pause, _content_chars(e)) for e, pause in events]
        frames.append(("data: [DONE]\n\n", 0.0, 0))
        return await self._sse(request, frames, answer.fault)

    # --- Anthropic -----------------------------------------------------------------------------------------------
    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = str(body.get("model", ""))
        stream = bool(body.get("stream"))
        self.requests.append(Recorded("anthropic", model, body, stream))
        prompt = "\n".join([_text_of(body.get("system"))] + [_text_of(m.get("content"))
                                                             for m in body.get("messages", [])])
        tools = body.get("tools") or []
        tool_name = tools[0]["name"] if tools else None
        answer = await self._answer("anthropic", body, prompt, tool_name)
        refused = await self._fault(answer, "anthropic")
        if refused is not None:
            return refused
        message_id = f"msg_sim{next(self._ids)}"
        tool_id = f"toolu_sim{next(self._ids)}"
        stop_reason = "tool_use" if answer.tool_arguments is not None else "end_turn"
        await self._delay_first()
        if not stream:
            content: list[dict[str, Any]] = []
            if answer.text:
                content.append({"type": "text", "text": answer.text})
            if answer.tool_arguments is not None:
                content.append({"type": "tool_use", "id": tool_id, "name": tool_name,
                                "input": _object_or_empty(answer.tool_arguments)})
            return await self._json(request, {
                "id": message_id, "type": "message", "role": "assistant", "model": model, "content": content,
                "stop_reason": stop_reason, "stop_sequence": None,
                "usage": {"input_tokens": answer.usage[0], "output_tokens": answer.usage[1]}}, answer.fault)
        events: list[tuple[str, dict[str, Any], float]] = [("message_start", {
            "type": "message_start", "message": {
                "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": answer.usage[0], "output_tokens": 1}}}, 0.0)]
        index = 0
        if answer.text:
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {"type": "text", "text": ""}}, 0.0))
            for piece, pause in self._chunks(answer.text):
                events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                       "delta": {"type": "text_delta", "text": piece}}, pause))
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}, 0.0))
            index += 1
        if answer.tool_arguments is not None:
            events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": tool_id, "name": tool_name, "input": {}}}, 0.0))
            for piece, pause in self._chunks(answer.tool_arguments):
                events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {
                    "type": "input_json_delta", "partial_json": piece}}, pause))
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}, 0.0))
        events.append(("message_delta", {"type": "message_delta", "delta": {
            "stop_reason": stop_reason, "stop_sequence": None}, "usage": {"output_tokens": answer.usage[1]}}, 0.0))
        events.append(("message_stop", {"type": "message_stop"}, 0.0))
        frames = [(f"event: {name}\ndata: {json.dumps(data)}\n\n", pause, _content_chars(data))
                  for name, data, pause in events]
        return await self._sse(request, frames, answer.fault)

    async def _json(self, request: web.Request, body: dict[str, Any], cut: Scripted | None) -> web.StreamResponse:
        """A whole JSON answer; with a cut, half of it and then the connection drops."""
        if cut is None:
            return web.json_response(body)
        data = json.dumps(body).encode()
        response = web.StreamResponse(status=200, headers={"content-type": "application/json"})
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        if request.transport is not None:
            request.transport.abort()
        return response

    async def _sse(self, request: web.Request, frames: Sequence[tuple[str, float, int]],
                   cut: Scripted | None) -> web.StreamResponse:
        """Writes SSE frames; with a cut, drops the connection once `cut_after_chars` of content went out."""
        response = web.StreamResponse(status=200, headers={"content-type": "text/event-stream",
                                                           "cache-control": "no-cache"})
        await response.prepare(request)
        sent = 0
        for frame, pause, content in frames:
            if pause:
                await asyncio.sleep(pause)
            if cut is not None and sent >= cut.cut_after_chars:
                # A stream that breaks midway: the connection drops without the chunked terminator.
                transport = request.transport
                if transport is not None:
                    transport.abort()
                return response
            await response.write(frame.encode())
            sent += content
        await response.write_eof()
        return response


def _content_chars(event: Mapping[str, Any]) -> int:
    """How much answer content (text or tool-call JSON) one stream event carries."""
    delta = event.get("delta")
    if isinstance(delta, Mapping):
        if "text" in delta or "partial_json" in delta:
            return len(str(delta.get("text") or delta.get("partial_json") or ""))
    total = 0
    for choice in event.get("choices") or []:
        piece = choice.get("delta") or {}
        total += len(piece.get("content") or "")
        for call in piece.get("tool_calls") or []:
            total += len((call.get("function") or {}).get("arguments") or "")
    return total


def _text_of(content: Any) -> str:
    """The text of a message's content (a string, or a list of content blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, Mapping):
                out.append(str(part.get("text") or part.get("content") or ""))
        return "\n".join(out)
    return ""


def _object_or_empty(arguments: str) -> Any:
    try:
        value = json.loads(arguments)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _summary_answer(answer: Any) -> str:
    """Latency mode's answer: the results' own summaries, which are grounded by construction."""
    if not isinstance(answer, Mapping):
        return "Done."
    lines = [str(r.get("summary")) for r in answer.get("results", []) if isinstance(r, Mapping) and r.get("summary")]
    return " ".join(lines) or "Done."


def embedded_plan_maker() -> PlanMaker:
    """A plan maker that runs the embedded planner on the planning input (the process's shared embedded tier)."""
    import datetime as dt

    from planner.embedded.model import Person
    from planner.embedded_tier import shared_tier
    from planner.validation import plan_arguments

    tier = shared_tier()

    def make(planning: Mapping[str, Any]) -> dict[str, Any]:
        people = [Person(email=str(p.get("email", "")), name=str(p.get("name", "")),
                         first_name=str(p.get("first_name", "")), last_name=str(p.get("last_name", "")))
                  for p in planning.get("people", []) if isinstance(p, Mapping)]
        try:
            today = dt.date.fromisoformat(str(planning.get("today")))
        except ValueError:
            today = dt.datetime.now(dt.UTC).date()
        result = tier.plan(str(planning.get("request", "")), requester=str(planning.get("requester", "")),
                           allowed=set(planning.get("tools", [])), denied=dict(planning.get("denied_tools", {})),
                           people=people, today=today, context=None)
        return plan_arguments(result)

    return make


async def serve_forever(port: int, script: Sequence[Mapping[str, Any]], latency: LatencyModel,
                        host: str = "127.0.0.1", on_ready: Callable[[str], None] | None = None) -> None:
    """Runs a simulator until cancelled (the `agentmesh sim-llm` command)."""
    from planner.embedded_tier import shared_tier

    await asyncio.to_thread(shared_tier().warm)  # the model loads before the first request, not during it
    sim = LLMSimulator(latency, embedded_plan_maker())
    sim.script(*script)
    url = await sim.start(host, port)
    if on_ready is not None:
        on_ready(url)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()


def load_script(text: str) -> list[dict[str, Any]]:
    """Script entries from a JSON list or JSON lines."""
    stripped = text.strip()
    if not stripped:
        return []
    if stripped.startswith("["):
        return list(json.loads(stripped))
    return [json.loads(line) for line in stripped.splitlines() if line.strip()]
