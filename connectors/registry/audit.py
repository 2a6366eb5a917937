"""The audit log: append-only rows in monthly partitions, read back per tenant under row-level security."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from mesh.db import tenant_tx
from mesh.telemetry import redact

TOOL_CALL = "tool_call"
MAX_STRING = 2000
MAX_PAGE = 1000
DEFAULT_PAGE = 100


@dataclass(frozen=True)
class AuditRow:
    """One audit event; arguments are redacted before they are stored."""

    tenant_id: str
    user: str
    kind: str
    acting_identity: str = ""
    tool: str = ""
    effect: str = ""
    arguments: Mapping[str, Any] = field(default_factory=dict)
    outcome: str = ""
    code: str = ""
    reason: str = ""
    rule: str = ""
    latency_ms: float = 0.0
    idempotency_key: str = ""
    trace_id: str = ""
    request_id: str = ""
    run_id: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)
    id: str = ""
    create_time: datetime | None = None


def redact_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Secret-looking keys replaced and long strings cut, so that a row never carries a credential or a dump."""
    def cut(value: Any) -> Any:
        if isinstance(value, str) and len(value) > MAX_STRING:
            return value[:MAX_STRING] + "…[truncated]"
        if isinstance(value, dict):
            return {k: cut(v) for k, v in value.items()}
        if isinstance(value, list):
            return [cut(v) for v in value]
        return value

    redacted: dict[str, Any] = cut(redact(dict(arguments)))
    return redacted


class AuditLog:
    """Appends and lists audit rows; the app role can INSERT and SELECT, nothing else."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def append(self, row: AuditRow) -> str:
        row_id = str(uuid.uuid4())
        async with tenant_tx(self.pool, row.tenant_id) as conn:
            await conn.execute(
                """INSERT INTO registry.audit (id, tenant_id, "user", acting_identity, kind, tool, effect, arguments,
                                               outcome, code, reason, rule, latency_ms, idempotency_key, trace_id,
                                               request_id, run_id, detail)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                           $18::jsonb)""",
                row_id, row.tenant_id, row.user.lower(), row.acting_identity, row.kind, row.tool, row.effect,
                json.dumps(redact_arguments(row.arguments), default=str), row.outcome, row.code, row.reason,
                row.rule, float(row.latency_ms), row.idempotency_key, row.trace_id, row.request_id, row.run_id,
                json.dumps(redact(dict(row.detail)), default=str))
        return row_id

    async def list(self, tenant: str, *, since: datetime | None = None, user: str = "", page_size: int = 0,
                   page_token: str = "") -> tuple[list[AuditRow], str]:
        """The tenant's rows, newest first, and the token of the next page ('' at the end)."""
        size = min(max(page_size or DEFAULT_PAGE, 1), MAX_PAGE)
        cursor_time, cursor_id = decode_page_token(page_token) if page_token else (None, None)
        async with tenant_tx(self.pool, tenant) as conn:
            rows = await conn.fetch(
                """SELECT * FROM registry.audit
                   WHERE tenant_id = $1 AND ($2::timestamptz IS NULL OR create_time >= $2)
                     AND ($3 = '' OR "user" = $3)
                     AND ($4::timestamptz IS NULL OR (create_time, id) < ($4, $5::uuid))
                   ORDER BY create_time DESC, id DESC LIMIT $6""",
                tenant, since, user.lower(), cursor_time, cursor_id, size + 1)
        out = [_row(r) for r in rows[:size]]
        token = encode_page_token(out[-1]) if len(rows) > size else ""
        return out, token

    async def ensure_partitions(self, months_ahead: int) -> int:
        async with self.pool.acquire() as conn:
            created: int = await conn.fetchval("SELECT registry.ensure_audit_partitions($1)", months_ahead)
        return created

    async def purge(self) -> int:
        """Deletes rows past each tenant's retention (the owner's function; the app role has no DELETE)."""
        async with self.pool.acquire() as conn:
            removed: int = await conn.fetchval("SELECT registry.purge_audit()")
        return removed


def encode_page_token(row: AuditRow) -> str:
    assert row.create_time is not None
    return base64.urlsafe_b64encode(f"{row.create_time.isoformat()}|{row.id}".encode()).decode()


def decode_page_token(token: str) -> tuple[datetime, str]:
    """The cursor of a page token; ValueError when it is not one of ours."""
    try:
        when, _, row_id = base64.urlsafe_b64decode(token.encode()).decode().partition("|")
        return datetime.fromisoformat(when), str(uuid.UUID(row_id))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError("not a page token of this listing") from err


def _row(r: asyncpg.Record) -> AuditRow:
    return AuditRow(tenant_id=r["tenant_id"], user=r["user"], kind=r["kind"], acting_identity=r["acting_identity"],
                    tool=r["tool"], effect=r["effect"], arguments=json.loads(r["arguments"]), outcome=r["outcome"],
                    code=r["code"], reason=r["reason"], rule=r["rule"], latency_ms=r["latency_ms"],
                    idempotency_key=r["idempotency_key"], trace_id=r["trace_id"], request_id=r["request_id"],
                    run_id=r["run_id"], detail=json.loads(r["detail"]), id=str(r["id"]),
                    create_time=r["create_time"])
