"""The secret stores: Vault KV v2 via the real hvac client against a local KV v2 server, and the embedded store."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import pytest
from aiohttp import web
from cryptography.fernet import Fernet
from google.protobuf import struct_pb2

from agentmesh.connector.v1 import connector_pb2
from agentmesh.registry.v1 import registry_pb2, registry_service_pb2, registry_service_pb2_grpc
from connectors.common.server import create_connector_server
from connectors.common.service import ActionResult, CallContext
from connectors.registry.config import RegistryConfig
from connectors.registry.secretstore import EmbeddedStore, VaultStore
from connectors.registry.server import create_registry_server
from mesh import client
from mesh.db import create_pool, migrate
from mesh.errors import MeshError, details_of
from mesh.principal import Minter

VAULT_TOKEN = "s.test-root-token"
MOUNT = "kv"


@dataclass
class KV2Server:
    """Vault's KV version 2 HTTP API as hvac calls it: versioned data, metadata delete, token header, 404s."""

    secrets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/v1/{mount}/{kind:data|metadata}/{path:.+}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        if request.headers.get("X-Vault-Token") != VAULT_TOKEN:
            return web.json_response({"errors": ["permission denied"]}, status=403)
        if request.match_info["mount"] != MOUNT:
            return web.json_response({"errors": [f"no handler for route '{request.match_info['mount']}'"]},
                                     status=404)
        path, kind = request.match_info["path"], request.match_info["kind"]
        if kind == "data" and request.method in ("POST", "PUT"):
            body = await request.json()
            versions = self.secrets.setdefault(path, [])
            versions.append(body["data"])
            return web.json_response({"data": {"created_time": "2026-01-01T00:00:00Z", "deletion_time": "",
                                               "destroyed": False, "version": len(versions)}})
        if kind == "data" and request.method == "GET":
            versions = self.secrets.get(path)
            if not versions:
                return web.json_response({"errors": []}, status=404)
            return web.json_response({"data": {"data": versions[-1], "metadata": {
                "created_time": "2026-01-01T00:00:00Z", "deletion_time": "", "destroyed": False,
                "version": len(versions)}}})
        if kind == "metadata" and request.method == "DELETE":
            self.secrets.pop(path, None)
            return web.Response(status=204)
        return web.json_response({"errors": ["unsupported"]}, status=405)


@pytest.fixture
async def vault():
    kv = KV2Server()
    runner = web.AppRunner(kv.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield kv, f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_vault_store_keeps_one_path_per_tenant_connector_and_user(vault) -> None:
    kv, url = vault
    store = VaultStore(url, VAULT_TOKEN, mount=MOUNT, prefix="agentmesh")
    try:
        await store.put("acme", "okta", "alice.nguyen@acme.example", {"token": "t1", "refresh_token": "r1"})
        await store.put("globex", "okta", "alice.nguyen@acme.example", {"token": "g1"})
        assert set(kv.secrets) == {"agentmesh/acme/okta/alice.nguyen@acme.example",
                                   "agentmesh/globex/okta/alice.nguyen@acme.example"}
        assert await store.get("acme", "okta", "alice.nguyen@acme.example") == {"token": "t1", "refresh_token": "r1"}
        await store.put("acme", "okta", "alice.nguyen@acme.example", {"token": "t2"})
        assert await store.get("acme", "okta", "alice.nguyen@acme.example") == {"token": "t2"}
        assert len(kv.secrets["agentmesh/acme/okta/alice.nguyen@acme.example"]) == 2  # KV v2 keeps versions
        assert await store.get("acme", "jira", "alice.nguyen@acme.example") is None
        await store.delete("acme", "okta", "alice.nguyen@acme.example")
        assert await store.get("acme", "okta", "alice.nguyen@acme.example") is None
        await store.delete("acme", "okta", "alice.nguyen@acme.example")  # deleting nothing is fine
        assert ("DELETE", f"/v1/{MOUNT}/metadata/agentmesh/acme/okta/alice.nguyen@acme.example") in kv.requests
        # A path cannot be steered out of its tenant's folder by what a subject contains.
        await store.put("acme", "okta", "../globex/x", {"token": "t"})
        assert "agentmesh/acme/okta/..%2Fglobex%2Fx" in kv.secrets
    finally:
        await store.close()


async def test_vault_refusing_the_token_is_unavailable_without_leaking_it(vault) -> None:
    _, url = vault
    store = VaultStore(url, "wrong-token", mount=MOUNT)
    try:
        with pytest.raises(MeshError) as info:
            await store.get("acme", "okta", "bob@acme.example")
        assert info.value.reason.value == "UPSTREAM_UNAVAILABLE" and "wrong-token" not in info.value.message
    finally:
        await store.close()


class TokenEcho:
    """A connector that records the credential each call presented (to see which store it came from)."""

    manifest: dict[str, Any] = {
        "connector": "echo", "version": "1", "display_name": "Echo",
        "actions": [{"name": "whoami", "description": "Says who called.", "effect": "READ", "scopes": [],
                     "examples": ["who am i", "whoami", "who is calling"],
                     "arguments_schema": {"type": "object", "properties": {}}, "result_schema": {"type": "object"}}],
    }

    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def invoke(self, ctx: CallContext) -> ActionResult:
        self.tokens.append(ctx.credential.token)
        return ActionResult({"user": ctx.principal.user if ctx.principal else ""}, "ok")

    async def close(self) -> None:
        return None


async def test_a_registry_on_vault_keeps_credentials_there(backing, keyring, minter: Minter, mesh_config, vault,
                                                           tmp_path) -> None:
    kv, url = vault
    echo = TokenEcho()
    connector = await create_connector_server(mesh_config, echo)
    config = RegistryConfig(state_dir=tmp_path, jwks_path=keyring.jwks_path, port=0, database_url=backing.app_dsn,
                            database_admin_url=backing.admin_dsn, secret_store="vault", vault_url=url,
                            vault_token=VAULT_TOKEN, vault_mount=MOUNT, watch_interval_s=3600, callback_port=None,
                            public_url="https://registry.example")
    registry = await create_registry_server(config)
    chan = client.channel(f"127.0.0.1:{registry.port}")
    stub = registry_service_pb2_grpc.RegistryServiceStub(chan)
    operator = client.metadata(minter.mint_operator("ops@agentmesh"))
    tenant = f"vault{uuid.uuid4().hex[:8]}"
    try:
        policy = struct_pb2.Struct()
        policy.update({"rules": [{"effect": "allow", "groups": ["Everyone"], "tools": ["echo.*"]}]})
        await stub.UpsertTenant(registry_service_pb2.UpsertTenantRequest(
            tenant=registry_pb2.Tenant(tenant_id=tenant, policy=policy)), metadata=operator, timeout=5)
        await stub.RegisterConnector(registry_service_pb2.RegisterConnectorRequest(
            registration=registry_pb2.ConnectorRegistration(
                tenant_id=tenant, connector="echo", endpoint=f"127.0.0.1:{connector.port}",
                oauth=registry_pb2.OAuthClient(authorize_url="http://127.0.0.1:9/authorize",
                                               token_url="http://127.0.0.1:9/token", client_id="agentmesh",
                                               client_secret="client-secret-value"))),
            metadata=operator, timeout=5)
        await stub.PutCredential(registry_service_pb2.PutCredentialRequest(
            tenant_id=tenant, connector="echo", user="ann@vault.example",
            credential=connector_pb2.Credential(kind=connector_pb2.CREDENTIAL_KIND_USER, token="ann-vault-token")),
            metadata=operator, timeout=5)
        assert kv.secrets[f"agentmesh/{tenant}/echo/ann@vault.example"][-1]["token"] == "ann-vault-token"
        assert kv.secrets[f"agentmesh/{tenant}/echo/_oauth_client"][-1] == {"client_secret": "client-secret-value"}
        ann = minter.mint_user(tenant, "ann@vault.example", ["Everyone"])
        answer = await stub.Invoke(registry_service_pb2.InvokeRequest(tool="echo.whoami"),
                                   metadata=client.metadata(ann), timeout=5)
        assert answer.result["user"] == "ann@vault.example" and echo.tokens == ["ann-vault-token"]
        admin = await asyncpg.connect(backing.admin_dsn)
        try:
            assert await admin.fetchval("SELECT count(*) FROM registry.secrets WHERE tenant_id = $1", tenant) == 0
        finally:
            await admin.close()
        # Unlinking removes the secret from Vault; the next call asks the user to link.
        await stub.UnlinkAccount(registry_service_pb2.UnlinkAccountRequest(connector="echo"),
                                 metadata=client.metadata(ann), timeout=5)
        assert f"agentmesh/{tenant}/echo/ann@vault.example" not in kv.secrets
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Invoke(registry_service_pb2.InvokeRequest(tool="echo.whoami"),
                              metadata=client.metadata(ann), timeout=5)
        details = details_of(info.value)
        assert details.reason == "ACCOUNT_NOT_LINKED"
        assert details.metadata["link_url"].startswith("http://127.0.0.1:9/authorize?")
        assert "redirect_uri=https%3A%2F%2Fregistry.example%2Foauth%2Fcallback" in details.metadata["link_url"]
    finally:
        await chan.close()
        await registry.stop(0)
        await connector.stop(0)


async def test_embedded_store_encrypts_at_rest_and_needs_its_key(backing) -> None:
    from pathlib import Path

    import connectors.registry.server as registry_server

    await migrate(backing.admin_dsn, "registry", Path(registry_server.__file__).parent / "migrations")
    pool = await create_pool(backing.app_dsn)
    key = Fernet.generate_key()
    store = EmbeddedStore(pool, key)
    tenant = f"emb{uuid.uuid4().hex[:8]}"
    try:
        await store.put(tenant, "okta", "kim@emb.example", {"token": "plain-token-value", "refresh_token": "r"})
        assert await store.get(tenant, "okta", "kim@emb.example") == {"token": "plain-token-value",
                                                                      "refresh_token": "r"}
        admin = await asyncpg.connect(backing.admin_dsn)
        try:
            stored = await admin.fetchval("SELECT ciphertext FROM registry.secrets WHERE tenant_id = $1", tenant)
        finally:
            await admin.close()
        assert b"plain-token-value" not in bytes(stored)
        assert Fernet(key).decrypt(bytes(stored))  # authenticated encryption under the configured key
        with pytest.raises(MeshError) as info:
            await EmbeddedStore(pool, Fernet.generate_key()).get(tenant, "okta", "kim@emb.example")
        assert "plain-token-value" not in info.value.message
        assert await store.get("someone-else", "okta", "kim@emb.example") is None
        await store.delete(tenant, "okta", "kim@emb.example")
        assert await store.get(tenant, "okta", "kim@emb.example") is None
    finally:
        await pool.close()


def test_the_embedded_key_defaults_to_a_private_key_file(tmp_path) -> None:
    config = RegistryConfig(state_dir=tmp_path)
    key = config.fernet_key()
    assert Fernet(key) and config.fernet_key() == key
    assert (tmp_path / "registry" / "secret.key").stat().st_mode & 0o077 == 0
    assert RegistryConfig(state_dir=tmp_path, secret_key=Fernet.generate_key().decode()).fernet_key() != key
