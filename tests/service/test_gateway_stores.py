"""The gateway's stores on real PostgreSQL and Redis: keys, IdPs, Slack installs, rate limits, runs."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import jwt
import pytest
import redis.asyncio as redis
from aiohttp import web
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.channels.slack_store import SlackInstallations
from gateway.idp import IdentityProvider, IdentityProviders, UserTokenError
from gateway.keys import KeyStore
from gateway.ratelimit import Limits, RateLimiter
from gateway.runlog import ENDED, RUNNING, RunLog, RunMeta, RunWriter
from gateway.server import MIGRATIONS, SCHEMA
from mesh.db import create_pool, migrate, tenant_tx


@pytest.fixture(scope="module")
async def pool(backing) -> AsyncIterator[asyncpg.Pool]:
    await migrate(backing.admin_dsn, SCHEMA, MIGRATIONS)
    created = await create_pool(backing.app_dsn, min_size=1, max_size=4)
    yield created
    await created.close()


@pytest.fixture
async def cache(backing) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(backing.redis_url)
    yield client
    await client.aclose()


def tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def test_a_key_verifies_only_whole_and_only_its_digest_is_stored(pool: asyncpg.Pool) -> None:
    store = KeyStore(pool, cache_ttl_s=60)
    t = tenant()
    key, plaintext = await store.create(t, assert_users=True, description="ci")
    assert (await store.verify(plaintext)) == key
    assert await store.verify(plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None
    assert await store.verify(plaintext.replace(f".{t}.", ".other.")) is None
    async with tenant_tx(pool, t) as conn:
        row = await conn.fetchrow("SELECT * FROM gateway.api_keys WHERE key_id = $1", key.key_id)
    assert row is not None and plaintext.encode() not in bytes(row["digest"]) and len(row["digest"]) == 32
    assert plaintext not in json.dumps({k: str(v) for k, v in dict(row).items()})
    assert await store.revoke(t, key.key_id)
    assert await store.verify(plaintext) is None  # this process drops its cache entry at once


async def test_row_level_security_hides_other_tenants_keys(pool: asyncpg.Pool) -> None:
    store = KeyStore(pool)
    a, b = tenant(), tenant()
    await store.create(a)
    async with tenant_tx(pool, b) as conn:
        assert await conn.fetchval("SELECT count(*) FROM gateway.api_keys WHERE tenant_id = $1", a) == 0
    async with pool.acquire() as conn:  # no tenant set: no rows at all
        assert await conn.fetchval("SELECT count(*) FROM gateway.api_keys") == 0
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_tx(pool, b) as conn:
            await conn.execute("INSERT INTO gateway.api_keys (tenant_id, key_id, digest) VALUES ($1, $2, $3)", a,
                               "0123456789abcdef", b"x" * 32)


async def _jwks_server(jwks: dict[str, Any]) -> tuple[web.AppRunner, str, list[int]]:
    hits: list[int] = []

    async def serve(request: web.Request) -> web.Response:
        hits.append(1)
        return web.json_response(jwks)

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/.well-known/jwks.json", hits


def _ed_jwk(key: Ed25519PrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": "EdDSA", "use": "sig"}


async def test_user_tokens_verify_against_a_fetched_jwks_and_rotation_refetches(pool: asyncpg.Pool) -> None:
    first, second = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    jwks: dict[str, Any] = {"keys": [_ed_jwk(first, "k1")]}
    runner, url, hits = await _jwks_server(jwks)
    providers = IdentityProviders(pool)
    t = tenant()
    try:
        await providers.put(IdentityProvider(t, "https://idp.example", "agentmesh", jwks_url=url,
                                             email_claim="upn"))
        now = int(time.time())
        claims = {"iss": "https://idp.example", "aud": "agentmesh", "upn": "Dana@X.example", "exp": now + 60}
        token = jwt.encode(claims, first, algorithm="EdDSA", headers={"kid": "k1"})
        assert await providers.verify(t, token) == "dana@x.example"
        assert await providers.verify(t, token) == "dana@x.example" and len(hits) == 1  # keys cached
        jwks["keys"].append(_ed_jwk(second, "k2"))  # the IdP rotates
        rotated = jwt.encode(claims, second, algorithm="EdDSA", headers={"kid": "k2"})
        assert await providers.verify(t, rotated) == "dana@x.example" and len(hits) == 2
        with pytest.raises(UserTokenError, match="algorithm"):
            await providers.verify(t, jwt.encode(claims, "shared-secret-of-32-bytes-or-more!!", algorithm="HS256"))
        with pytest.raises(UserTokenError, match="no identity provider"):
            await providers.verify(tenant(), token)
    finally:
        await providers.close()
        await runner.cleanup()


async def test_slack_workspaces_map_to_one_tenant_and_tokens_are_encrypted(pool: asyncpg.Pool) -> None:
    store = SlackInstallations(pool, Fernet.generate_key())
    t, other, team = tenant(), tenant(), f"T{uuid.uuid4().hex[:8].upper()}"
    await store.install(t, team, "xoxb-secret-token", bot_user_id="UBOT", bot_id="BBOT")
    assert await store.tenant_of(team) == t and await store.tenant_of("TNOPE") is None
    bot = await store.async_find_bot(enterprise_id=None, team_id=team)
    assert bot is not None and bot.bot_token == "xoxb-secret-token" and bot.bot_user_id == "UBOT"
    async with tenant_tx(pool, t) as conn:
        stored = await conn.fetchval("SELECT bot_token FROM gateway.slack_installations WHERE team_id = $1", team)
    assert b"xoxb-secret-token" not in bytes(stored)
    with pytest.raises(ValueError, match="another tenant"):
        await store.install(other, team, "xoxb-hijack")


async def test_rate_limits_admit_a_burst_then_refuse_with_retry_after_per_tenant(cache: redis.Redis) -> None:
    limiter = RateLimiter(cache)
    noisy, quiet = tenant(), tenant()
    limits = Limits(tenant_rps=5, user_per_minute=1000)
    verdicts = [await limiter.admit(noisy, f"u{i}@x.example", limits) for i in range(8)]
    assert [v.allowed for v in verdicts[:5]] == [True] * 5
    refused = [v for v in verdicts[5:] if not v.allowed]
    assert refused and all(v.limit == "tenant_rps" and 0 < v.retry_after_s <= 0.2 for v in refused)
    assert (await limiter.admit(quiet, "u@x.example", limits)).allowed  # another tenant is unaffected
    await asyncio.sleep(max(v.retry_after_s for v in refused))
    assert (await limiter.admit(noisy, "u9@x.example", limits)).allowed  # the retry-after was honest


async def test_the_per_user_minute_limit_refuses_that_user_only(cache: redis.Redis) -> None:
    limiter = RateLimiter(cache)
    t = tenant()
    limits = Limits(tenant_rps=1000, user_per_minute=3)
    results = [await limiter.admit(t, "chatty@x.example", limits) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert results[-1].limit == "user_per_minute" and 10 < results[-1].retry_after_s <= 20
    assert (await limiter.admit(t, "calm@x.example", limits)).allowed
    assert (await limiter.admit(t, "anyone@x.example", Limits())).allowed  # no limits configured


async def test_a_run_log_replays_and_follows_events(cache: redis.Redis) -> None:
    log = RunLog(cache, ttl_s=60)
    t, run = tenant(), uuid.uuid4().hex
    writer = RunWriter(log, t, run, RunMeta("a@x.example", "s1", "hello", RUNNING, 0))
    for sequence in (1, 2, 3):
        writer.add(sequence, f"event-{sequence}".encode())
    await writer.close()
    meta = await log.meta(t, run)
    assert meta is not None and meta.owner == "a@x.example" and meta.state == RUNNING
    assert await log.events(t, run) == [b"event-1", b"event-2", b"event-3"]
    seen: list[tuple[int, bytes]] = []

    async def follow() -> None:
        async for sequence, data in log.follow(t, run, after=1):
            if sequence > 0:
                seen.append((sequence, data))
            if sequence == 4:
                return

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    writer.add(4, b"event-4")
    await writer.close()
    await asyncio.wait_for(follower, 5)
    assert seen == [(2, b"event-2"), (3, b"event-3"), (4, b"event-4")]
    await log.save_meta(t, run, RunMeta("a@x.example", "s1", "hello", ENDED, 4))
    assert (await log.meta(t, run)) == RunMeta("a@x.example", "s1", "hello", ENDED, 4, "")
    assert 0 < await cache.pttl(f"gw:{{{t}}}:run:{run}") <= 60_000
