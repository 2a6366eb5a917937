"""Connector registrations per tenant in PostgreSQL: endpoint, instance settings, OAuth client, fetched manifest."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from connectors.registry.catalog import Tool, manifest_digest, tools_of


@dataclass(frozen=True)
class Instance:
    """The tenant's instance settings passed to the connector on every call."""

    base_url: str = ""
    cloud_id: str = ""
    instance_url: str = ""
    api_version: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OAuthSettings:
    """The vendor's OAuth endpoints and client id for account linking (the secret lives in the secret store)."""

    authorize_url: str = ""
    token_url: str = ""
    client_id: str = ""
    scopes: tuple[str, ...] = ()
    revoke_url: str = ""

    @property
    def configured(self) -> bool:
        return bool(self.authorize_url and self.token_url and self.client_id)


@dataclass(frozen=True)
class Registration:
    """One connector endpoint registered for a tenant, with the manifest last fetched from it."""

    tenant_id: str
    connector: str
    endpoint: str
    instance: Instance
    oauth: OAuthSettings
    manifest: dict[str, Any]
    manifest_version: str
    manifest_digest: str
    healthy: bool = True
    update_time: datetime | None = None
    service_credential: bool = False

    @property
    def tools(self) -> tuple[Tool, ...]:
        return tools_of(self.manifest, self.manifest_digest)

    def tool(self, name: str) -> Tool | None:
        for tool in self.tools:
            if tool.name == name:
                return tool
        return None


async def upsert_registration(conn: asyncpg.Connection, tenant: str, connector: str, endpoint: str,
                              instance: Instance, oauth: OAuthSettings, manifest: dict[str, Any]) -> Registration:
    digest = manifest_digest(manifest)
    row = await conn.fetchrow(
        """INSERT INTO registry.connectors (tenant_id, connector, endpoint, instance, oauth, manifest,
                                            manifest_version, manifest_digest, healthy, checked_at)
           VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6::jsonb, $7, $8, true, now())
           ON CONFLICT (tenant_id, connector) DO UPDATE SET
             endpoint = EXCLUDED.endpoint, instance = EXCLUDED.instance, oauth = EXCLUDED.oauth,
             manifest = EXCLUDED.manifest, manifest_version = EXCLUDED.manifest_version,
             manifest_digest = EXCLUDED.manifest_digest, healthy = true, checked_at = now(),
             update_time = CASE WHEN (connectors.endpoint, connectors.instance, connectors.oauth,
                                      connectors.manifest_digest) IS DISTINCT FROM
                                     (EXCLUDED.endpoint, EXCLUDED.instance, EXCLUDED.oauth, EXCLUDED.manifest_digest)
                                THEN now() ELSE connectors.update_time END
           RETURNING *""",
        tenant, connector, endpoint, json.dumps(asdict(instance)), json.dumps(_oauth_doc(oauth)),
        json.dumps(manifest), str(manifest.get("version", "")), digest)
    return _registration(row)


# Manifests by digest: a registration row's manifest is only transferred and parsed when it is new here.
_MANIFESTS: dict[str, dict[str, Any]] = {}
_COLUMNS = """tenant_id, connector, endpoint, instance, oauth, manifest_version, manifest_digest, healthy,
              update_time, CASE WHEN manifest_digest = ANY($2::text[]) THEN NULL ELSE manifest END AS manifest,
              EXISTS (SELECT 1 FROM registry.links l WHERE l.tenant_id = connectors.tenant_id
                      AND l.connector = connectors.connector AND l.kind = 'service') AS service_credential"""


async def list_registrations(conn: asyncpg.Connection, tenant: str) -> list[Registration]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM registry.connectors "  # noqa: S608 - constant columns
                            "WHERE tenant_id = $1 ORDER BY connector", tenant, list(_MANIFESTS))
    return [_registration(r) for r in rows]


async def get_registration(conn: asyncpg.Connection, tenant: str, connector: str) -> Registration | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM registry.connectors "  # noqa: S608 - constant columns
                              "WHERE tenant_id = $1 AND connector = $3", tenant, list(_MANIFESTS), connector)
    return _registration(row) if row is not None else None


async def delete_registration(conn: asyncpg.Connection, tenant: str, connector: str) -> bool:
    status = await conn.execute("DELETE FROM registry.connectors WHERE tenant_id = $1 AND connector = $2",
                                tenant, connector)
    return status.endswith(" 1")


async def record_check(conn: asyncpg.Connection, tenant: str, connector: str, endpoint: str, healthy: bool,
                       manifest: dict[str, Any] | None) -> None:
    """Stores a health observation and, when the connector changed version, its new manifest."""
    if manifest is None:
        await conn.execute("""UPDATE registry.connectors SET healthy = $4, checked_at = now()
                              WHERE tenant_id = $1 AND connector = $2 AND endpoint = $3""",
                           tenant, connector, endpoint, healthy)
        return
    await conn.execute(
        """UPDATE registry.connectors SET healthy = $4, checked_at = now(), manifest = $5::jsonb,
                  manifest_version = $6, manifest_digest = $7, update_time = now()
           WHERE tenant_id = $1 AND connector = $2 AND endpoint = $3""",
        tenant, connector, endpoint, healthy, json.dumps(manifest), str(manifest.get("version", "")),
        manifest_digest(manifest))


def _oauth_doc(oauth: OAuthSettings) -> dict[str, Any]:
    doc = asdict(oauth)
    doc["scopes"] = list(oauth.scopes)
    return doc


def _registration(row: asyncpg.Record) -> Registration:
    instance = json.loads(row["instance"])
    oauth = json.loads(row["oauth"])
    digest = row["manifest_digest"]
    if row["manifest"] is not None:
        manifest = _MANIFESTS.setdefault(digest, json.loads(row["manifest"]))
    else:
        manifest = _MANIFESTS[digest]
    scopes = tuple(oauth.pop("scopes", ()) or ())
    return Registration(
        tenant_id=row["tenant_id"], connector=row["connector"], endpoint=row["endpoint"],
        instance=Instance(**{k: v for k, v in instance.items() if k in Instance.__dataclass_fields__}),
        oauth=OAuthSettings(scopes=scopes, **{k: str(v) for k, v in oauth.items()
                                              if k in OAuthSettings.__dataclass_fields__}),
        manifest=manifest, manifest_version=row["manifest_version"], manifest_digest=digest,
        healthy=row["healthy"], update_time=row["update_time"],
        service_credential=bool(row.get("service_credential", False)))
