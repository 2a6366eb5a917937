"""The load benchmark's generated tenant: at least 1 000 distinct people, every system id distinct."""

from __future__ import annotations

from gateway.bench import BENCH_TENANT, bench_fixture, bench_policy


def test_the_bench_tenant_has_a_thousand_distinct_people_and_ids() -> None:
    fixture = bench_fixture(1000, 7)
    users = fixture["users"]
    assert len(users) == 1000 and fixture["tenant"]["id"] == BENCH_TENANT
    for key in ("email", "okta_id", "slack_user_id", "jira_account_id", "servicenow_sys_id"):
        assert len({u[key] for u in users}) == 1000, key
    assert all("Everyone" in u["groups"] for u in users)


def test_the_bench_policy_lets_everyone_use_the_mix_without_throttling() -> None:
    policy = bench_policy("capacity")
    assert policy["rules"] == [{"effect": "allow", "groups": ["Everyone"], "tools": ["*"]}]
    assert policy["rate_limits"]["tenant_rps"] >= 1000 and set(policy["model_tiers"].values()) == {"embedded"}
    assert all(v.startswith("sim:") for v in bench_policy("realistic")["model_tiers"].values())
