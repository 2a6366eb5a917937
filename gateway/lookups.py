"""Registry reads made on every request, cached briefly: tenant settings, directory entries, people, tools."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf import json_format

from agentmesh.common.v1 import common_pb2
from agentmesh.registry.v1 import registry_pb2, registry_service_pb2
from gateway.cache import TtlCache
from gateway.ratelimit import Limits
from mesh.principal import Minter, Principal

GATEWAY_IDENTITY = "gateway@agentmesh"
LOOKUP_TIMEOUT_S = 2.0
RELOAD_AFTER_S = 5.0


class Registry(Protocol):
    """The registry calls the lookups need (gateway.peers.Peers implements them)."""

    async def resolve_person(self, who: Principal, query: str, timeout_s: float) -> common_pb2.Person: ...

    async def list_people(self, who: Principal, timeout_s: float) -> list[common_pb2.Person]: ...

    async def list_tools(self, who: Principal, timeout_s: float) -> registry_service_pb2.ListToolsResponse: ...

    async def get_tenant(self, operator: Principal, tenant: str, timeout_s: float) -> registry_pb2.Tenant: ...


@dataclass(frozen=True)
class TenantSettings:
    """What the gateway needs of a tenant: its deadline, limits, confirmations and Slack workspace."""

    tenant: str
    display_name: str
    timeout_s: float
    limits: Limits
    confirm_before: frozenset[str]
    slack_team_id: str

    @classmethod
    def of(cls, tenant: registry_pb2.Tenant, default_timeout_s: float) -> TenantSettings:
        policy: dict[str, Any] = json_format.MessageToDict(tenant.policy)
        timeout = tenant.request_timeout.ToTimedelta().total_seconds() if tenant.HasField("request_timeout") else 0
        return cls(tenant.tenant_id, tenant.display_name or tenant.tenant_id, timeout or default_timeout_s,
                   Limits.of(policy), frozenset(policy.get("confirm_before") or ()), tenant.slack_team_id)


@dataclass(frozen=True)
class Member:
    """A user found in the tenant's directory."""

    email: str
    name: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class People:
    """A tenant's directory for planners, and a digest of exactly this list (the planner reuses its conversion)."""

    people: list[common_pb2.Person]
    fingerprint: str


class Lookups:
    """Cached registry reads. Directory and tools follow the registry within their TTLs."""

    def __init__(self, registry: Registry, minter: Minter, *, default_timeout_s: float = 5.0,
                 tenant_ttl_s: float = 30.0, directory_ttl_s: float = 60.0, tools_ttl_s: float = 15.0) -> None:
        self.registry = registry
        self.minter = minter
        self.default_timeout_s = default_timeout_s
        self._tenants: TtlCache[str, TenantSettings] = TtlCache(tenant_ttl_s)
        self._members: TtlCache[tuple[str, str], Member] = TtlCache(directory_ttl_s)
        self._people: TtlCache[str, People] = TtlCache(directory_ttl_s)
        self._slack: TtlCache[str, dict[str, str]] = TtlCache(directory_ttl_s)
        self._reloaded: dict[str, float] = {}
        self._tools: TtlCache[tuple[str, tuple[str, ...]], registry_service_pb2.ListToolsResponse] = \
            TtlCache(tools_ttl_s)

    def operator(self, tenant: str) -> Principal:
        """The gateway's own short-lived operator principal for one tenant (tenant settings, refusal audits)."""
        return self.minter.mint_operator(GATEWAY_IDENTITY, tenant=tenant, ttl_s=60)

    def reader(self, tenant: str, user: str = GATEWAY_IDENTITY) -> Principal:
        """A user principal that only reads the directory before the requester is known."""
        return self.minter.mint_user(tenant, user, (), deadline_s=LOOKUP_TIMEOUT_S)

    async def tenant(self, tenant: str) -> TenantSettings:
        async def load() -> TenantSettings:
            found = await self.registry.get_tenant(self.operator(tenant), tenant, LOOKUP_TIMEOUT_S)
            return TenantSettings.of(found, self.default_timeout_s)

        return await self._tenants.get_or_load(tenant, load)

    async def member(self, tenant: str, email: str) -> Member:
        """The user's directory entry; raises the registry's UNKNOWN_PERSON when there is none."""
        async def load() -> Member:
            person = await self.registry.resolve_person(self.reader(tenant, email), email, LOOKUP_TIMEOUT_S)
            return Member(person.email.lower(), person.name, tuple(person.groups))

        return await self._members.get_or_load((tenant, email.lower()), load)

    async def people(self, tenant: str) -> People:
        """The tenant's directory as planners need it: names and emails only, with the list's fingerprint."""
        async def load() -> People:
            found = await self.registry.list_people(self.reader(tenant), LOOKUP_TIMEOUT_S)
            slack = {p.system_ids["slack"]: p.email for p in found if p.system_ids.get("slack")}
            self._slack.put(tenant, slack)
            people = [common_pb2.Person(email=p.email, name=p.name, first_name=p.first_name, last_name=p.last_name,
                                        manager=p.manager) for p in found]
            digest = hashlib.sha256(tenant.encode())
            for person in people:
                digest.update(person.SerializeToString(deterministic=True))
            return People(people, digest.hexdigest()[:32])

        return await self._people.get_or_load(tenant, load)

    async def slack_user(self, tenant: str, slack_user_id: str) -> str | None:
        """The directory email of a Slack user (the person's system_ids["slack"]), or None."""
        found = self._slack.get(tenant)
        stale = self._reloaded.get(tenant, 0.0) < time.monotonic() - RELOAD_AFTER_S
        if found is None or (slack_user_id not in found and stale):
            # Someone new in the workspace: read the directory again (at most every RELOAD_AFTER_S).
            self._reloaded[tenant] = time.monotonic()
            self._people.drop(tenant)
            await self.people(tenant)
            found = self._slack.get(tenant) or {}
        return found.get(slack_user_id)

    async def tools(self, who: Principal, timeout_s: float) -> registry_service_pb2.ListToolsResponse:
        """The tools of a permission set (tenant and groups): the same for every user who shares them."""
        key = (who.tenant, tuple(sorted(who.groups)))
        return await self._tools.get_or_load(key, lambda: self.registry.list_tools(who, timeout_s))
