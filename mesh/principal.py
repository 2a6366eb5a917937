"""The signed principal: Ed25519 JWTs with key ids, a JWKS of public keys, minting and verification."""

from __future__ import annotations

import contextvars
import json
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

METADATA_KEY = "x-agentmesh-principal"
ISSUER = "agentmesh"
USER = "user"
OPERATOR = "operator"
RESUME_WINDOW_S = 600.0  # a user principal outlives its request so that an executor taking over a run can finish it
OPERATOR_TTL_S = 900.0
_ALGORITHM = "EdDSA"


class PrincipalError(Exception):
    """The principal is missing, expired, tampered, signed by an unknown key or of the wrong kind."""


@dataclass(frozen=True)
class Principal:
    """Verified claims: who the request is for. Tenant and user are only ever read from here."""

    tenant: str
    user: str
    groups: tuple[str, ...] = ()
    request_id: str = ""
    run_id: str = ""
    kind: str = USER
    expires_at: float = 0.0
    on_behalf_of: str = ""
    token: str = field(default="", repr=False, compare=False)

    def claims(self) -> dict[str, Any]:
        return {"iss": ISSUER, "tid": self.tenant, "sub": self.user, "grp": list(self.groups),
                "rid": self.request_id, "run": self.run_id, "knd": self.kind, "exp": int(self.expires_at),
                "iat": int(time.time()), "obo": self.on_behalf_of}


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("agentmesh_principal", default=None)


def current() -> Principal:
    """The principal of the RPC being served (set by the server interceptor)."""
    principal = _current.get()
    if principal is None:
        raise PrincipalError("no principal in this context")
    return principal


def set_current(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _current.set(principal)


class KeyRing:
    """Signing keys in a folder: `<kid>.pem` private keys, `current` naming the signer, `jwks.json` public keys.

    Rotation adds a key and makes it current; the previous key stays in the JWKS (two keys valid at once)
    until `retire` removes it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def jwks_path(self) -> Path:
        return self.folder / "jwks.json"

    def ensure(self) -> KeyRing:
        """Generates a first key pair when the folder has none (the embedded default)."""
        if not (self.folder / "current").exists():
            self.rotate()
        return self

    def rotate(self) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        kid = f"k{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        path = self.folder / f"{kid}.pem"
        path.write_bytes(pem)
        os.chmod(path, 0o600)
        (self.folder / "current").write_text(kid)
        self._write_jwks()
        return kid

    def retire(self, kid: str) -> None:
        if kid == self.current_kid():
            raise ValueError("cannot retire the current signing key")
        (self.folder / f"{kid}.pem").unlink(missing_ok=True)
        self._write_jwks()

    def current_kid(self) -> str:
        return (self.folder / "current").read_text().strip()

    def signing_key(self) -> tuple[str, Ed25519PrivateKey]:
        kid = self.current_kid()
        key = serialization.load_pem_private_key((self.folder / f"{kid}.pem").read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        return kid, key

    def _write_jwks(self) -> None:
        keys = []
        for pem in sorted(self.folder.glob("*.pem")):
            private = serialization.load_pem_private_key(pem.read_bytes(), password=None)
            jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key()))  # type: ignore[arg-type]
            jwk.update({"kid": pem.stem, "use": "sig", "alg": _ALGORITHM})
            keys.append(jwk)
        tmp = self.jwks_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"keys": keys}, indent=2))
        tmp.replace(self.jwks_path)


class Minter:
    """Signs principals with the key ring's current key."""

    def __init__(self, ring: KeyRing) -> None:
        self.kid, self._key = ring.signing_key()

    def mint(self, principal: Principal) -> str:
        return jwt.encode(principal.claims(), self._key, algorithm=_ALGORITHM, headers={"kid": self.kid})

    def mint_user(self, tenant: str, user: str, groups: tuple[str, ...] | list[str] = (), *,
                  deadline_s: float = 5.0, request_id: str = "", run_id: str = "") -> Principal:
        """A user principal (only the gateway calls this in production): lives deadline + resume window."""
        p = Principal(tenant, user.lower(), tuple(groups), request_id or uuid.uuid4().hex, run_id or uuid.uuid4().hex,
                      USER, time.time() + deadline_s + RESUME_WINDOW_S)
        return _with_token(p, self.mint(p))

    def mint_operator(self, operator: str, *, tenant: str = "*", on_behalf_of: str = "", run_id: str = "",
                      ttl_s: float = OPERATOR_TTL_S) -> Principal:
        """An operator principal for admin CLIs; `on_behalf_of` names the user a replay acts for."""
        p = Principal(tenant, operator, (), uuid.uuid4().hex, run_id, OPERATOR, time.time() + ttl_s, on_behalf_of)
        return _with_token(p, self.mint(p))


def _with_token(p: Principal, token: str) -> Principal:
    return Principal(p.tenant, p.user, p.groups, p.request_id, p.run_id, p.kind, p.expires_at, p.on_behalf_of,
                     token)


class Verifier:
    """Verifies principals against a JWKS file (reloaded when it changes) or endpoint."""

    def __init__(self, jwks_path: Path | None = None, jwks_url: str | None = None) -> None:
        if (jwks_path is None) == (jwks_url is None):
            raise ValueError("give exactly one of jwks_path or jwks_url")
        self._path = jwks_path
        self._client = jwt.PyJWKClient(jwks_url, cache_keys=True) if jwks_url else None
        self._keys: dict[str, Any] = {}
        self._mtime = 0.0

    def _key(self, kid: str) -> Any:
        if self._client is not None:
            try:
                return self._client.get_signing_key(kid).key
            except jwt.PyJWKClientError as err:
                raise PrincipalError(f"unknown key id {kid!r}") from err
        assert self._path is not None
        try:
            mtime = self._path.stat().st_mtime
        except FileNotFoundError as err:
            raise PrincipalError("no verification keys published") from err
        if mtime != self._mtime or kid not in self._keys:
            jwks = jwt.PyJWKSet.from_json(self._path.read_text())
            self._keys = {k.key_id: k.key for k in jwks.keys if k.key_id}
            self._mtime = mtime
        if kid not in self._keys:
            raise PrincipalError(f"unknown key id {kid!r}")
        return self._keys[kid]

    def verify(self, token: str, kinds: frozenset[str] = frozenset({USER})) -> Principal:
        if not token:
            raise PrincipalError("missing principal")
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, self._key(str(header.get("kid", ""))), algorithms=[_ALGORITHM],
                                issuer=ISSUER, options={"require": ["exp", "iss", "sub", "tid", "knd"]})
        except PrincipalError:
            raise
        except jwt.ExpiredSignatureError as err:
            raise PrincipalError("principal expired") from err
        except jwt.PyJWTError as err:
            raise PrincipalError(f"principal invalid: {err}") from err
        kind = claims.get("knd")
        if kind not in kinds:
            raise PrincipalError(f"a {kind} principal may not call this method")
        return Principal(str(claims["tid"]), str(claims["sub"]), tuple(claims.get("grp") or ()),
                         str(claims.get("rid", "")), str(claims.get("run", "")), str(kind), float(claims["exp"]),
                         str(claims.get("obo", "")), token)
