"""Seeds the demo tenants through the registry's admin RPCs: policies, directories, connectors, linked tokens."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from agentmesh.common.v1 import common_pb2
from agentmesh.connector.v1 import connector_pb2
from agentmesh.registry.v1 import registry_pb2, registry_service_pb2, registry_service_pb2_grpc
from connectors.common.sandbox import (
    ADMIN_PREFIX,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    VendorSandbox,
    fixtures_dir,
    load_fixtures,
)
from connectors.registry.directory import person_from_fixture
from mesh import client
from mesh.principal import Minter

log = logging.getLogger("agentmesh.registry.seed")
DEMO_TENANTS = ("acme", "globex")
RPC_TIMEOUT_S = 10.0
SALESFORCE_API_VERSION = "v60.0"
SERVICE_SCHEME = {"okta": "SSWS"}


def sandbox_class(vendor: str) -> type[VendorSandbox]:
    """The vendor's sandbox class (for its OAuth paths)."""
    module = importlib.import_module(f"connectors.{vendor}.sandbox")
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, VendorSandbox) and value.vendor == vendor:
            return value
    raise LookupError(f"connectors.{vendor}.sandbox defines no sandbox for {vendor}")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def registration(tenant: str, vendor: str, endpoint: str, base_url: str,
                 fixture: dict[str, Any]) -> registry_pb2.ConnectorRegistration:
    """The registration of one sandboxed connector for one tenant, with the sandbox's OAuth client."""
    sandbox = sandbox_class(vendor)
    origin = _origin(base_url)
    instance = connector_pb2.InstanceSettings(base_url=base_url)
    if vendor == "jira":
        instance.cloud_id = fixture["jira"]["cloud_id"]
    if vendor == "salesforce":
        instance.instance_url = base_url
        instance.api_version = SALESFORCE_API_VERSION
    oauth = registry_pb2.OAuthClient(authorize_url=origin + sandbox.oauth_authorize_path,
                                     token_url=origin + sandbox.oauth_token_path, client_id=SANDBOX_CLIENT_ID,
                                     client_secret=SANDBOX_CLIENT_SECRET, revoke_url=f"{origin}{ADMIN_PREFIX}/revoke")
    return registry_pb2.ConnectorRegistration(tenant_id=tenant, connector=vendor, endpoint=endpoint,
                                              instance=instance, oauth=oauth)


def tenant_message(tenant: str, fixture: dict[str, Any], policy: dict[str, Any]) -> registry_pb2.Tenant:
    info = fixture["tenant"]
    document = struct_pb2.Struct()
    document.update(policy)
    return registry_pb2.Tenant(tenant_id=tenant, display_name=info.get("name", tenant), domain=info.get("domain", ""),
                               policy=document, slack_team_id=info.get("slack_team_id") or "",
                               request_timeout=duration_pb2.Duration(seconds=5))


async def _sandbox_token(http: aiohttp.ClientSession, origin: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(f"{origin}{ADMIN_PREFIX}/tokens", json=body) as resp:
        resp.raise_for_status()
        answer: dict[str, Any] = await resp.json()
    return answer


def _needs_service_credential(policy: dict[str, Any], vendor: str) -> bool:
    tools = (policy.get("service_credential_actions") or {}).get("tools", [])
    return any(str(t).split(".", 1)[0] == vendor for t in tools)


async def seed_demo(endpoints: dict[str, Any], minter: Minter) -> None:
    """Upserts acme and globex with their policies and directories, registers the connectors each policy enables,
    links every demo user with a sandbox-issued token and stores the Okta service credential.

    Running it again leaves tenants, policies, directories and registrations as they were (no update) and every
    user linked once; the sandbox tokens are issued afresh each run, because a restarted sandbox (same ports)
    has forgotten the tokens it issued before and a stored token cannot be checked without using it."""
    fixtures = load_fixtures(DEMO_TENANTS)
    policies = json.loads((fixtures_dir() / "policy.json").read_text())
    operator = minter.mint_operator("seed@agentmesh")
    async with client.channel(endpoints["services"]["registry"]) as chan, aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=RPC_TIMEOUT_S)) as http:
        stub = registry_service_pb2_grpc.RegistryServiceStub(chan)
        meta = client.metadata(operator)
        for tenant in DEMO_TENANTS:
            fixture, policy = fixtures[tenant], policies[tenant]
            await stub.UpsertTenant(registry_service_pb2.UpsertTenantRequest(
                tenant=tenant_message(tenant, fixture, policy)), metadata=meta, timeout=RPC_TIMEOUT_S)
            people = [person_from_fixture(u) for u in fixture["users"]]
            await stub.ImportDirectory(registry_service_pb2.ImportDirectoryRequest(tenant_id=tenant, people=[
                common_pb2.Person(email=p.email, name=p.name, first_name=p.first_name, last_name=p.last_name,
                                  groups=list(p.groups), title=p.title, department=p.department, manager=p.manager,
                                  system_ids=p.system_ids) for p in people]), metadata=meta, timeout=RPC_TIMEOUT_S)
            for vendor in policy.get("connectors", []):
                endpoint = endpoints["services"].get(f"connector-{vendor}")
                base_url = endpoints.get("sandboxes", {}).get(vendor, {}).get(tenant)
                if not endpoint or not base_url:
                    log.warning("no %s connector or sandbox for %s; not registered", vendor, tenant)
                    continue
                await stub.RegisterConnector(registry_service_pb2.RegisterConnectorRequest(
                    registration=registration(tenant, vendor, endpoint, base_url, fixture)), metadata=meta,
                    timeout=RPC_TIMEOUT_S)
                origin = _origin(base_url)
                await asyncio.gather(*(_link(stub, meta, http, origin, tenant, vendor, p.email) for p in people))
                if _needs_service_credential(policy, vendor):
                    token = await _sandbox_token(http, origin, {"tenant": tenant, "service": True})
                    await stub.PutCredential(registry_service_pb2.PutCredentialRequest(
                        tenant_id=tenant, connector=vendor, credential=connector_pb2.Credential(
                            kind=connector_pb2.CREDENTIAL_KIND_SERVICE, token=token["access_token"],
                            scheme=SERVICE_SCHEME.get(vendor, "Bearer"),
                            service_identity=f"agentmesh-service@{tenant}")), metadata=meta, timeout=RPC_TIMEOUT_S)


async def _link(stub: registry_service_pb2_grpc.RegistryServiceStub, meta: Any, http: aiohttp.ClientSession,
                origin: str, tenant: str, vendor: str, email: str) -> None:
    """Stores a sandbox-issued token for the user, as if they had linked their account."""
    token = await _sandbox_token(http, origin, {"tenant": tenant, "user": email})
    await stub.PutCredential(_user_credential(tenant, vendor, email, token), metadata=meta, timeout=RPC_TIMEOUT_S)


def _user_credential(tenant: str, vendor: str, email: str,
                     token: dict[str, Any]) -> registry_service_pb2.PutCredentialRequest:
    expire = timestamp_pb2.Timestamp()
    expire.FromSeconds(int(time.time() + float(token.get("expires_in", 3600))))
    return registry_service_pb2.PutCredentialRequest(
        tenant_id=tenant, connector=vendor, user=email,
        credential=connector_pb2.Credential(kind=connector_pb2.CREDENTIAL_KIND_USER, token=token["access_token"],
                                            scheme="Bearer"),
        refresh_token=token.get("refresh_token", ""), expire_time=expire,
        scopes=str(token.get("scope") or "").split())
