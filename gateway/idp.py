"""End-user tokens: JWTs from each tenant's identity provider, verified against its JWKS (inline or fetched)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import jwt

from gateway.cache import TtlCache
from mesh.db import tenant_tx

# Asymmetric algorithms only: a tenant's IdP signs, the gateway verifies; shared secrets and `none` never pass.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LEEWAY_S = 30
JWKS_TIMEOUT = aiohttp.ClientTimeout(total=3)


class UserTokenError(Exception):
    """The end-user token is missing a provider, malformed, expired, for another audience or badly signed."""


@dataclass(frozen=True)
class IdentityProvider:
    """A tenant's identity provider: who issues its users' tokens, for which audience, with which keys."""

    tenant: str
    issuer: str
    audience: str
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None
    email_claim: str = "email"


class IdentityProviders:
    """Per-tenant providers from PostgreSQL (cached) and their key sets (inline, or fetched and cached)."""

    def __init__(self, pool: asyncpg.Pool, cache_ttl_s: float = 60.0, jwks_ttl_s: float = 300.0) -> None:
        self.pool = pool
        self._providers: TtlCache[str, IdentityProvider | bool] = TtlCache(cache_ttl_s)
        self._keysets: TtlCache[str, jwt.PyJWKSet] = TtlCache(jwks_ttl_s)
        self._refetched: dict[str, float] = {}
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def put(self, provider: IdentityProvider) -> None:
        """Configures (or replaces) a tenant's provider."""
        if (provider.jwks is None) == (provider.jwks_url is None):
            raise ValueError("give exactly one of jwks or jwks_url")
        if provider.jwks is not None:
            jwt.PyJWKSet.from_dict(provider.jwks)  # refuses a key set it cannot use
        async with tenant_tx(self.pool, provider.tenant) as conn:
            await conn.execute(
                "INSERT INTO gateway.identity_providers (tenant_id, issuer, audience, jwks, jwks_url, email_claim) "
                "VALUES ($1, $2, $3, $4::jsonb, $5, $6) ON CONFLICT (tenant_id) DO UPDATE SET issuer = $2, "
                "audience = $3, jwks = $4::jsonb, jwks_url = $5, email_claim = $6, update_time = now()",
                provider.tenant, provider.issuer, provider.audience,
                json.dumps(provider.jwks) if provider.jwks is not None else None, provider.jwks_url,
                provider.email_claim)
        self._providers.drop(provider.tenant)
        self._keysets.drop(provider.tenant)

    async def provider(self, tenant: str) -> IdentityProvider | None:
        found = await self._providers.get_or_load(tenant, lambda: self._load(tenant))
        return found if isinstance(found, IdentityProvider) else None

    async def _load(self, tenant: str) -> IdentityProvider | bool:
        async with tenant_tx(self.pool, tenant) as conn:
            row = await conn.fetchrow("SELECT issuer, audience, jwks, jwks_url, email_claim "
                                      "FROM gateway.identity_providers WHERE tenant_id = $1", tenant)
        if row is None:
            return False
        jwks = json.loads(row["jwks"]) if row["jwks"] is not None else None
        return IdentityProvider(tenant, row["issuer"], row["audience"], jwks, row["jwks_url"], row["email_claim"])

    async def verify(self, tenant: str, token: str) -> str:
        """The email the tenant's provider vouches for in `token`."""
        provider = await self.provider(tenant)
        if provider is None:
            raise UserTokenError(f"tenant {tenant} has no identity provider configured for user tokens")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as err:
            raise UserTokenError(f"the user token is not a JWT: {err}") from None
        if header.get("alg") not in ALGORITHMS:
            raise UserTokenError(f"the user token's algorithm {header.get('alg')!r} is not accepted")
        key = await self._key(provider, str(header.get("kid") or ""))
        try:
            claims = jwt.decode(token, key, algorithms=list(ALGORITHMS), audience=provider.audience,
                                issuer=provider.issuer, leeway=LEEWAY_S,
                                options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise UserTokenError("the user token expired") from None
        except jwt.PyJWTError as err:
            raise UserTokenError(f"the user token is invalid: {err}") from None
        email = claims.get(provider.email_claim)
        if not isinstance(email, str) or "@" not in email:
            raise UserTokenError(f"the user token carries no email in claim {provider.email_claim!r}")
        return email.strip().lower()

    async def _key(self, provider: IdentityProvider, kid: str) -> Any:
        keyset = await self._keysets.get_or_load(provider.tenant, lambda: self._keyset(provider))
        found = _pick(keyset, kid)
        if found is None and provider.jwks_url and self._refetched.get(provider.tenant, 0) < time.monotonic() - 30:
            # A key id not seen yet: the provider may have rotated; fetch again (at most every 30 s).
            self._refetched[provider.tenant] = time.monotonic()
            self._keysets.drop(provider.tenant)
            keyset = await self._keysets.get_or_load(provider.tenant, lambda: self._keyset(provider))
            found = _pick(keyset, kid)
        if found is None:
            raise UserTokenError(f"the user token is signed by an unknown key {kid!r}")
        return found

    async def _keyset(self, provider: IdentityProvider) -> jwt.PyJWKSet:
        if provider.jwks is not None:
            return jwt.PyJWKSet.from_dict(provider.jwks)
        assert provider.jwks_url is not None
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=JWKS_TIMEOUT)
        try:
            async with self._http.get(provider.jwks_url) as resp:
                resp.raise_for_status()
                body = await resp.json(content_type=None)
            return jwt.PyJWKSet.from_dict(body)
        except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWTError) as err:
            raise UserTokenError(f"the identity provider's keys could not be fetched: {err}") from None


def _pick(keyset: jwt.PyJWKSet, kid: str) -> Any:
    keys = [k for k in keyset.keys if not kid or k.key_id == kid]
    if not kid and len(keyset.keys) != 1:
        return None
    return keys[0].key if keys else None
