"""The OAuth authorization-code flow: link URLs with a sealed state, code exchange, refresh and revocation."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
from cryptography.fernet import Fernet, InvalidToken

from connectors.registry.registrations import OAuthSettings
from mesh.errors import MeshError, Reason, invalid_argument

DOMAIN = "agentmesh.registry"


@dataclass(frozen=True)
class LinkState:
    """Who is linking which system; sealed into the opaque `state` parameter."""

    tenant: str
    user: str
    connector: str
    nonce: str


@dataclass(frozen=True)
class TokenSet:
    """What a token endpoint answered (the secret parts never leave the registry)."""

    access_token: str
    refresh_token: str
    expires_at: float | None
    scopes: tuple[str, ...]
    token_type: str = "Bearer"  # noqa: S105 - the HTTP authorization scheme, not a secret
    extras: dict[str, str] | None = None

    def secret(self) -> dict[str, Any]:
        return {"token": self.access_token, "refresh_token": self.refresh_token, "scheme": self.token_type or "Bearer",
                "expires_at": self.expires_at, "scopes": list(self.scopes), "extras": self.extras or {}}


class StateSealer:
    """Seals link states with Fernet (encrypted and authenticated, with an issue time checked against a TTL)."""

    def __init__(self, key: bytes, ttl_s: float) -> None:
        self.fernet = Fernet(key)
        self.ttl_s = ttl_s

    def seal(self, tenant: str, user: str, connector: str) -> str:
        body = {"t": tenant, "u": user, "c": connector, "n": secrets.token_urlsafe(8)}
        return self.fernet.encrypt(json.dumps(body).encode()).decode()

    def open(self, state: str) -> LinkState:
        try:
            body = json.loads(self.fernet.decrypt(state.encode(), ttl=int(self.ttl_s)))
        except (InvalidToken, ValueError):
            raise invalid_argument([("state", "the link state is invalid or expired; start the link again")],
                                   domain=DOMAIN) from None
        return LinkState(body["t"], body["u"], body["c"], body["n"])


def authorize_url(oauth: OAuthSettings, redirect_uri: str, state: str, login_hint: str) -> str:
    """The URL the user opens to grant access: client id, redirect, state, scopes and the user's email as hint."""
    params = {"response_type": "code", "client_id": oauth.client_id, "redirect_uri": redirect_uri, "state": state,
              "login_hint": login_hint}
    if oauth.scopes:
        params["scope"] = " ".join(oauth.scopes)
    sep = "&" if "?" in oauth.authorize_url else "?"
    return f"{oauth.authorize_url}{sep}{urlencode(params)}"


class OAuthClient:
    """Talks to token and revocation endpoints over one pooled aiohttp session."""

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def exchange_code(self, oauth: OAuthSettings, client_secret: str, code: str,
                            redirect_uri: str) -> TokenSet:
        return await self._token(oauth, {"grant_type": "authorization_code", "code": code,
                                         "redirect_uri": redirect_uri, "client_id": oauth.client_id,
                                         "client_secret": client_secret})

    async def refresh(self, oauth: OAuthSettings, client_secret: str, refresh_token: str) -> TokenSet:
        tokens = await self._token(oauth, {"grant_type": "refresh_token", "refresh_token": refresh_token,
                                           "client_id": oauth.client_id, "client_secret": client_secret})
        if not tokens.refresh_token:  # vendors that do not rotate keep the old refresh token valid
            tokens = TokenSet(tokens.access_token, refresh_token, tokens.expires_at, tokens.scopes,
                              tokens.token_type, tokens.extras)
        return tokens

    async def revoke(self, oauth: OAuthSettings, client_secret: str, token: str) -> bool:
        """Revokes a token (RFC 7009); False when the vendor has no endpoint or refused."""
        if not oauth.revoke_url or not token:
            return False
        form = {"token": token, "client_id": oauth.client_id, "client_secret": client_secret}
        try:
            async with self.session.post(oauth.revoke_url, data=form) as resp:
                return resp.status < 300
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _token(self, oauth: OAuthSettings, form: dict[str, str]) -> TokenSet:
        try:
            async with self.session.post(oauth.token_url, data=form, headers={"Accept": "application/json"}) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            raise MeshError(Reason.UPSTREAM_UNAVAILABLE,
                            f"the token endpoint of {oauth.token_url.split('?')[0]} failed: {type(err).__name__}",
                            domain=DOMAIN) from None
        if status >= 500:
            raise MeshError(Reason.UPSTREAM_UNAVAILABLE, f"the token endpoint answered {status}", domain=DOMAIN)
        if status >= 400 or not isinstance(body, dict) or "access_token" not in body:
            error = body.get("error", "") if isinstance(body, dict) else ""
            raise MeshError(Reason.VENDOR_UNAUTHENTICATED,
                            f"the vendor refused the grant ({error or status}); link the account again",
                            domain=DOMAIN, metadata={"oauth_error": str(error)})
        expires_in = body.get("expires_in")
        scope = body.get("scope") or ""
        extras = {k: str(v) for k, v in body.items()
                  if k in ("instance_url", "id", "issued_at") and isinstance(v, str | int | float)}
        return TokenSet(access_token=str(body["access_token"]), refresh_token=str(body.get("refresh_token") or ""),
                        expires_at=time.time() + float(expires_in) if expires_in else None,
                        scopes=tuple(scope.split()) if isinstance(scope, str) else tuple(scope),
                        token_type=_scheme(str(body.get("token_type") or "Bearer")), extras=extras)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _scheme(token_type: str) -> str:
    return "Bearer" if token_type.lower() == "bearer" else token_type
