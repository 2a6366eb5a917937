"""The Slack app (slack-bolt, asyncio): Events API and Socket Mode, one thread = one session."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from agentmesh.agent.v1 import agent_service_pb2 as agent_pb2
from gateway.auth import Authenticator, AuthError, Caller
from gateway.channels.progress import Approval, Progress, relay
from gateway.channels.slack_blocks import (
    APPROVE,
    DECLINE,
    answer_blocks,
    answered_blocks,
    approval_blocks,
    progress_blocks,
)
from gateway.channels.slack_store import SlackInstallations
from gateway.conversation import Ask, Confirmation, Conversations
from gateway.lookups import Lookups
from gateway.runlog import RunLog
from mesh.errors import MeshError, Reason

log = logging.getLogger("agentmesh.gateway.slack")
EVENTS_PATH = "/slack/events"
SESSION_TTL_S = 24 * 3600
DEDUPE_TTL_S = 3600
_MENTION = re.compile(r"<@[A-Z0-9]+>")


@dataclass(frozen=True)
class Thread:
    """Where a conversation lives in Slack: a workspace, a channel and the thread's root message."""

    team_id: str
    channel: str
    thread_ts: str

    @property
    def session_id(self) -> str:
        return f"slack:{self.team_id}:{self.channel}:{self.thread_ts}"


class SlackSurface:
    """A run shown in a Slack thread: one progress message kept up to date, the answer as a new message."""

    def __init__(self, client: AsyncWebClient, thread: Thread, progress_ts: str = "") -> None:
        self.client = client
        self.thread = thread
        self.progress_ts = progress_ts

    async def start(self, progress: Progress) -> None:
        text, blocks = progress_blocks(progress)
        answer = await self.client.chat_postMessage(channel=self.thread.channel, thread_ts=self.thread.thread_ts,
                                                    text=text, blocks=blocks)
        self.progress_ts = str(answer["ts"])

    async def update(self, progress: Progress) -> None:
        text, blocks = progress_blocks(progress)
        try:
            await self.client.chat_update(channel=self.thread.channel, ts=self.progress_ts, text=text, blocks=blocks)
        except SlackApiError as err:  # a lost progress update is not worth failing the run
            log.warning("chat.update failed", extra={"fields": {"error": str(err.response.get("error"))}})

    async def ask(self, progress: Progress, approval: Approval) -> None:
        await self.update(progress)
        text, blocks = approval_blocks(approval, {"run": approval.run_id, "step": approval.step_id,
                                                  "progress": self.progress_ts, "thread": self.thread.thread_ts})
        await self.client.chat_postMessage(channel=self.thread.channel, thread_ts=self.thread.thread_ts, text=text,
                                           blocks=blocks)

    async def finish(self, progress: Progress) -> None:
        await self.update(progress)
        text, blocks = answer_blocks(progress)
        await self.client.chat_postMessage(channel=self.thread.channel, thread_ts=self.thread.thread_ts, text=text,
                                           blocks=blocks)


class SlackChannel:
    """The bolt app and what it needs of the gateway: the installation store, identities, the request path."""

    def __init__(self, *, signing_secret: str, api_url: str, installations: SlackInstallations,
                 auth: Authenticator, lookups: Lookups, conversations: Conversations, runlog: RunLog,
                 redis_client: redis.Redis, update_interval_s: float = 1.0) -> None:
        self.installations = installations
        self.auth = auth
        self.lookups = lookups
        self.conversations = conversations
        self.runlog = runlog
        self.redis = redis_client
        self.update_interval_s = update_interval_s
        self.api_url = api_url
        self.app = AsyncApp(
            signing_secret=signing_secret, client=AsyncWebClient(base_url=api_url), installation_store=installations,
            # bolt accepts an AsyncAuthorize instance here (its annotation names only plain callables).
            authorize=AsyncInstallationStoreAuthorize(  # type: ignore[arg-type]
                installation_store=installations, logger=log, bot_only=True, cache_enabled=True),
            logger=log)
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        self.app.action(APPROVE)(self._on_confirm)
        self.app.action(DECLINE)(self._on_confirm)
        self.app.action(re.compile(r"^agentmesh_link_"))(self._on_link)
        self._socket: AsyncSocketModeHandler | None = None

    # --- transports -------------------------------------------------------------------------------------------------
    def web_app(self) -> web.Application:
        """The Events API endpoint (bolt verifies signature and timestamp) and a health check."""
        async def events(request: web.Request) -> web.Response:
            return await to_aiohttp_response(await self.app.async_dispatch(await to_bolt_request(request)))

        async def health(request: web.Request) -> web.Response:
            return web.json_response({"status": "SERVING"})

        app = web.Application()
        app.router.add_post(EVENTS_PATH, events)
        app.router.add_get("/healthz", health)
        return app

    async def start_socket_mode(self, app_token: str) -> None:
        """Connects over Socket Mode (apps.connections.open, then the WebSocket it names)."""
        self._socket = AsyncSocketModeHandler(self.app, app_token, web_client=AsyncWebClient(base_url=self.api_url))
        await self._socket.connect_async()

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close_async()

    # --- listeners ---------------------------------------------------------------------------------------------------
    async def _on_mention(self, body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient,
                          context: dict[str, Any]) -> None:
        await self._incoming(body, event, client, context)

    async def _on_message(self, body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient,
                          context: dict[str, Any]) -> None:
        if event.get("subtype") or event.get("bot_id"):
            return
        if event.get("channel_type") == "im":
            await self._incoming(body, event, client, context)
            return
        # A reply in a thread the agent works in continues that session (a mention there arrives as app_mention).
        thread_ts = event.get("thread_ts")
        bot = context.get("bot_user_id") or ""
        if not thread_ts or (bot and f"<@{bot}>" in str(event.get("text", ""))):
            return
        tenant = await self.installations.tenant_of(str(body.get("team_id") or context.get("team_id") or ""))
        if tenant and await self.redis.exists(_thread_key(tenant, str(body.get("team_id")), event["channel"],
                                                          thread_ts)):
            await self._incoming(body, event, client, context)

    async def _incoming(self, body: dict[str, Any], event: dict[str, Any], client: AsyncWebClient,
                        context: dict[str, Any]) -> None:
        team_id = str(body.get("team_id") or context.get("team_id") or "")
        tenant = await self.installations.tenant_of(team_id)
        if tenant is None:
            log.warning("event from a workspace no tenant installed", extra={"fields": {"team_id": team_id}})
            return
        event_id = str(body.get("event_id") or "")
        if event_id and not await self.redis.set(f"gw:{{{tenant}}}:slack:event:{event_id}", 1, nx=True,
                                                 ex=DEDUPE_TTL_S):
            return  # a retried delivery of an event already taken
        thread = Thread(team_id, str(event["channel"]), str(event.get("thread_ts") or event["ts"]))
        text = _MENTION.sub("", str(event.get("text", ""))).strip()
        caller = await self._caller(tenant, str(event.get("user", "")), client, thread)
        if caller is None or not text:
            return
        await self.redis.set(_thread_key(tenant, team_id, thread.channel, thread.thread_ts), 1, ex=SESSION_TTL_S)
        surface = SlackSurface(client, thread)
        progress = Progress(request=text)
        try:
            stream = await self.conversations.converse(caller, Ask(text=text, session_id=thread.session_id))
        except MeshError as err:
            await client.chat_postMessage(channel=thread.channel, thread_ts=thread.thread_ts,
                                          text=_refusal_text(err))
            return
        await surface.start(progress)
        await relay(stream, surface, progress, self.update_interval_s)

    async def _caller(self, tenant: str, slack_user: str, client: AsyncWebClient, thread: Thread) -> Caller | None:
        email = await self.lookups.slack_user(tenant, slack_user) if slack_user else None
        if email is None:
            await client.chat_postMessage(channel=thread.channel, thread_ts=thread.thread_ts,
                                          text=f"Sorry <@{slack_user}>, I can't find your Slack account in your "
                                               "company directory, so I can't act for you.")
            return None
        try:
            return await self.auth.member(tenant, email, "slack")
        except AuthError as err:
            self.conversations.background(self.conversations.audit_refusal(tenant, email, err, "slack"))
            await client.chat_postMessage(channel=thread.channel, thread_ts=thread.thread_ts, text=err.message)
            return None

    async def _on_confirm(self, ack: Any, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient,
                          context: dict[str, Any]) -> None:
        await ack()
        value = json.loads(action.get("value") or "{}")
        team_id = str((body.get("team") or {}).get("id") or context.get("team_id") or "")
        tenant = await self.installations.tenant_of(team_id)
        channel = str((body.get("channel") or {}).get("id") or body.get("container", {}).get("channel_id", ""))
        slack_user = str((body.get("user") or {}).get("id", ""))
        if tenant is None or not channel or not value.get("run"):
            return
        thread = Thread(team_id, channel, str(value.get("thread") or ""))
        caller = await self._caller(tenant, slack_user, client, thread)
        if caller is None:
            return
        approved = action.get("action_id") == APPROVE
        confirmation = Confirmation(str(value["run"]), str(value.get("step", "")), approved)
        progress = await self._progress_so_far(tenant, confirmation.run_id)
        try:
            stream = await self.conversations.converse(caller, Ask(session_id=thread.session_id,
                                                                   confirmation=confirmation))
        except MeshError as err:
            await client.chat_postEphemeral(channel=channel, user=slack_user, thread_ts=thread.thread_ts,
                                            text=_refusal_text(err))
            return
        message = body.get("message") or {}
        prompt = next((b["text"]["text"] for b in message.get("blocks", []) if b.get("type") == "section"), "")
        text, blocks = answered_blocks(prompt, approved, slack_user)
        if message.get("ts"):
            await client.chat_update(channel=channel, ts=message["ts"], text=text, blocks=blocks)
        await relay(stream, SlackSurface(client, thread, str(value.get("progress") or "")), progress,
                    self.update_interval_s)

    async def _on_link(self, ack: Any) -> None:
        await ack()  # a link button opens its URL in the browser; nothing to do here

    async def _progress_so_far(self, tenant: str, run_id: str) -> Progress:
        """The run's progress before the pause, rebuilt from its event log."""
        meta = await self.runlog.meta(tenant, run_id)
        progress = Progress(request=meta.request if meta else "")
        for data in await self.runlog.events(tenant, run_id):
            progress.apply(agent_pb2.ConverseResponse.FromString(data))
        progress.approval = None
        return progress


def _thread_key(tenant: str, team_id: str, channel: str, thread_ts: str) -> str:
    return f"gw:{{{tenant}}}:slack:thread:{team_id}:{channel}:{thread_ts}"


def _refusal_text(err: MeshError) -> str:
    if err.reason == Reason.RATE_LIMITED:
        return f"I'm getting too many requests right now; please try again in {err.retry_after_s or 1:.0f} s."
    return f"Sorry, I can't do that: {err.message}"
