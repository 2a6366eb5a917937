"""A seeded random third tenant, shaped like ../shared/fixtures/acme.json, to prove permissions come from data."""

from __future__ import annotations

import argparse
import json
import random
import uuid
from typing import Any

from .sandbox import load_fixtures

_WORDS = ("initrode", "hooli", "vandelay", "wonka", "tyrell", "soylent", "cyberdyne", "oscorp", "prestige", "dunder",
          "massive", "nakatomi", "sirius", "virtucon", "zorg")
_FIRST = ("Amara", "Bruno", "Chidi", "Delia", "Eamon", "Farah", "Gustavo", "Hana", "Ingrid", "Jonas", "Keiko", "Lars",
          "Mirela", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Soren", "Tamsin", "Uma", "Viktor", "Wen", "Ximena",
          "Yusuf", "Zofia")
_LAST = ("Abara", "Brandt", "Castillo", "Dubois", "Eriksen", "Fontaine", "Gallo", "Haddad", "Ibsen", "Jovanovic",
         "Kowalski", "Lindqvist", "Moreau", "Nakamura", "Oyelaran", "Petrova", "Quispe", "Rahman", "Szabo", "Tanaka",
         "Ueda", "Varga", "Whitfield", "Xu", "Yilmaz", "Zeller")
# Department names vary per seed: nothing may key a permission on a department or group name.
_DEPARTMENTS = (("Platform", "Backend", "Research", "Product Engineering"), ("Revenue", "Field Sales", "Commercial"),
                ("Service Desk", "Workplace Tech", "Infrastructure"), ("Finance", "People", "Legal", "Facilities"))
_ADMIN_GROUPS = ("Directory-Stewards", "Identity-Operators", "Access-Wardens", "Okta-Root", "IAM-Core")
_MANAGER_GROUPS = ("People-Leads", "Team-Leads", "Line-Managers")
_CONTRACTOR_GROUPS = ("External-Staff", "Vendors", "Temps")
_APPS = ("Zoom", "Figma", "Notion", "GitHub", "Workday", "Box", "Miro", "Datadog", "1Password", "Tableau")
_ITEMS = ("Ergonomic Chair", "Docking Station", "Noise-Cancelling Headphones", "Second Monitor", "Tableau Licence",
          "Figma Seat", "Developer Laptop", "Mobile Phone")
_TOPICS = ("Wi-Fi drops in meeting room {n}", "Badge reader on floor {n} rejects cards", "Shared drive {n} is full",
           "Calendar sync stalls after {n} minutes", "Keyboard key {n} is stuck", "Printer {n} prints blank pages",
           "VPN client crashes on launch", "Laptop fan runs constantly")
_ISSUES = ("Migrate billing cron to queue {n}", "Fix flaky login test {n}", "Document rollback for service {n}",
           "Rotate secrets in vault path {n}", "Upgrade base image to release {n}", "Add alerting for queue {n}")
_COMPANIES = ("Bluth", "Stark", "Pied Piper", "Gringotts", "Monsters", "Aperture", "Black Mesa", "Umbrella",
              "Vought", "Weyland", "Los Pollos", "Kramerica")
_STAGES = ("Prospecting", "Qualification", "Needs Analysis", "Proposal/Price Quote", "Negotiation/Review",
           "Closed Won", "Closed Lost")
_STATUSES = ("To Do", "In Progress", "In Review", "Done")
_HEX = "0123456789abcdef"
_ALNUM = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"


def _chars(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def generate_tenant(seed: int, *, tenant_id: str | None = None, people: int = 12) -> dict[str, Any]:
    """A tenant with random people, groups and records for all four vendors, in the fixtures' shape.

    Guarantees, whatever the seed (tests may rely on them): exactly one person without a manager, everyone else
    reporting to someone; `okta.admin_groups` names one group (random name) with at least one member, and at least
    two people outside it; exactly one LOCKED_OUT person, not an admin; every Okta group has a member besides the
    built-in Everyone; ServiceNow roles include at least one `itil` and one person with no roles, and the manager of
    each requested item's requester is its approver; Jira has one project every group may browse and one restricted
    to a department group; Salesforce has one "Sales Director" and at least two "Sales Rep" users owning the records,
    and at least one person with no Salesforce user. Names (departments, groups, projects) vary with the seed.
    """
    rng = random.Random(seed)
    tenant = tenant_id or f"{rng.choice(_WORDS)}{rng.randint(10, 99)}"
    domain = f"{tenant}.example"
    people = max(people, 8)
    depts = [rng.choice(options) for options in _DEPARTMENTS]
    admin_group, managers_group, contractors = (rng.choice(_ADMIN_GROUPS), rng.choice(_MANAGER_GROUPS),
                                                rng.choice(_CONTRACTOR_GROUPS))
    app_groups = {app: f"{app}-Users" for app in rng.sample(_APPS, 4)}

    names = rng.sample([(f, last) for f in _FIRST for last in _LAST], people)
    # Fixed layout, random names: 0 heads the company; 1-3 lead engineering, sales and IT; the rest are staff.
    dept_of = [depts[3], depts[0], depts[1], depts[2]] + [rng.choice(depts[:3]) for _ in range(people - 4)]
    dept_of[4], dept_of[5], dept_of[6] = depts[1], depts[1], depts[2]  # two sales reps, one more IT person
    lead_of = {depts[3]: 0, depts[0]: 1, depts[1]: 2, depts[2]: 3}

    users: list[dict[str, Any]] = []
    for i, (first, last) in enumerate(names):
        dept = dept_of[i]
        manager = None if i == 0 else names[0 if i <= 3 else lead_of[dept]]
        groups = ["Everyone", dept]
        if i <= 3:
            groups.append(managers_group)
        if dept == depts[2]:
            groups.append(admin_group)
        users.append({
            "email": f"{first}.{last}@{domain}".lower(), "first_name": first, "last_name": last,
            "title": "Chief Executive" if i == 0 else f"{'Lead' if i <= 3 else 'Specialist'}, {dept}",
            "department": dept, "manager": f"{manager[0]}.{manager[1]}@{domain}".lower() if manager else None,
            "groups": groups, "okta_id": "00u" + _chars(rng, _HEX, 17), "okta_status": "ACTIVE",
            "slack_user_id": "U" + _chars(rng, _ALNUM, 10), "jira_account_id": _chars(rng, _HEX, 24),
            "servicenow_sys_id": _chars(rng, _HEX, 32),
            "servicenow_roles": [], "salesforce_user_id": None, "salesforce_profile": None,
        })
    staff = [u for u in users[4:] if u["department"] != depts[2]]
    locked = rng.choice(staff)
    locked["okta_status"] = "LOCKED_OUT"
    locked["groups"].append(contractors)
    for user in users:
        if user["department"] == depts[2]:
            user["servicenow_roles"].append("itil")
        if managers_group in user["groups"]:
            user["servicenow_roles"].append("approver_user")
        for group in app_groups.values():
            if rng.random() < 0.5 or user is users[1]:
                user["groups"].append(group)
    users[3]["servicenow_roles"].append("admin")
    for i, user in enumerate(users):
        if user["department"] == depts[1]:
            user["salesforce_user_id"] = "005" + _chars(rng, _ALNUM, 12) + "AAA"
            user["salesforce_profile"] = "Sales Director" if i == 2 else "Sales Rep"

    group_names = ["Everyone", *depts, managers_group, admin_group, contractors, *app_groups.values()]
    okta = {
        "groups": [{"name": name, "id": "00g" + _chars(rng, _HEX, 17)} for name in group_names],
        "apps": [{"label": "Slack", "groups": ["Everyone"]}]
        + [{"label": app, "groups": [group]} for app, group in app_groups.items()],
        "admin_groups": [admin_group],
    }
    return {
        "tenant": {"id": tenant, "name": f"{tenant.rstrip('0123456789').title()} Inc.", "domain": domain,
                   "slack_team_id": "T" + _chars(rng, _ALNUM, 8),
                   "teams_tenant_id": str(uuid.UUID(int=rng.getrandbits(128)))},
        "users": users,
        "okta": okta,
        "servicenow": _servicenow(rng, users),
        "jira": _jira(rng, tenant, users, depts),
        "salesforce": _salesforce(rng, tenant, users),
    }


def _servicenow(rng: random.Random, users: list[dict[str, Any]]) -> dict[str, Any]:
    itil = [u["email"] for u in users if "itil" in u["servicenow_roles"]]
    states = ("New", "In Progress", "On Hold", "Resolved")
    incidents = [{
        "number": f"INC{30001 + n:07d}", "caller": rng.choice(users)["email"],
        "short_description": rng.choice(_TOPICS).format(n=rng.randint(2, 40)), "state": rng.choice(states),
        "urgency": rng.randint(1, 3), "category": rng.choice(("network", "hardware", "software", "inquiry")),
        "assigned_to": rng.choice([*itil, None]), "opened_at": f"2026-11-{10 + n:02d} 09:{n:02d}:00",
    } for n in range(6)]
    items = [{"name": name, "sys_id": _chars(rng, _HEX, 32), "approval": rng.choice(("manager", None))}
             for name in rng.sample(_ITEMS, 5)]
    items[0]["approval"] = "manager"
    requesters = [u for u in users if u["manager"]]
    requested = []
    for n, who in enumerate(rng.sample(requesters, 2)):
        requested.append({"number": f"RITM{30001 + n:07d}", "item": items[0 if n == 0 else rng.randrange(5)]["name"],
                          "requested_for": who["email"], "state": "Open", "approval": "requested",
                          "stage": "Waiting for Approval", "approver": who["manager"]})
    return {"incidents": incidents, "catalog_items": items, "requested_items": requested}


def _jira(rng: random.Random, tenant: str, users: list[dict[str, Any]], depts: list[str]) -> dict[str, Any]:
    keys = rng.sample(("CORE", "PAY", "DATA", "APP", "INFRA", "MOB", "PLAT"), 2)
    projects = [
        {"key": keys[0], "name": f"{depts[0]} Work", "lead": users[1]["email"], "browse_groups": [depts[0], depts[2]],
         "create_groups": [depts[0]]},
        {"key": keys[1], "name": "Company Requests", "lead": users[3]["email"], "browse_groups": ["Everyone"],
         "create_groups": ["Everyone"]},
    ]
    issues = []
    for n in range(7):
        project = projects[n % 2]
        allowed = [u["email"] for u in users if set(u["groups"]) & set(project["browse_groups"])]
        issues.append({"key": f"{project['key']}-{n + 1}", "type": rng.choice(("Task", "Bug", "Story")),
                       "summary": rng.choice(_ISSUES).format(n=rng.randint(2, 90)), "status": rng.choice(_STATUSES),
                       "priority": rng.choice(("High", "Medium", "Low")), "assignee": rng.choice([*allowed, None]),
                       "reporter": rng.choice(allowed)})
    return {"site": f"https://{tenant}.atlassian.net", "cloud_id": str(uuid.UUID(_chars(rng, _HEX, 32))),
            "transitions": "any status can move to any other; each transition is named after its target status, "
                           "ids 11 (To Do), 21 (In Progress), 31 (In Review), 41 (Done)",
            "projects": projects, "statuses": list(_STATUSES), "issue_types": ["Task", "Bug", "Story"],
            "issues": issues}


def _salesforce(rng: random.Random, tenant: str, users: list[dict[str, Any]]) -> dict[str, Any]:
    sellers = [u["email"] for u in users if u["salesforce_profile"]]
    names = rng.sample(_COMPANIES, 4)
    accounts = [{"id": f"001{_chars(rng, _ALNUM, 12)}AAA", "name": name, "owner": rng.choice(sellers),
                 "industry": rng.choice(("Technology", "Retail", "Energy", "Media"))} for name in names]
    kinds = ("Renewal", "Expansion", "Pilot")
    opportunities = [{"id": f"006{_chars(rng, _ALNUM, 12)}AAA", "name": f"{a['name']} {rng.choice(kinds)}",
                      "account": a["name"], "amount": rng.randrange(5, 400) * 1000, "stage": rng.choice(_STAGES[:5]),
                      "close_date": f"2027-0{rng.randint(1, 9)}-{rng.randint(10, 28)}", "owner": a["owner"]}
                     for a in accounts]
    cases = [{"id": f"500{_chars(rng, _ALNUM, 12)}AAA", "case_number": f"0000{3001 + n}",
              "account": accounts[n]["name"], "status": "New",
              "subject": rng.choice(("Invoice question", "Login problem", "Data export request")),
              "priority": rng.choice(("High", "Medium", "Low")), "owner": accounts[n]["owner"]} for n in range(2)]
    return {"instance_url": f"https://{tenant}.my.salesforce.com", "api_version": "v60.0", "accounts": accounts,
            "opportunities": opportunities, "cases": cases, "stages": list(_STAGES),
            "sharing": "Sales Rep sees records it owns; Sales Director sees all Sales records; users without a "
                       "Salesforce user get 403"}


def fixtures_with_generated(seed: int, **kwargs: Any) -> dict[str, dict[str, Any]]:
    """The demo tenants' fixtures plus one generated tenant, keyed by tenant id (a sandbox's `fixtures`)."""
    fixtures = load_fixtures()
    generated = generate_tenant(seed, **kwargs)
    fixtures[generated["tenant"]["id"]] = generated
    return fixtures


def main() -> None:
    """`python -m connectors.common.fixturegen --seed N` prints a generated tenant as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tenant")
    parser.add_argument("--people", type=int, default=12)
    args = parser.parse_args()
    print(json.dumps(generate_tenant(args.seed, tenant_id=args.tenant, people=args.people), indent=2))


if __name__ == "__main__":
    main()
