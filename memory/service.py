"""MemoryService handlers: protos in and out, tenant and user from the verified principal, errors as MeshError."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
import numpy as np
import redis.asyncio as redis
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agentmesh.common.v1 import common_pb2
from agentmesh.memory.v1 import memory_service_pb2 as pb
from agentmesh.memory.v1 import memory_service_pb2_grpc
from memory import preferences
from memory.condenser import ModelCondenser
from memory.config import MemoryConfig
from memory.context import BuiltContext, ContextBuilder
from memory.embedder import Embedder, EmbeddingUnavailable
from memory.erasure import erase_user
from memory.facts import KINDS, Fact, FactStore, dedup_key
from memory.peers import RegistryPeer
from memory.recording import OUTCOMES, run_summary
from memory.sessions import ROLES, SessionStore, Turn, split_sentences
from memory.working import VersionConflict, WorkingStateStore
from mesh import principal as principal_mod
from mesh import tokens
from mesh.client import Budget
from mesh.errors import MeshError, Reason, invalid_argument
from mesh.principal import Principal
from mesh.server import ANY_KIND, USER_ONLY, ServiceSpec

DOMAIN = "agentmesh.memory"
SERVICE_NAME = "agentmesh.memory.v1.MemoryService"
MAX_ID = 256
MAX_TURN_CHARS = 32_000
MAX_FACT_CHARS = 4_000
MAX_STATE_BYTES = 512 * 1024
MAX_BUDGET = 1_000_000
MAX_TOP_K = 100
MAX_TTL_S = 10 * 365 * 86400
MAX_SENTENCES = 64  # sentences of one turn embedded for the summarizer
_REGISTRY_RESERVE_S = 0.05

log = logging.getLogger("agentmesh.memory")


def _text_violations(field: str, value: str, *, required: bool, limit: int) -> list[tuple[str, str]]:
    if required and not value.strip():
        return [(field, "is required")]
    if len(value) > limit:
        return [(field, f"must be at most {limit} characters")]
    if "\x00" in value:
        return [(field, "must not contain NUL characters")]
    return []


def _id_violations(field: str, value: str, *, required: bool) -> list[tuple[str, str]]:
    if required and not value:
        return [(field, "is required")]
    if len(value) > MAX_ID:
        return [(field, f"must be at most {MAX_ID} characters")]
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return [(field, "must not contain control characters")]
    if value != value.strip():
        return [(field, "must not start or end with spaces")]
    return []


def validate_append_turn(req: pb.AppendTurnRequest) -> list[tuple[str, str]]:
    out = _id_violations("session_id", req.session_id, required=True)
    if not req.HasField("turn"):
        return [*out, ("turn", "is required")]
    if req.turn.role not in ROLES:
        out.append(("turn.role", f"must be one of {', '.join(ROLES)}"))
    out += _text_violations("turn.text", req.turn.text, required=True, limit=MAX_TURN_CHARS)
    out += _id_violations("turn.run_id", req.turn.run_id, required=False)
    return out


def validate_list_turns(req: pb.ListTurnsRequest) -> list[tuple[str, str]]:
    out = _id_violations("session_id", req.session_id, required=True)
    if req.limit < 0:
        out.append(("limit", "must not be negative"))
    return out


def validate_get_working_state(req: pb.GetWorkingStateRequest) -> list[tuple[str, str]]:
    return _id_violations("run_id", req.run_id, required=True)


def validate_update_working_state(req: pb.UpdateWorkingStateRequest) -> list[tuple[str, str]]:
    out = _id_violations("run_id", req.run_id, required=True)
    if not req.values.fields:
        out.append(("values", "must set at least one key"))
    for key in req.values.fields:
        if not key or len(key) > MAX_ID:
            out.append((f"values.{key}", f"keys must be 1 to {MAX_ID} characters"))
    if req.values.ByteSize() > MAX_STATE_BYTES:
        out.append(("values", f"must be at most {MAX_STATE_BYTES} bytes"))
    if req.expected_version < 0:
        out.append(("expected_version", "must not be negative"))
    return out


def _ttl_violations(req: pb.RememberRequest) -> list[tuple[str, str]]:
    if not req.HasField("ttl"):
        return []
    seconds = req.ttl.ToTimedelta().total_seconds()
    if req.ttl.nanos < 0 or req.ttl.seconds < 0 or seconds <= 0:
        return [("ttl", "must be positive")]
    if seconds > MAX_TTL_S:
        return [("ttl", f"must be at most {MAX_TTL_S} seconds (10 years)")]
    return []


def validate_remember(req: pb.RememberRequest) -> list[tuple[str, str]]:
    out = _text_violations("text", req.text, required=True, limit=MAX_FACT_CHARS)
    if req.kind not in KINDS:
        out.append(("kind", f"must be one of {', '.join(KINDS)}"))
    return out + _ttl_violations(req)


def validate_recall(req: pb.RecallRequest) -> list[tuple[str, str]]:
    out = _text_violations("query", req.query, required=True, limit=MAX_FACT_CHARS)
    if not 0 <= req.top_k <= MAX_TOP_K:
        out.append(("top_k", f"must be between 0 (default) and {MAX_TOP_K}"))
    return out


def validate_forget_user(req: pb.ForgetUserRequest) -> list[tuple[str, str]]:
    out = []
    if req.user and ("@" not in req.user or len(req.user) > 320 or any(c.isspace() for c in req.user)):
        out.append(("user", "must be an email address"))
    return out + _id_violations("tenant_id", req.tenant_id, required=False)


def validate_build_context(req: pb.BuildContextRequest) -> list[tuple[str, str]]:
    out = _id_violations("session_id", req.session_id, required=False)
    out += _text_violations("request", req.request, required=False, limit=MAX_TURN_CHARS)
    if not 0 < req.budget_tokens <= MAX_BUDGET:
        out.append(("budget_tokens", f"must be between 1 and {MAX_BUDGET}"))
    return out + _id_violations("run_id", req.run_id, required=False)


def validate_record_run(req: pb.RecordRunRequest) -> list[tuple[str, str]]:
    out = _id_violations("run_id", req.run_id, required=False)
    out += _text_violations("request", req.request, required=True, limit=MAX_FACT_CHARS)
    if len(req.tools) > 50:
        out.append(("tools", "must list at most 50 tools"))
    for i, tool in enumerate(req.tools):
        out += _text_violations(f"tools[{i}]", tool, required=True, limit=128)
    if len(req.results) > 50:
        out.append(("results", "must list at most 50 results"))
    for i, result in enumerate(req.results):
        out += _text_violations(f"results[{i}]", result, required=False, limit=1000)
    if req.outcome and req.outcome not in OUTCOMES:
        out.append(("outcome", f"must be one of {', '.join(OUTCOMES)}"))
    return out


VALIDATORS: dict[str, Callable[[Any], list[tuple[str, str]]]] = {
    "AppendTurn": validate_append_turn, "ListTurns": validate_list_turns,
    "GetWorkingState": validate_get_working_state, "UpdateWorkingState": validate_update_working_state,
    "Remember": validate_remember, "Recall": validate_recall, "ForgetUser": validate_forget_user,
    "BuildContext": validate_build_context, "RecordRun": validate_record_run,
}
KINDS_BY_METHOD = {
    "AppendTurn": USER_ONLY, "ListTurns": USER_ONLY, "GetWorkingState": ANY_KIND, "UpdateWorkingState": ANY_KIND,
    "Remember": ANY_KIND, "Recall": USER_ONLY, "ForgetUser": ANY_KIND, "BuildContext": USER_ONLY,
    "RecordRun": USER_ONLY,
}


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def turn_to_proto(turn: Turn) -> common_pb2.Turn:
    return common_pb2.Turn(role=turn.role, text=turn.text, create_time=_timestamp(turn.create_time),
                           run_id=turn.run_id)


def fact_to_proto(fact: Fact) -> common_pb2.Fact:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(fact.create_time)
    return common_pb2.Fact(id=fact.id, text=fact.text, kind=fact.kind, score=fact.score, create_time=ts)


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def _denied(message: str, **metadata: str) -> MeshError:
    return MeshError(Reason.POLICY_DENIED, message, domain=DOMAIN, metadata=metadata)


@asynccontextmanager
async def _stores() -> AsyncIterator[None]:
    """Failures of Redis, PostgreSQL or the embedding provider, answered as UNAVAILABLE (retryable)."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as err:
        raise MeshError(Reason.UPSTREAM_UNAVAILABLE, "the session store is unavailable", domain=DOMAIN,
                        retry_after_s=1.0) from err
    except (asyncpg.PostgresConnectionError, asyncpg.ConnectionDoesNotExistError, asyncpg.CannotConnectNowError,
            asyncpg.TooManyConnectionsError, OSError) as err:
        raise MeshError(Reason.UPSTREAM_UNAVAILABLE, "the long-term memory store is unavailable", domain=DOMAIN,
                        retry_after_s=1.0) from err
    except EmbeddingUnavailable as err:
        raise MeshError(Reason.UPSTREAM_UNAVAILABLE, str(err), domain=DOMAIN, retry_after_s=1.0) from err


@dataclass
class Stores:
    """What the handlers work with."""

    redis: redis.Redis
    sessions: SessionStore
    working: WorkingStateStore
    facts: FactStore
    embedder: Embedder
    registry: RegistryPeer | None
    condenser: ModelCondenser | None = None


class MemoryServicer(memory_service_pb2_grpc.MemoryServiceServicer):
    """Sessions and working state (Redis), long-term facts (pgvector), context assembly, erasure."""

    def __init__(self, config: MemoryConfig, stores: Stores) -> None:
        self.config = config
        self.stores = stores
        self.builder = ContextBuilder(tokens.count)

    # -- who the call is about -------------------------------------------------------------------------------

    @staticmethod
    def _user() -> tuple[Principal, str, str]:
        p = principal_mod.current()
        return p, p.tenant, p.user

    @staticmethod
    def _acting_for() -> tuple[Principal, str, str]:
        """A user principal acts for itself; an operator (a dead-letter replay) for the user it names."""
        p = principal_mod.current()
        if p.kind == principal_mod.USER:
            return p, p.tenant, p.user
        if not p.on_behalf_of or p.tenant in ("", "*"):
            raise _denied("an operator principal must be minted for one tenant and name the user it acts for",
                          kind=p.kind)
        return p, p.tenant, p.on_behalf_of.lower()

    async def _ttl(self, principal: Principal, override: timedelta | None,
                   context: grpc.aio.ServicerContext) -> timedelta:
        if override is not None:
            return override
        if self.stores.registry is not None:
            budget = Budget.of(context)
            seconds = await self.stores.registry.memory_ttl_s(principal, budget.remaining(_REGISTRY_RESERVE_S))
            if seconds is not None:
                return timedelta(seconds=seconds)
        return timedelta(seconds=self.config.memory_ttl_s)

    async def _remember(self, tenant: str, user: str | None, text: str, kind: str, key: str,
                        ttl: timedelta, *, urgent: bool = True, embed_text: str = "") -> Fact:
        """Stores `text`, placed in the embedding space by `embed_text` (default: the text itself)."""
        vector = (await self.stores.embedder.embed([embed_text or text], urgent=urgent,
                                                   scope=_scope(tenant, user)))[0]
        return await self.stores.facts.remember(tenant, user, text, kind, vector, ttl, key)

    async def _remember_preferences(self, principal: Principal, text: str,
                                    context: grpc.aio.ServicerContext, *, urgent: bool = True) -> list[Fact]:
        found = preferences.extract(text)
        if not found:
            return []
        ttl = await self._ttl(principal, None, context)
        vectors = await self.stores.embedder.embed([p.text for p in found], urgent=urgent,
                                                   scope=_scope(principal.tenant, principal.user))
        items = [(p.text, "preference", v, dedup_key("preference", p.text, p.subject))
                 for p, v in zip(found, vectors, strict=True)]
        return await self.stores.facts.remember_many(principal.tenant, principal.user, items, ttl)

    # -- sessions ---------------------------------------------------------------------------------------------

    async def AppendTurn(self, request: pb.AppendTurnRequest, context: grpc.aio.ServicerContext
                         ) -> pb.AppendTurnResponse:
        p, tenant, user = self._user()
        async with _stores():
            # The sentences are embedded when a context first has to condense this turn (most sessions never
            # outgrow the budget), not here: an embedding is the costliest thing memory does per request.
            sentences = split_sentences(request.turn.text)[:MAX_SENTENCES]
            created = request.turn.create_time.ToNanoseconds() / 1e9 if request.turn.HasField("create_time") else None
            turn = Turn(request.turn.role, request.turn.text, run_id=request.turn.run_id, sentences=sentences)
            if created:
                turn.create_time = created
            count = await self.stores.sessions.append(tenant, user, request.session_id, turn)
            remembered = await self._remember_preferences(p, request.turn.text, context) \
                if request.turn.role == "user" else []
        return pb.AppendTurnResponse(turn_count=count, remembered=[fact_to_proto(f) for f in remembered])

    async def ListTurns(self, request: pb.ListTurnsRequest, context: grpc.aio.ServicerContext
                        ) -> pb.ListTurnsResponse:
        _, tenant, user = self._user()
        async with _stores():
            turns = await self.stores.sessions.read(tenant, user, request.session_id, request.limit)
        return pb.ListTurnsResponse(turns=[turn_to_proto(t) for t in turns])

    # -- working state ----------------------------------------------------------------------------------------

    async def GetWorkingState(self, request: pb.GetWorkingStateRequest, context: grpc.aio.ServicerContext
                              ) -> pb.GetWorkingStateResponse:
        _, tenant, user = self._acting_for()
        async with _stores():
            state = await self.stores.working.get(tenant, user, request.run_id)
        return pb.GetWorkingStateResponse(state=_struct(state.values), version=state.version)

    async def UpdateWorkingState(self, request: pb.UpdateWorkingStateRequest, context: grpc.aio.ServicerContext
                                 ) -> pb.UpdateWorkingStateResponse:
        _, tenant, user = self._acting_for()
        values = json_format.MessageToDict(request.values)
        try:
            async with _stores():
                version = await self.stores.working.update(tenant, user, request.run_id, values,
                                                           request.expected_version)
        except VersionConflict as err:
            raise MeshError(Reason.VENDOR_CONFLICT,
                            f"working state is at version {err.current}, not {request.expected_version}; "
                            "read it again and retry", domain=DOMAIN,
                            metadata={"current_version": str(err.current)}) from None
        return pb.UpdateWorkingStateResponse(version=version)

    # -- long-term memory -------------------------------------------------------------------------------------

    async def Remember(self, request: pb.RememberRequest, context: grpc.aio.ServicerContext) -> pb.RememberResponse:
        p = principal_mod.current()
        if request.tenant_wide:
            if p.kind != principal_mod.OPERATOR or p.tenant in ("", "*"):
                raise _denied("only an operator principal minted for one tenant may store tenant-wide facts")
            owner: str | None = None
        elif p.kind != principal_mod.USER:
            raise invalid_argument([("tenant_wide", "an operator principal stores tenant-wide facts only")], DOMAIN)
        else:
            owner = p.user
        override = request.ttl.ToTimedelta() if request.HasField("ttl") else None
        async with _stores():
            ttl = await self._ttl(p, override, context)
            fact = await self._remember(p.tenant, owner, request.text.strip(), request.kind,
                                        dedup_key(request.kind, request.text), ttl)
        return pb.RememberResponse(fact=fact_to_proto(fact))

    async def Recall(self, request: pb.RecallRequest, context: grpc.aio.ServicerContext) -> pb.RecallResponse:
        _, tenant, user = self._user()
        async with _stores():
            vector = (await self.stores.embedder.embed([request.query], scope=_scope(tenant, user)))[0]
            facts = await self.stores.facts.recall(tenant, user, vector, request.top_k or self.config.recall_top_k)
        return pb.RecallResponse(facts=[fact_to_proto(f) for f in facts])

    async def RecordRun(self, request: pb.RecordRunRequest, context: grpc.aio.ServicerContext
                        ) -> pb.RecordRunResponse:
        p, tenant, user = self._user()
        run_id = request.run_id or p.run_id
        if not run_id:
            raise invalid_argument([("run_id", "is required when the principal carries no run id")], DOMAIN)
        text = run_summary(request.request, list(request.tools), list(request.results), request.outcome)
        async with _stores():
            ttl = await self._ttl(p, None, context)
            # A run is recorded after its answer was sent: its embeddings may wait to share a pass with others.
            # The summary is found again by what the user asked ("do it like last time for my VPN"), so it is
            # embedded by the request's words, which BuildContext embedded moments ago (usually a cache hit).
            summary = await self._remember(tenant, user, text, "summary", f"run:{run_id}", ttl, urgent=False,
                                           embed_text=request.request.strip())
            found = await self._remember_preferences(p, request.request, context, urgent=False)
        return pb.RecordRunResponse(summary=fact_to_proto(summary), preferences=[fact_to_proto(f) for f in found])

    # -- erasure ----------------------------------------------------------------------------------------------

    async def ForgetUser(self, request: pb.ForgetUserRequest, context: grpc.aio.ServicerContext
                         ) -> pb.ForgetUserResponse:
        p = principal_mod.current()
        if p.kind == principal_mod.USER:
            if request.user and request.user.lower() != p.user:
                raise _denied("a user may only erase their own memory", user=request.user)
            if request.tenant_id and request.tenant_id != p.tenant:
                raise _denied("a user may only erase their memory in their own tenant", tenant_id=request.tenant_id)
            tenant, user = p.tenant, p.user
        else:
            if not request.user:
                raise invalid_argument([("user", "an operator must name the user to erase")], DOMAIN)
            if p.tenant not in ("", "*") and request.tenant_id and request.tenant_id != p.tenant:
                raise _denied("this operator principal is minted for another tenant", tenant_id=request.tenant_id)
            tenant = request.tenant_id or p.tenant
            if tenant in ("", "*"):
                raise invalid_argument([("tenant_id", "an operator must name the tenant")], DOMAIN)
            user = request.user.lower()
        async with _stores():
            erased = await erase_user(self.stores.redis, tenant, user)
            facts = await self.stores.facts.forget(tenant, user)
        counts = {"sessions_deleted": erased.sessions, "working_states_deleted": erased.working_states,
                  "facts_deleted": facts}
        log.info("forgot user", extra={"fields": {"tenant": tenant, **counts}})
        if self.stores.registry is not None:
            budget = Budget.of(context)
            await self.stores.registry.audit_forget_user(p, tenant, user, counts,
                                                         budget.remaining(_REGISTRY_RESERVE_S))
        return pb.ForgetUserResponse(**counts)

    # -- context ----------------------------------------------------------------------------------------------

    async def _embed_missing(self, turns: list[Turn]) -> None:
        """Embeds the sentences of turns stored without vectors of the current model (a model change)."""
        stale = [t for t in turns if t.sentences and (t.vectors is None or t.model != self.stores.embedder.model)]
        if not stale:
            return
        vectors = await self.stores.embedder.embed([s for t in stale for s in t.sentences])
        at = 0
        for turn in stale:
            turn.vectors = vectors[at:at + len(turn.sentences)]
            turn.model = self.stores.embedder.model
            at += len(turn.sentences)

    async def build_context(self, tenant: str, user: str, request: pb.BuildContextRequest) -> BuiltContext:
        """Reads state, turns and the request's embedding concurrently, recalls facts, and packs the budget."""
        async def nothing() -> Any:
            return None

        state_task = self.stores.working.get(tenant, user, request.run_id) if request.run_id else nothing()
        turns_task = self.stores.sessions.read(tenant, user, request.session_id) if request.session_id \
            else nothing()
        query_task = self.stores.embedder.embed([request.request], scope=_scope(tenant, user)) \
            if request.request.strip() else nothing()
        state, turns, query = await asyncio.gather(state_task, turns_task, query_task)
        vector: np.ndarray | None = query[0] if query is not None else None
        facts: list[Fact] = []
        if vector is not None and self.config.context_top_k:
            facts = await self.stores.facts.recall(tenant, user, vector, self.config.context_top_k,
                                                   self.config.context_min_score)
        turns = turns or []
        condenser = self.stores.condenser
        inner = condenser.for_session(tenant, user, request.session_id) if condenser and turns else None
        chosen = inner or self.builder.condense

        async def condense(older: list[Turn], query: np.ndarray | None, budget: int) -> str:
            await self._embed_missing(older)  # only the turns that are condensed need sentence vectors
            return await chosen(older, query, budget)

        return await self.builder.build(state.values if state else {}, facts, turns, vector, request.budget_tokens,
                                        condense)

    async def BuildContext(self, request: pb.BuildContextRequest, context: grpc.aio.ServicerContext
                           ) -> pb.BuildContextResponse:
        _, tenant, user = self._user()
        async with _stores():
            built = await self.build_context(tenant, user, request)
        ctx = common_pb2.Context(turns=[turn_to_proto(t) for t in built.turns], summary=built.summary,
                                 facts=[fact_to_proto(f) for f in built.facts],
                                 working_state=_struct(built.working_state), token_count=built.total,
                                 budget_tokens=built.budget)
        return pb.BuildContextResponse(context=ctx, text=built.text, working_state_tokens=built.state_tokens,
                                       facts_tokens=built.facts_tokens, turns_tokens=built.turns_tokens,
                                       summary_tokens=built.summary_tokens, condensed_turns=built.condensed_turns,
                                       encoding=tokens.DEFAULT_ENCODING)


def _scope(tenant: str, user: str | None) -> str:
    """The embedding cache's scope: one user's texts (a request is embedded for its context, then for its run
    summary; other users' identical words are not shared, so a cache hit means this user just asked it)."""
    return f"{tenant}/{user or ''}"


def service_spec(config: MemoryConfig, stores: Stores) -> ServiceSpec:
    """The MemoryService as the mesh server serves it: handlers, principal kinds, validators."""
    return ServiceSpec(SERVICE_NAME, MemoryServicer(config, stores),
                       memory_service_pb2_grpc.add_MemoryServiceServicer_to_server,
                       kinds=KINDS_BY_METHOD, validators=VALIDATORS)

