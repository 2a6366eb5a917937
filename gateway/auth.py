"""Who is calling: a tenant API key, then the end user (the IdP's JWT, or asserted by a key allowed to)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.idp import IdentityProviders, UserTokenError
from gateway.keys import KeyStore
from gateway.lookups import Lookups
from mesh.errors import MeshError, Reason

DOMAIN = "agentmesh.gateway"
UNKNOWN_USER_REASONS = {Reason.UNKNOWN_PERSON, Reason.AMBIGUOUS_PERSON, Reason.NOT_FOUND, Reason.VALIDATION_FAILED}


@dataclass(frozen=True)
class Credentials:
    """What a caller presented (gRPC metadata): `authorization: Bearer <key>` plus a user token or asserted user."""

    api_key: str = ""
    user_token: str = ""
    asserted_user: str = ""

    @classmethod
    def of(cls, metadata: dict[str, str]) -> Credentials:
        scheme, _, key = metadata.get("authorization", "").strip().partition(" ")
        return cls(api_key=key.strip() if scheme.lower() == "bearer" else "",
                   user_token=metadata.get("x-agentmesh-user-token", "").strip(),
                   asserted_user=metadata.get("x-agentmesh-user", "").strip().lower())


@dataclass(frozen=True)
class Caller:
    """An authenticated requester: tenant, directory email, name and groups, and how they came in."""

    tenant: str
    user: str
    name: str
    groups: tuple[str, ...]
    channel: str = "grpc"
    key_id: str = ""


class AuthError(MeshError):
    """An authentication refusal; `tenant` is set when the key was good (the refusal is then audited)."""

    tenant: str = ""
    user: str = ""


def refusal(cause: str, message: str, tenant: str = "", user: str = "") -> AuthError:
    err = AuthError(Reason.PRINCIPAL_INVALID, message, domain=DOMAIN, metadata={"cause": cause})
    err.tenant, err.user = tenant, user
    return err


class Authenticator:
    """Turns presented credentials into a Caller, or refuses."""

    def __init__(self, keys: KeyStore, providers: IdentityProviders, lookups: Lookups) -> None:
        self.keys = keys
        self.providers = providers
        self.lookups = lookups

    async def authenticate(self, creds: Credentials, channel: str = "grpc") -> Caller:
        if not creds.api_key:
            raise refusal("missing_api_key", "an API key is required: `authorization: Bearer <key>`")
        key = await self.keys.verify(creds.api_key)
        if key is None:
            raise refusal("invalid_api_key", "the API key is not valid")
        if creds.user_token:
            try:
                email = await self.providers.verify(key.tenant, creds.user_token)
            except UserTokenError as err:
                raise refusal("invalid_user_token", str(err), key.tenant) from None
        elif creds.asserted_user:
            if not key.assert_users:
                raise refusal("assertion_not_allowed", "this API key may not assert users; send the user's token "
                              "from your identity provider in x-agentmesh-user-token", key.tenant,
                              creds.asserted_user)
            email = creds.asserted_user
        else:
            raise refusal("missing_user", "the end user is required: x-agentmesh-user-token (a JWT from your "
                          "identity provider) or, for keys allowed to, x-agentmesh-user", key.tenant)
        return await self.member(key.tenant, email, channel, key.key_id)

    async def member(self, tenant: str, email: str, channel: str, key_id: str = "") -> Caller:
        """The Caller for a user of a tenant's directory; refuses users the directory does not hold."""
        if "@" not in email or len(email) > 254:
            raise refusal("unknown_user", f"{email!r} is not a user's email", tenant, email)
        try:
            member = await self.lookups.member(tenant, email)
        except MeshError as err:
            if err.reason in UNKNOWN_USER_REASONS:
                raise refusal("unknown_user", f"{email} is not in tenant {tenant}'s directory", tenant,
                              email) from None
            raise
        return Caller(tenant, member.email, member.name, member.groups, channel, key_id)
