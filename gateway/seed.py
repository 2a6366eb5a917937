"""Seeds the local stack's gateway: an asserting API key per demo tenant, recorded in the endpoints file."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from gateway.keys import KeyStore
from gateway.server import MIGRATIONS, SCHEMA
from mesh.db import create_pool, migrate
from mesh.principal import Minter

log = logging.getLogger("agentmesh.gateway.seed")
DEMO_TENANTS = ("acme", "globex")
DESCRIPTION = "local stack: ask, chat and eval"


async def ensure_keys(database_url: str, admin_url: str, tenants: tuple[str, ...],
                      known: dict[str, str]) -> dict[str, str]:
    """An asserting API key per tenant: the known one when it is still valid, else a new one."""
    await migrate(admin_url, SCHEMA, MIGRATIONS)
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        store = KeyStore(pool, cache_ttl_s=0)
        keys: dict[str, str] = {}
        for tenant in tenants:
            current = known.get(tenant, "")
            found = await store.verify(current) if current else None
            if found is not None and found.tenant == tenant and found.assert_users:
                keys[tenant] = current
                continue
            # The endpoints file lost the old key (a fresh `agentmesh up`): retire the stack's earlier keys.
            for old in await store.list(tenant):
                if old.description == DESCRIPTION and old.revoked is None:
                    await store.revoke(tenant, old.key_id)
            _key, plaintext = await store.create(tenant, assert_users=True, description=DESCRIPTION)
            keys[tenant] = plaintext
        return keys
    finally:
        await pool.close()


def record_keys(path: Path, keys: dict[str, str]) -> None:
    """Read-modify-write of the endpoints file (0600 once it holds keys)."""
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault("api_keys", {}).update(keys)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.chmod(tmp, 0o600)
    tmp.replace(path)


async def seed_demo(endpoints: dict[str, Any], minter: Minter) -> None:
    """Creates (or keeps) the demo tenants' asserting API keys and records them in the endpoints."""
    keys = await ensure_keys(endpoints["database_url"], endpoints["database_admin_url"], DEMO_TENANTS,
                             dict(endpoints.get("api_keys") or {}))
    endpoints.setdefault("api_keys", {}).update(keys)
    if endpoints.get("state_dir"):
        record_keys(Path(endpoints["state_dir"]) / "endpoints.json", keys)
    log.info("gateway API keys ready", extra={"fields": {"tenants": sorted(keys)}})
