"""The generated third tenant: deterministic per seed, fixture-shaped, and holding the guarantees it documents."""

from __future__ import annotations

import json

import pytest

from connectors.common.fixturegen import fixtures_with_generated, generate_tenant
from connectors.common.sandbox import load_fixtures

SEEDS = range(25)


def test_same_seed_same_tenant_other_seed_other_people() -> None:
    assert json.dumps(generate_tenant(5)) == json.dumps(generate_tenant(5))
    assert {u["email"] for u in generate_tenant(5)["users"]} != {u["email"] for u in generate_tenant(6)["users"]}


def test_the_shape_is_the_demo_fixtures_shape() -> None:
    acme = load_fixtures(("acme",))["acme"]
    generated = generate_tenant(1)
    assert set(generated) == set(acme)
    for section in ("tenant", "okta", "servicenow", "jira", "salesforce"):
        assert set(generated[section]) == set(acme[section]), section
    assert set(generated["users"][0]) == set(acme["users"][0])
    for kind in ("incidents", "catalog_items", "requested_items"):
        assert set(generated["servicenow"][kind][0]) >= set(acme["servicenow"][kind][0]) - {"description"}


@pytest.mark.parametrize("seed", SEEDS)
def test_the_documented_guarantees_hold(seed) -> None:
    data = generate_tenant(seed)
    users = data["users"]
    emails = {u["email"] for u in users}
    assert len(emails) == len(users)
    assert sum(u["manager"] is None for u in users) == 1
    assert all(u["manager"] in emails for u in users if u["manager"])
    groups = {g["name"] for g in data["okta"]["groups"]}
    assert len({g["id"] for g in data["okta"]["groups"]}) == len(groups)
    assert all(set(u["groups"]) <= groups for u in users)
    assert all(any(g in u["groups"] for u in users) for g in groups)
    admin = set(data["okta"]["admin_groups"])
    assert len(admin) == 1 and admin <= groups and "Admins" not in next(iter(admin))
    admins = [u for u in users if admin & set(u["groups"])]
    assert admins and len(users) - len(admins) >= 2
    locked = [u for u in users if u["okta_status"] == "LOCKED_OUT"]
    assert len(locked) == 1 and locked[0] not in admins
    roles = [u["servicenow_roles"] for u in users]
    assert any("itil" in r for r in roles) and any(not r for r in roles)
    profiles = [u["salesforce_profile"] for u in users]
    assert profiles.count("Sales Director") == 1 and profiles.count("Sales Rep") >= 2 and None in profiles
    by_email = {u["email"]: u for u in users}
    assert all(r["approver"] == by_email[r["requested_for"]]["manager"] for r in data["servicenow"]["requested_items"])
    browse = [set(p["browse_groups"]) for p in data["jira"]["projects"]]
    assert {"Everyone"} in browse and any("Everyone" not in b for b in browse)
    sellers = {u["email"] for u in users if u["salesforce_profile"]}
    assert all(a["owner"] in sellers for a in data["salesforce"]["accounts"])


def test_the_generated_tenant_joins_the_demo_tenants() -> None:
    fixtures = fixtures_with_generated(3)
    assert {"acme", "globex"} < set(fixtures) and len(fixtures) == 3
