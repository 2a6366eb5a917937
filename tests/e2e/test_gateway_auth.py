"""Who may call the gateway: every authentication failure, an IdP's JWT, and per-tenant rate limits."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from agentmesh.agent.v1 import agent_service_pb2 as pb
from agentmesh.common.v1 import common_pb2
from agentmesh.registry.v1 import registry_pb2, registry_service_pb2, registry_service_pb2_grpc
from gateway.client import AgentClient
from gateway.idp import IdentityProvider, IdentityProviders
from gateway.keys import KeyStore
from mesh import client as mesh_client
from mesh.db import create_pool
from mesh.errors import ErrorDetails, details_of
from tests.e2e.conftest import Mesh

ALICE = "alice.nguyen@acme.example"
ISSUER, AUDIENCE = "https://idp.acme.example", "agentmesh"


async def refused(client: AgentClient, text: str = "Who is my manager?", **who: str) -> ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _event in client.converse(pb.ConverseRequest(text=text), timeout_s=10, **who):
            pass
    return details_of(info.value)


def _jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    import json

    jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "alg": "RS256", "use": "sig"})
    return jwk


def _token(key: rsa.RSAPrivateKey, kid: str, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "email": ALICE, "iat": now, "exp": now + 300, **claims}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
async def acme_idp(mesh: Mesh) -> dict[str, Any]:
    """acme's identity provider (an inline JWKS) and an API key that may not assert users."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pool = await create_pool(mesh.app_dsn, min_size=1, max_size=2)
    providers = IdentityProviders(pool)
    await providers.put(IdentityProvider("acme", ISSUER, AUDIENCE, {"keys": [_jwk(key, "idp-1")]}))
    _record, plain_key = await KeyStore(pool).create("acme", description="e2e: user tokens only")
    await providers.close()
    await pool.close()
    return {"key": key, "api_key": plain_key}


async def test_a_user_token_from_the_tenants_idp_proves_the_user(mesh: Mesh, acme_idp: dict[str, Any]) -> None:
    async with mesh.client(api_key=acme_idp["api_key"]) as c:
        turn = await c.turn("Who is my manager?", user_token=_token(acme_idp["key"], "idp-1"))
    assert turn.failure is None and turn.final is not None
    assert turn.final.outcome == common_pb2.OUTCOME_ANSWERED and "Carol Diaz" in turn.final.text


async def test_every_authentication_failure_is_unauthenticated_with_its_cause(mesh: Mesh,
                                                                             acme_idp: dict[str, Any]) -> None:
    idp_key, plain_key = acme_idp["key"], acme_idp["api_key"]
    acme_key = mesh.endpoints["api_keys"]["acme"]
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases: list[tuple[str, AgentClient, dict[str, str]]] = [
        ("missing_api_key", mesh.client(api_key=""), {"user": ALICE}),
        ("invalid_api_key", mesh.client(api_key=acme_key[:-4] + "AAAA"), {"user": ALICE}),
        ("invalid_api_key", mesh.client(api_key="not-a-key"), {"user": ALICE}),
        ("unknown_user", mesh.client("globex"), {"user": ALICE}),  # globex's key asserting an acme user
        ("unknown_user", mesh.client(), {"user": "nobody@acme.example"}),
        ("assertion_not_allowed", mesh.client(api_key=plain_key), {"user": ALICE}),
        ("missing_user", mesh.client(), {}),
        ("invalid_user_token", mesh.client(api_key=plain_key), {"user_token": "not.a.jwt"}),
        ("invalid_user_token", mesh.client(api_key=plain_key), {"user_token": _token(other_key, "idp-1")}),
        ("invalid_user_token", mesh.client(api_key=plain_key),
         {"user_token": _token(idp_key, "idp-1", exp=int(time.time()) - 600)}),
        ("invalid_user_token", mesh.client(api_key=plain_key), {"user_token": _token(idp_key, "idp-1",
                                                                                    aud="someone-else")}),
        ("invalid_user_token", mesh.client("globex"), {"user_token": _token(idp_key, "idp-1")}),  # no globex IdP
        ("unknown_user", mesh.client(api_key=plain_key),
         {"user_token": _token(idp_key, "idp-1", email="ghost@acme.example")}),
    ]
    for cause, client, who in cases:
        try:
            details = await refused(client, **who)
        finally:
            await client.close()
        assert details.code == grpc.StatusCode.UNAUTHENTICATED, (cause, details)
        assert details.reason == "PRINCIPAL_INVALID" and details.metadata.get("cause") == cause, (cause, details)
    # Refusals of a known tenant are in its audit log.
    operator = mesh.minter.mint_operator("e2e@agentmesh", tenant="acme")
    async with mesh_client.channel(mesh.endpoints["services"]["registry"]) as chan:
        stub = registry_service_pb2_grpc.RegistryServiceStub(chan)
        rows: list[registry_pb2.AuditEvent] = []
        for _ in range(50):  # audit rows are written off the request path
            answer = await stub.ListAuditEvents(registry_service_pb2.ListAuditEventsRequest(
                tenant_id="acme", page_size=1000), metadata=mesh_client.metadata(operator), timeout=5)
            rows = [e for e in answer.events if e.kind == "request_refused"]
            if any(r.user == "nobody@acme.example" for r in rows):
                break
            await asyncio.sleep(0.1)
    causes = {r.detail.fields["cause"].string_value for r in rows}
    assert {"unknown_user", "assertion_not_allowed", "invalid_user_token"} <= causes


async def test_bad_requests_are_invalid_argument_with_field_details(mesh: Mesh) -> None:
    async with mesh.client() as c:
        blank = await refused(c, "   ", user=ALICE)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in c.converse(pb.ConverseRequest(text="yes", confirmation=pb.Confirmation(
                    run_id="r1", step_id="s1", approved=True)), user=ALICE):
                pass
        both = details_of(info.value)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in c.converse(pb.ConverseRequest(text="hi", session_id="bad session id!"), user=ALICE):
                pass
        bad_session = details_of(info.value)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in c.converse(pb.ConverseRequest(confirmation=pb.Confirmation(run_id="r1")), user=ALICE):
                pass
        no_step = details_of(info.value)
    assert both.code == grpc.StatusCode.INVALID_ARGUMENT and both.field_violations[0][0] == "text"
    assert blank.code == grpc.StatusCode.INVALID_ARGUMENT and blank.field_violations[0][0] == "text"
    assert bad_session.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in bad_session.field_violations] == ["session_id"]
    assert ("confirmation.step_id", "is required") in no_step.field_violations


async def test_a_tenant_over_its_rate_is_refused_with_retry_info_and_others_are_not(mesh: Mesh) -> None:
    operator = mesh.minter.mint_operator("e2e@agentmesh")
    policy: dict[str, Any] = {"connectors": [], "rules": [], "rate_limits": {"tenant_rps": 2, "user_per_minute": 600}}
    tenant = registry_pb2.Tenant(tenant_id="noisy", display_name="Noisy Inc", domain="noisy.example")
    tenant.policy.update(policy)
    async with mesh_client.channel(mesh.endpoints["services"]["registry"]) as chan:
        stub = registry_service_pb2_grpc.RegistryServiceStub(chan)
        meta = mesh_client.metadata(operator)
        await stub.UpsertTenant(registry_service_pb2.UpsertTenantRequest(tenant=tenant), metadata=meta, timeout=5)
        await stub.ImportDirectory(registry_service_pb2.ImportDirectoryRequest(tenant_id="noisy", people=[
            common_pb2.Person(email="nora@noisy.example", name="Nora Noise", first_name="Nora", last_name="Noise",
                              groups=["Everyone"])]), metadata=meta, timeout=5)
    pool = await create_pool(mesh.app_dsn, min_size=1, max_size=2)
    _record, noisy_key = await KeyStore(pool).create("noisy", assert_users=True, description="e2e")
    await pool.close()

    async def one(client: AgentClient, user: str) -> tuple[str, ErrorDetails | None]:
        turn = await client.turn("What groups am I in?", user=user, timeout_s=20)
        if turn.failure is None:
            return "ok", None
        return turn.failure.reason, None if turn.failure.reason != "RATE_LIMITED" else ErrorDetails(
            grpc.StatusCode.RESOURCE_EXHAUSTED, turn.failure.message, turn.failure.reason,
            metadata=turn.failure.metadata, retry_after_s=turn.failure.retry_after_s)

    async with mesh.client(api_key=noisy_key) as noisy, mesh.client() as acme:
        burst = await asyncio.gather(*(one(noisy, "nora@noisy.example") for _ in range(8)),
                                     *(one(acme, ALICE) for _ in range(3)))
    noisy_results, acme_results = burst[:8], burst[8:]
    limited = [d for reason, d in noisy_results if reason == "RATE_LIMITED"]
    assert limited, noisy_results
    assert all(d is not None and d.retry_after_s is not None and d.retry_after_s > 0 for d in limited)
    assert all(d is not None and d.metadata.get("limit") == "tenant_rps" for d in limited)
    assert sum(1 for reason, _ in noisy_results if reason == "ok") >= 1
    assert [reason for reason, _ in acme_results] == ["ok", "ok", "ok"]
