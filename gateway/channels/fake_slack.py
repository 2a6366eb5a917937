"""A local fake Slack (Web API, apps.connections.open, Socket Mode) that records every call, for tests."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from slack_sdk.signature import SignatureVerifier


@dataclass
class Call:
    """One Web API call the app made."""

    method: str
    token: str
    params: dict[str, Any]


@dataclass
class Bot:
    """A workspace's bot as auth.test describes it."""

    team_id: str
    bot_user_id: str
    bot_id: str


@dataclass
class FakeSlack:
    """Records every Web API call; answers like Slack does (ok, ts); serves Socket Mode on /link."""

    bots: dict[str, Bot] = field(default_factory=dict)  # bot token -> bot
    app_tokens: set[str] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)
    acks: list[dict[str, Any]] = field(default_factory=list)
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _sockets: list[web.WebSocketResponse] = field(default_factory=list)
    _connected: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/link", self._link)
        return app

    async def start(self, host: str = "127.0.0.1") -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, 0).start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{host}:{port}"
        return self.url

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- Web API -------------------------------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if request.content_type == "application/json":
            params: dict[str, Any] = await request.json()
        else:
            params = dict(await request.post())
            for key in ("blocks", "attachments"):
                if isinstance(params.get(key), str):
                    params[key] = json.loads(params[key])
        token = token or str(params.get("token", ""))
        async with self._changed:
            self.calls.append(Call(method, token, params))
            self._changed.notify_all()
        if method == "apps.connections.open":
            if token not in self.app_tokens:
                return web.json_response({"ok": False, "error": "invalid_auth"})
            ws_url = self.url.replace("http://", "ws://") + f"/link?ticket={uuid.uuid4().hex}"
            return web.json_response({"ok": True, "url": ws_url})
        bot = self.bots.get(token)
        if bot is None:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if method == "auth.test":
            return web.json_response({"ok": True, "url": "https://fake.slack.example/", "team": bot.team_id,
                                      "user": "agentmesh", "team_id": bot.team_id, "user_id": bot.bot_user_id,
                                      "bot_id": bot.bot_id, "is_enterprise_install": False})
        if method == "chat.postMessage":
            ts = f"{int(time.time())}.{next(self._ts):06d}"
            return web.json_response({"ok": True, "channel": params.get("channel"), "ts": ts,
                                      "message": {"text": params.get("text", ""), "ts": ts, "bot_id": bot.bot_id}})
        if method == "chat.update":
            return web.json_response({"ok": True, "channel": params.get("channel"), "ts": params.get("ts"),
                                      "text": params.get("text", "")})
        if method == "chat.postEphemeral":
            return web.json_response({"ok": True, "message_ts": f"{int(time.time())}.{next(self._ts):06d}"})
        return web.json_response({"ok": False, "error": "unknown_method"})

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def wait_for(self, predicate: Any, timeout_s: float = 10.0) -> list[Call]:
        """Waits until predicate(calls) is true; returns the calls."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: bool(predicate(self.calls)))
        return self.calls

    # --- Socket Mode -------------------------------------------------------------------------------------------------
    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1, "debug_info": {"host": "fake"},
                            "connection_info": {"app_id": "A0AGENTMESH"}})
        self._connected.set()
        try:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    async with self._changed:
                        self.acks.append(json.loads(message.data))
                        self._changed.notify_all()
        finally:
            self._sockets.remove(ws)
        return ws

    async def deliver(self, payload: dict[str, Any], kind: str = "events_api") -> str:
        """Sends an envelope over the Socket Mode connection; returns its envelope id."""
        await asyncio.wait_for(self._connected.wait(), 10)
        envelope_id = uuid.uuid4().hex
        await self._sockets[-1].send_json({"envelope_id": envelope_id, "type": kind, "payload": payload,
                                           "accepts_response_payload": kind != "events_api", "retry_attempt": 0,
                                           "retry_reason": ""})
        return envelope_id

    async def wait_ack(self, envelope_id: str, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: any(a.get("envelope_id") == envelope_id for a in self.acks))


def signed_headers(signing_secret: str, body: str, timestamp: int | None = None,
                   retry_num: int | None = None) -> dict[str, str]:
    """The headers Slack sends with an Events API delivery (signature v0 over timestamp and body)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=ts, body=body) or ""
    headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
        headers["X-Slack-Retry-Reason"] = "http_timeout"
    return headers


def event_callback(team_id: str, event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    """An Events API `event_callback` body around one event."""
    return {"token": "unused", "team_id": team_id, "api_app_id": "A0AGENTMESH", "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}", "event_time": int(time.time()),
            "authorizations": [{"team_id": team_id, "is_bot": True}], "event": event}
