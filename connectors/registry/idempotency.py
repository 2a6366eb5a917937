"""Idempotency records of WRITE calls per (tenant, key) in PostgreSQL: replay, reuse and in-flight refusals."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from mesh.db import tenant_tx
from mesh.errors import MeshError, Reason

DOMAIN = "agentmesh.registry"
MAX_KEY_LENGTH = 200
IN_FLIGHT_RETRY_S = 0.2


@dataclass(frozen=True)
class Replay:
    """The first call's answer, returned to a repeat with the same key and arguments."""

    result: dict[str, Any]
    summary: str
    arguments: dict[str, Any]


def call_fingerprint(user: str, tool: str, arguments: Mapping[str, Any]) -> str:
    """What must be equal for a repeat to be the same call: requester, tool and resolved arguments."""
    doc = json.dumps({"user": user.lower(), "tool": tool, "arguments": arguments}, sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()


def key_violations(key: str) -> list[tuple[str, str]]:
    if not key:
        return [("idempotency_key", "WRITE tools require an idempotency key")]
    if len(key) > MAX_KEY_LENGTH or not key.isprintable():
        return [("idempotency_key", f"at most {MAX_KEY_LENGTH} printable characters")]
    return []


class Idempotency:
    """Claims a key for one call (a lease as long as the call's deadline), then completes or releases it."""

    def __init__(self, pool: asyncpg.Pool, ttl_s: float) -> None:
        self.pool = pool
        self.ttl_s = ttl_s

    async def begin(self, tenant: str, key: str, fingerprint: str, tool: str, lease_s: float) -> Replay | None:
        """None: this call owns the key and must run. A Replay: the key already completed with these arguments.
        Raises IDEMPOTENCY_KEY_REUSED (other arguments) or IDEMPOTENCY_KEY_IN_FLIGHT (the first call still runs)."""
        async with tenant_tx(self.pool, tenant) as conn:
            claimed = await conn.fetchval(
                """INSERT INTO registry.idempotency (tenant_id, key, fingerprint, tool, state, lease_until, expire_time)
                   VALUES ($1, $2, $3, $4, 'in_flight', now() + make_interval(secs => $5),
                           now() + make_interval(secs => $6))
                   ON CONFLICT (tenant_id, key) DO UPDATE SET
                     fingerprint = EXCLUDED.fingerprint, tool = EXCLUDED.tool, state = 'in_flight', result = NULL,
                     summary = '', arguments = NULL, lease_until = EXCLUDED.lease_until, create_time = now(),
                     expire_time = EXCLUDED.expire_time
                   WHERE idempotency.expire_time < now()
                      OR (idempotency.state = 'in_flight' AND idempotency.lease_until < now()
                          AND idempotency.fingerprint = EXCLUDED.fingerprint)
                   RETURNING true""",
                tenant, key, fingerprint, tool, lease_s, self.ttl_s)
            if claimed:
                return None
            row = await conn.fetchrow(
                """SELECT fingerprint, tool, state, result, summary, arguments,
                          greatest(extract(epoch FROM lease_until - now()), 0) AS lease_left
                   FROM registry.idempotency WHERE tenant_id = $1 AND key = $2""", tenant, key)
        if row is None:  # released between our insert and read: the caller retries
            raise MeshError(Reason.IDEMPOTENCY_KEY_IN_FLIGHT, "the call with this key just ended; retry",
                            domain=DOMAIN, retry_after_s=IN_FLIGHT_RETRY_S)
        if row["fingerprint"] != fingerprint:
            raise MeshError(Reason.IDEMPOTENCY_KEY_REUSED,
                            f"idempotency key {key!r} was used for a different call ({row['tool']} with other "
                            "arguments); use a new key", domain=DOMAIN, metadata={"idempotency_key": key})
        if row["state"] == "in_flight":
            raise MeshError(Reason.IDEMPOTENCY_KEY_IN_FLIGHT, f"a call with idempotency key {key!r} is in flight",
                            domain=DOMAIN, metadata={"idempotency_key": key},
                            retry_after_s=min(float(row["lease_left"]), IN_FLIGHT_RETRY_S) or IN_FLIGHT_RETRY_S)
        return Replay(json.loads(row["result"] or "{}"), row["summary"], json.loads(row["arguments"] or "{}"))

    async def complete(self, tenant: str, key: str, result: Mapping[str, Any], summary: str,
                       arguments: Mapping[str, Any]) -> None:
        async with tenant_tx(self.pool, tenant) as conn:
            await conn.execute(
                """UPDATE registry.idempotency SET state = 'done', result = $3::jsonb, summary = $4,
                          arguments = $5::jsonb, lease_until = now()
                   WHERE tenant_id = $1 AND key = $2 AND state = 'in_flight'""",
                tenant, key, json.dumps(result), summary, json.dumps(arguments))

    async def release(self, tenant: str, key: str) -> None:
        """Forgets a claim whose call failed, so that a retry with the same key runs again."""
        async with tenant_tx(self.pool, tenant) as conn:
            await conn.execute("DELETE FROM registry.idempotency WHERE tenant_id = $1 AND key = $2 "
                               "AND state = 'in_flight'", tenant, key)

    async def purge(self, tenant: str) -> int:
        """Deletes the tenant's records past their expiry (kept for ttl_s, at least 24 h)."""
        async with tenant_tx(self.pool, tenant) as conn:
            status = await conn.execute("DELETE FROM registry.idempotency WHERE tenant_id = $1 "
                                        "AND expire_time < now()", tenant)
        return int(status.split()[-1])
