"""Tenants and their policies in PostgreSQL: validation of the policy document, upsert and read."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

import asyncpg
import jsonschema

from connectors.registry.policy import Policy

TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
CONNECTOR_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
DEFAULT_REQUEST_TIMEOUT = timedelta(seconds=5)
DEFAULT_AUDIT_RETENTION = timedelta(days=400)
DEFAULT_MEMORY_TTL = timedelta(days=90)
MIN_AUDIT_RETENTION = timedelta(days=1)

_NAMES = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 200}}
_SUBJECT = {"enum": ["self", "any"]}

# The shape of one tenant's entry of fixtures/policy.json (catalog.md, "Tenant policy"); `_`-keys are notes.
POLICY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["rules"],
    "properties": {
        "connectors": {"type": "array", "items": {"type": "string", "pattern": CONNECTOR_NAME.pattern}},
        "rules": {"type": "array", "maxItems": 500, "items": {
            "type": "object",
            "required": ["effect", "groups", "tools"],
            "properties": {"effect": {"enum": ["allow", "deny"]}, "groups": {**_NAMES, "minItems": 1},
                           "tools": {**_NAMES, "minItems": 1}, "subject": _SUBJECT},
            "patternProperties": {"^_": {}},
            "additionalProperties": False,
        }},
        "service_credential_actions": {"type": "object", "properties": {"tools": _NAMES, "subject": _SUBJECT},
                                       "patternProperties": {"^_": {}}, "additionalProperties": False},
        "confirm_before": _NAMES,
        "rate_limits": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
        "model_tiers": {"type": "object", "additionalProperties": {"type": "string"}},
        # The planner's per-tenant model limits (rate, daily token budget, downgrade); the planner validates them.
        "model_limits": {"type": "object"},
    },
    "patternProperties": {"^_": {}},
    "additionalProperties": False,
}
_POLICY_VALIDATOR = jsonschema.Draft202012Validator(POLICY_SCHEMA)


def policy_violations(document: Any, prefix: str = "tenant.policy") -> list[tuple[str, str]]:
    """Field violations of a policy document, with paths like `tenant.policy.rules[2].effect`."""
    out: list[tuple[str, str]] = []
    for error in sorted(_POLICY_VALIDATOR.iter_errors(document), key=lambda e: list(map(str, e.absolute_path))):
        out.append((prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path),
                    error.message))
    return out


@dataclass(frozen=True)
class Tenant:
    """One tenant as stored: identity, the policy document and its limits."""

    tenant_id: str
    policy_document: dict[str, Any]
    display_name: str = ""
    domain: str = ""
    request_timeout: timedelta = DEFAULT_REQUEST_TIMEOUT
    audit_retention: timedelta = DEFAULT_AUDIT_RETENTION
    memory_ttl: timedelta = DEFAULT_MEMORY_TTL
    slack_team_id: str = ""
    update_time: datetime | None = field(default=None, compare=False)

    @cached_property
    def policy(self) -> Policy:
        return Policy.from_dict(self.policy_document)


def tenant_violations(tenant: Tenant) -> list[tuple[str, str]]:
    """What is wrong with a tenant before it is stored."""
    out: list[tuple[str, str]] = []
    if not TENANT_ID.match(tenant.tenant_id):
        out.append(("tenant.tenant_id", "1-63 characters: lower-case letters, digits, '-' or '_'"))
    out += policy_violations(tenant.policy_document)
    if tenant.request_timeout <= timedelta(0) or tenant.request_timeout > timedelta(minutes=5):
        out.append(("tenant.request_timeout", "must be between 0 and 5 minutes"))
    if tenant.audit_retention < MIN_AUDIT_RETENTION:
        out.append(("tenant.audit_retention", "must be at least one day"))
    if tenant.memory_ttl <= timedelta(0):
        out.append(("tenant.memory_ttl", "must be positive"))
    return out


async def upsert_tenant(conn: asyncpg.Connection, tenant: Tenant) -> Tenant:
    """Creates or replaces the tenant (the connection's transaction is scoped to that tenant)."""
    row = await conn.fetchrow(
        """INSERT INTO registry.tenants (tenant_id, display_name, domain, policy, request_timeout_ms,
                                         audit_retention, memory_ttl, slack_team_id)
           VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8)
           ON CONFLICT (tenant_id) DO UPDATE SET
             display_name = EXCLUDED.display_name, domain = EXCLUDED.domain, policy = EXCLUDED.policy,
             request_timeout_ms = EXCLUDED.request_timeout_ms, audit_retention = EXCLUDED.audit_retention,
             memory_ttl = EXCLUDED.memory_ttl, slack_team_id = EXCLUDED.slack_team_id,
             update_time = CASE WHEN (tenants.display_name, tenants.domain, tenants.policy, tenants.request_timeout_ms,
                                      tenants.audit_retention, tenants.memory_ttl, tenants.slack_team_id)
                                     IS DISTINCT FROM
                                     (EXCLUDED.display_name, EXCLUDED.domain, EXCLUDED.policy,
                                      EXCLUDED.request_timeout_ms, EXCLUDED.audit_retention, EXCLUDED.memory_ttl,
                                      EXCLUDED.slack_team_id)
                                THEN now() ELSE tenants.update_time END
           RETURNING *""",
        tenant.tenant_id, tenant.display_name, tenant.domain, json.dumps(tenant.policy_document),
        int(tenant.request_timeout.total_seconds() * 1000), tenant.audit_retention, tenant.memory_ttl,
        tenant.slack_team_id)
    return _tenant(row)


async def get_tenant(conn: asyncpg.Connection, tenant_id: str) -> Tenant | None:
    row = await conn.fetchrow("SELECT * FROM registry.tenants WHERE tenant_id = $1", tenant_id)
    return _tenant(row) if row is not None else None


async def tenant_ids(conn: asyncpg.Connection) -> list[str]:
    """Every tenant id (ids only; each tenant's rows stay behind row-level security)."""
    return [r[0] for r in await conn.fetch("SELECT registry.tenant_ids()")]


def _tenant(row: asyncpg.Record) -> Tenant:
    return Tenant(tenant_id=row["tenant_id"], policy_document=json.loads(row["policy"]),
                  display_name=row["display_name"], domain=row["domain"],
                  request_timeout=timedelta(milliseconds=row["request_timeout_ms"]),
                  audit_retention=row["audit_retention"], memory_ttl=row["memory_ttl"],
                  slack_team_id=row["slack_team_id"], update_time=row["update_time"])
