"""Runs, steps, leases and dead letters in PostgreSQL (schema `executor`), and dead-letter notices on a Redis Stream."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from mesh.db import tenant_tx
from mesh.principal import Principal

from .model import Effect, Outcome, Plan, Run, RunStatus, StepError, StepState, StepStatus, Usage
from .ports import LeaseLost, StepRecord

log = logging.getLogger("agentmesh.executor")
DLQ_STREAM_MAXLEN = 10_000


def dlq_stream(tenant: str) -> str:
    """The Redis Stream announcing a tenant's dead letters (hash-tagged: one slot per tenant on Redis Cluster)."""
    return f"am:{{{tenant}}}:dlq"


@dataclass(frozen=True)
class StoredRun:
    """A run as stored, with what taking it over needs: the requester's principal token and the lease."""

    run: Run
    principal_token: str
    principal_expires_at: float
    lease_owner: str
    lease_expires_at: float | None
    cancel_requested: bool

    def lease_live(self, now: float) -> bool:
        return bool(self.lease_owner) and self.lease_expires_at is not None and self.lease_expires_at > now


@dataclass(frozen=True)
class DeadLetter:
    dead_letter_id: str
    tenant: str
    run_id: str
    user: str
    reason: str
    status: str
    replay_count: int
    created_at: float


def _ts(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _epoch(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


class PgRunStore:
    """The executor's durable state. `owner` names this executor instance: it is what its leases say."""

    def __init__(self, pool: asyncpg.Pool, redis: aioredis.Redis, owner: str, lease_s: float) -> None:
        self.pool = pool
        self.redis = redis
        self.owner = owner
        self.lease_s = lease_s

    # --- creating and taking runs --------------------------------------------------------------------------
    async def create(self, run: Run, principal: Principal) -> bool:
        """Inserts a new run with its steps, leased to this executor; False when the run id exists already."""
        async with tenant_tx(self.pool, run.tenant) as conn:
            created = await conn.fetchval(
                """INSERT INTO executor.runs (tenant_id, run_id, user_email, request, status, plan, refused,
                       max_replans, usage, principal_token, principal_expires_at)
                   VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9::jsonb, $10, $11)
                   ON CONFLICT (tenant_id, run_id) DO NOTHING RETURNING true""",
                run.tenant, run.run_id, run.user, run.request, run.status.value, _json(run.plan.to_dict()),
                run.refused, run.max_replans, _json(run.usage.__dict__), principal.token,
                _ts(principal.expires_at))
            if not created:
                return False
            await conn.execute(
                """INSERT INTO executor.leases (tenant_id, run_id, owner, expires_at)
                   VALUES ($1, $2, $3, now() + make_interval(secs => $4))""",
                run.tenant, run.run_id, self.owner, self.lease_s)
            await self._upsert_steps(conn, run.tenant, run.run_id, run.steps.values())
        return True

    async def claim(self, tenant: str, run_id: str, principal: Principal | None = None) -> bool:
        """Takes the run's lease when nobody holds a live one (or this executor does); records the principal the
        run now acts with. False when another executor holds it."""
        async with tenant_tx(self.pool, tenant) as conn:
            got = await conn.fetchval(
                """INSERT INTO executor.leases AS l (tenant_id, run_id, owner, expires_at)
                   VALUES ($1, $2, $3, now() + make_interval(secs => $4))
                   ON CONFLICT (tenant_id, run_id) DO UPDATE SET owner = EXCLUDED.owner,
                       expires_at = EXCLUDED.expires_at
                   WHERE l.expires_at < now() OR l.owner = EXCLUDED.owner
                   RETURNING true""", tenant, run_id, self.owner, self.lease_s)
            if got and principal is not None:
                await conn.execute(
                    """UPDATE executor.runs SET principal_token = $3, principal_expires_at = $4, update_time = now()
                       WHERE tenant_id = $1 AND run_id = $2""", tenant, run_id, principal.token,
                    _ts(principal.expires_at))
        return bool(got)

    async def claim_orphans(self, limit: int) -> list[tuple[str, str]]:
        """Leases up to `limit` runs nobody executes (lease expired, or approval wait timed out)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("SELECT tenant_id, run_id FROM executor.claim_orphans($1, $2, $3)",
                                    self.owner, self.lease_s, limit)
        return [(r["tenant_id"], r["run_id"]) for r in rows]

    async def renew(self, runs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Extends this executor's leases on `runs`; returns the runs whose cancellation was asked meanwhile."""
        by_tenant: dict[str, list[str]] = {}
        for tenant, run_id in runs:
            by_tenant.setdefault(tenant, []).append(run_id)
        cancel: set[tuple[str, str]] = set()
        for tenant, ids in by_tenant.items():
            async with tenant_tx(self.pool, tenant) as conn:
                await conn.execute(
                    """UPDATE executor.leases SET expires_at = now() + make_interval(secs => $4)
                       WHERE tenant_id = $1 AND run_id = ANY($2::text[]) AND owner = $3""",
                    tenant, ids, self.owner, self.lease_s)
                rows = await conn.fetch("""SELECT run_id FROM executor.runs WHERE tenant_id = $1
                                           AND run_id = ANY($2::text[]) AND cancel_requested""", tenant, ids)
            cancel.update((tenant, r["run_id"]) for r in rows)
        return cancel

    async def request_cancel(self, tenant: str, run_id: str) -> None:
        async with tenant_tx(self.pool, tenant) as conn:
            await conn.execute("UPDATE executor.runs SET cancel_requested = true, update_time = now() "
                               "WHERE tenant_id = $1 AND run_id = $2", tenant, run_id)

    async def release(self, run: Run) -> None:
        async with tenant_tx(self.pool, run.tenant) as conn:
            await conn.execute("DELETE FROM executor.leases WHERE tenant_id = $1 AND run_id = $2 AND owner = $3",
                               run.tenant, run.run_id, self.owner)

    # --- the runner's port ---------------------------------------------------------------------------------------
    async def _fence(self, conn: asyncpg.Connection, tenant: str, run_id: str) -> None:
        """Renews this executor's lease, holding its row until the transaction ends; LeaseLost if it is gone."""
        ok = await conn.fetchval(
            """UPDATE executor.leases SET expires_at = now() + make_interval(secs => $4)
               WHERE tenant_id = $1 AND run_id = $2 AND owner = $3 RETURNING true""",
            tenant, run_id, self.owner, self.lease_s)
        if not ok:
            raise LeaseLost(f"run {run_id} is no longer leased to this executor")

    async def save_run(self, run: Run) -> None:
        async with tenant_tx(self.pool, run.tenant) as conn:
            await self._fence(conn, run.tenant, run.run_id)
            await conn.execute(
                """UPDATE executor.runs SET status = $3, outcome = $4, plan = $5::jsonb, refused = $6,
                       usage = $7::jsonb, error = $8::jsonb, approval_expires_at = $9, dead_letter_id = $10,
                       update_time = now()
                   WHERE tenant_id = $1 AND run_id = $2""",
                run.tenant, run.run_id, run.status.value, run.outcome.value, _json(run.plan.to_dict()), run.refused,
                _json(run.usage.__dict__), _json(run.error.to_dict() if run.error else None),
                _ts(run.approval_deadline), run.dead_letter_id)
            if run.dead_letter_id and run.status.terminal and run.status is not RunStatus.DEAD_LETTERED:
                await conn.execute(
                    """UPDATE executor.dead_letters SET status = 'resolved', update_time = now()
                       WHERE tenant_id = $1 AND dead_letter_id = $2""", run.tenant, run.dead_letter_id)

    async def save_step(self, record: StepRecord) -> None:
        async with tenant_tx(self.pool, record.tenant) as conn:
            await self._fence(conn, record.tenant, record.run_id)
            await self._upsert_steps(conn, record.tenant, record.run_id, [record.step])

    async def _upsert_steps(self, conn: asyncpg.Connection, tenant: str, run_id: str,
                            steps: Iterable[StepState]) -> None:
        await conn.executemany(
            """INSERT INTO executor.steps (tenant_id, run_id, step_id, position, round, tool, effect, needs_approval,
                   approved, planned, depends_on, status, arguments, summary, error, attempts, idempotency_key,
                   start_time, end_time, vendor_wait_ms)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $13::jsonb, $14, $15::jsonb, $16,
                       $17, $18, $19, $20)
               ON CONFLICT (tenant_id, run_id, step_id) DO UPDATE SET approved = EXCLUDED.approved,
                   status = EXCLUDED.status, arguments = EXCLUDED.arguments, summary = EXCLUDED.summary,
                   error = EXCLUDED.error, attempts = EXCLUDED.attempts, idempotency_key = EXCLUDED.idempotency_key,
                   start_time = EXCLUDED.start_time, end_time = EXCLUDED.end_time,
                   vendor_wait_ms = EXCLUDED.vendor_wait_ms""",
            [(tenant, run_id, s.step_id, s.position, s.round, s.tool, s.effect.value, s.needs_approval, s.approved,
              _json(s.planned), list(s.depends_on), s.status.value, _json(s.arguments), s.summary,
              _json(s.error.to_dict() if s.error else None), s.attempts, s.idempotency_key, _ts(s.started_at),
              _ts(s.ended_at), None if s.vendor_wait_s is None else s.vendor_wait_s * 1000) for s in steps])

    async def dead_letter(self, run: Run) -> str:
        reason = run.error.message if run.error else "the run could not finish"
        async with tenant_tx(self.pool, run.tenant) as conn:
            await self._fence(conn, run.tenant, run.run_id)
            dead_letter_id = await conn.fetchval(
                """INSERT INTO executor.dead_letters (dead_letter_id, tenant_id, run_id, user_email, reason)
                   VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (tenant_id, run_id) DO UPDATE SET reason = EXCLUDED.reason, status = 'open',
                       update_time = now()
                   RETURNING dead_letter_id""",
                f"dl-{int(time.time() * 1000):013d}-{secrets.token_hex(4)}", run.tenant, run.run_id, run.user,
                reason)
        try:
            await self.redis.xadd(dlq_stream(run.tenant), {"dead_letter_id": dead_letter_id, "run_id": run.run_id,
                                                           "user": run.user, "reason": reason[:500]},
                                  maxlen=DLQ_STREAM_MAXLEN, approximate=True)
        except Exception:
            log.warning("dead letter %s stored, but its Redis notice failed", dead_letter_id, exc_info=True)
        return str(dead_letter_id)

    # --- reading -------------------------------------------------------------------------------------------------
    async def load(self, tenant: str, run_id: str) -> StoredRun | None:
        async with tenant_tx(self.pool, tenant) as conn:
            row = await conn.fetchrow(
                """SELECT r.*, l.owner AS lease_owner, l.expires_at AS lease_expires_at FROM executor.runs r
                   LEFT JOIN executor.leases l ON l.tenant_id = r.tenant_id AND l.run_id = r.run_id
                   WHERE r.tenant_id = $1 AND r.run_id = $2""", tenant, run_id)
            if row is None:
                return None
            steps = await conn.fetch("SELECT * FROM executor.steps WHERE tenant_id = $1 AND run_id = $2 "
                                     "ORDER BY position", tenant, run_id)
        run = Run(tenant, run_id, row["user_email"], row["request"], Plan.from_dict(_loads(row["plan"])),
                  status=RunStatus(row["status"]), outcome=Outcome(row["outcome"]),
                  error=StepError.from_dict(_loads(row["error"])), usage=Usage(**_loads(row["usage"])),
                  refused=row["refused"], max_replans=row["max_replans"], created_at=row["create_time"].timestamp(),
                  updated_at=row["update_time"].timestamp(), approval_deadline=_epoch(row["approval_expires_at"]),
                  dead_letter_id=row["dead_letter_id"])
        run.steps = {s["step_id"]: _step(s) for s in steps}
        return StoredRun(run, row["principal_token"], row["principal_expires_at"].timestamp(),
                         row["lease_owner"] or "", _epoch(row["lease_expires_at"]), row["cancel_requested"])

    async def find_dead_letters(self, *, dead_letter_id: str = "", tenant: str = "", before: str = "",
                                limit: int = 50) -> list[DeadLetter]:
        async with self.pool.acquire() as conn:
            where = await conn.fetch("SELECT dead_letter_id, tenant_id FROM executor.find_dead_letters($1, $2, $3, $4)",
                                     dead_letter_id, tenant, before, limit)
        found: dict[str, DeadLetter] = {}
        by_tenant: dict[str, list[str]] = {}
        for r in where:
            by_tenant.setdefault(r["tenant_id"], []).append(r["dead_letter_id"])
        for tenant_id, ids in by_tenant.items():
            async with tenant_tx(self.pool, tenant_id) as conn:
                rows = await conn.fetch("SELECT * FROM executor.dead_letters WHERE tenant_id = $1 "
                                        "AND dead_letter_id = ANY($2::text[])", tenant_id, ids)
            for r in rows:
                found[r["dead_letter_id"]] = DeadLetter(r["dead_letter_id"], r["tenant_id"], r["run_id"],
                                                        r["user_email"], r["reason"], r["status"],
                                                        r["replay_count"], r["create_time"].timestamp())
        return [found[r["dead_letter_id"]] for r in where if r["dead_letter_id"] in found]

    async def start_replay(self, dead_letter: DeadLetter) -> None:
        async with tenant_tx(self.pool, dead_letter.tenant) as conn:
            await self._fence(conn, dead_letter.tenant, dead_letter.run_id)
            await conn.execute(
                """UPDATE executor.dead_letters SET status = 'replaying', replay_count = replay_count + 1,
                       update_time = now() WHERE tenant_id = $1 AND dead_letter_id = $2""",
                dead_letter.tenant, dead_letter.dead_letter_id)


def _step(row: asyncpg.Record) -> StepState:
    return StepState(
        row["step_id"], row["tool"], Effect(row["effect"]), round=row["round"], position=row["position"],
        planned=_loads(row["planned"]) or {}, depends_on=tuple(row["depends_on"]),
        needs_approval=row["needs_approval"], status=StepStatus(row["status"]), arguments=_loads(row["arguments"]),
        summary=row["summary"], error=StepError.from_dict(_loads(row["error"])), attempts=row["attempts"],
        started_at=_epoch(row["start_time"]), ended_at=_epoch(row["end_time"]),
        idempotency_key=row["idempotency_key"], approved=row["approved"],
        vendor_wait_s=None if row["vendor_wait_ms"] is None else row["vendor_wait_ms"] / 1000)
