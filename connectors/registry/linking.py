"""Account linking per user and system: the link URL, completing the code exchange, listing and unlinking."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from connectors.registry.audit import AuditLog, AuditRow
from connectors.registry.credentials import Credentials, LinkInfo
from connectors.registry.oauth import OAuthClient, StateSealer, authorize_url
from connectors.registry.registrations import Registration, get_registration, list_registrations
from connectors.registry.tenants import Tenant, get_tenant
from mesh.db import tenant_tx
from mesh.errors import MeshError, Reason, invalid_argument

DOMAIN = "agentmesh.registry"
CALLBACK_PATH = "/oauth/callback"


@dataclass(frozen=True)
class Actor:
    """Who asks for a link operation, for the audit row: the user, and the operator when one acts for them."""

    request_id: str = ""
    operator: str = ""
    trace_id: str = ""


class Linker:
    """The authorization-code flow per (tenant, user, connector), tokens stored through Credentials."""

    def __init__(self, pool: asyncpg.Pool, credentials: Credentials, oauth: OAuthClient, sealer: StateSealer,
                 audit: AuditLog, redirect_uri: str) -> None:
        self.pool = pool
        self.credentials = credentials
        self.oauth = oauth
        self.sealer = sealer
        self.audit = audit
        self.redirect_uri = redirect_uri

    async def _registration(self, tenant: str, connector: str) -> Registration:
        async with tenant_tx(self.pool, tenant) as conn:
            registration = await get_registration(conn, tenant, connector)
        if registration is None:
            raise MeshError(Reason.NOT_FOUND, f"no {connector} connector is registered for this tenant",
                            domain=DOMAIN, metadata={"connector": connector})
        return registration

    async def start(self, tenant: str, user: str, connector: str) -> tuple[str, str]:
        """The URL the user opens to link the system, and the sealed state it carries."""
        registration = await self._registration(tenant, connector)
        if not registration.oauth.configured:
            raise MeshError(Reason.NOT_FOUND, f"the tenant has not set up account linking for {connector}",
                            domain=DOMAIN, metadata={"connector": connector})
        if not self.redirect_uri:
            raise MeshError(Reason.UPSTREAM_UNAVAILABLE, "account linking needs the registry's public_url (the "
                            "OAuth callback the vendor redirects to)", domain=DOMAIN)
        state = self.sealer.seal(tenant, user.lower(), connector)
        return authorize_url(registration.oauth, self.redirect_uri, state, user.lower()), state

    async def link_url(self, tenant: Tenant, registration: Registration, user: str) -> str:
        """A fresh link URL for an ACCOUNT_NOT_LINKED answer ('' when the tenant has no OAuth client for it)."""
        if not registration.oauth.configured or not self.redirect_uri:
            return ""
        url, _ = await self.start(tenant.tenant_id, user, registration.connector)
        return url

    async def complete(self, state: str, code: str, *, tenant: str | None = None, user: str | None = None,
                       actor: Actor | None = None) -> LinkInfo:
        """Exchanges the code and stores the tokens. tenant/user, when given (the RPC), must be the state's."""
        link = self.sealer.open(state)
        if (tenant is not None and tenant != link.tenant) or (user is not None and user.lower() != link.user):
            raise invalid_argument([("state", "this link was started by someone else")], domain=DOMAIN)
        registration = await self._registration(link.tenant, link.connector)
        client_secret = await self.credentials.client_secret(link.tenant, link.connector)
        tokens = await self.oauth.exchange_code(registration.oauth, client_secret, code, self.redirect_uri)
        await self.credentials.put_user(link.tenant, link.connector, link.user, tokens)
        await self._audit("link", link.tenant, link.user, link.connector, actor or Actor(),
                          {"scopes": list(tokens.scopes)})
        links = await self.credentials.links(link.tenant, link.user)
        return links.get(link.connector) or LinkInfo(link.connector, True, None, tokens.scopes)

    async def unlink(self, tenant: str, user: str, connector: str, actor: Actor) -> bool:
        async with tenant_tx(self.pool, tenant) as conn:
            registration = await get_registration(conn, tenant, connector)
        removed = await self.credentials.unlink(tenant, connector, user,
                                                registration.oauth if registration is not None else None)
        await self._audit("unlink", tenant, user, connector, actor, {"removed": removed})
        return removed

    async def links(self, tenant: str, user: str) -> list[LinkInfo]:
        """One entry per connector the tenant registered and enabled, linked or not."""
        async with tenant_tx(self.pool, tenant) as conn:
            found = await get_tenant(conn, tenant)
            registrations = await list_registrations(conn, tenant)
        enabled = found.policy.connectors if found is not None else ()
        stored = await self.credentials.links(tenant, user)
        out: list[LinkInfo] = []
        for registration in registrations:
            if enabled and registration.connector not in enabled:
                continue
            out.append(stored.get(registration.connector) or LinkInfo(registration.connector, False, None, ()))
        return out

    async def _audit(self, kind: str, tenant: str, user: str, connector: str, actor: Actor,
                     detail: dict[str, object]) -> None:
        await self.audit.append(AuditRow(tenant_id=tenant, user=user, kind=kind, acting_identity=actor.operator,
                                         outcome="ok", code="OK", request_id=actor.request_id,
                                         trace_id=actor.trace_id, detail={"connector": connector, **detail}))
