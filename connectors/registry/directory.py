"""A tenant's directory of people: import, listing, and resolving `me` / an email / a name to exactly one person."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from mesh.errors import MeshError, Reason

DOMAIN = "agentmesh.registry"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_WORD = re.compile(r"[\w'-]+", re.UNICODE)
MAX_CANDIDATES = 10


@dataclass(frozen=True)
class Person:
    """One directory entry; `email` (lower-case) is the identity every person argument resolves to."""

    email: str
    name: str
    first_name: str = ""
    last_name: str = ""
    groups: tuple[str, ...] = ()
    title: str = ""
    department: str = ""
    manager: str = ""
    system_ids: dict[str, str] = field(default_factory=dict)

    def label(self) -> str:
        return f"{self.name} <{self.email}>"


def person_from_fixture(user: dict[str, Any]) -> Person:
    """A person from a fixtures/<tenant>.json user entry."""
    ids = {"okta": user.get("okta_id"), "jira": user.get("jira_account_id"),
           "servicenow": user.get("servicenow_sys_id"), "salesforce": user.get("salesforce_user_id"),
           "slack": user.get("slack_user_id")}
    first, last = user.get("first_name", ""), user.get("last_name", "")
    return Person(email=user["email"].lower(), name=f"{first} {last}".strip(), first_name=first, last_name=last,
                  groups=tuple(user.get("groups", ())), title=user.get("title") or "",
                  department=user.get("department") or "", manager=(user.get("manager") or "").lower(),
                  system_ids={k: str(v) for k, v in ids.items() if v})


def people_violations(people: Sequence[Person], prefix: str = "people") -> list[tuple[str, str]]:
    """What is wrong with a directory before it is stored: bad or duplicate emails, missing names."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, person in enumerate(people):
        if not EMAIL.match(person.email):
            out.append((f"{prefix}[{i}].email", "must be an email address"))
        elif person.email.lower() in seen:
            out.append((f"{prefix}[{i}].email", f"{person.email} appears more than once"))
        seen.add(person.email.lower())
        if not person.name.strip():
            out.append((f"{prefix}[{i}].name", "a name is required"))
        if person.manager and not EMAIL.match(person.manager):
            out.append((f"{prefix}[{i}].manager", "must be an email address"))
    return out


async def replace_people(conn: asyncpg.Connection, tenant: str, people: Sequence[Person]) -> int:
    """Replaces the tenant's directory (in the caller's tenant transaction)."""
    await conn.execute("DELETE FROM registry.people WHERE tenant_id = $1", tenant)
    await conn.executemany(
        """INSERT INTO registry.people (tenant_id, email, name, first_name, last_name, groups, title, department,
                                        manager, system_ids)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb)""",
        [(tenant, p.email.lower(), p.name, p.first_name, p.last_name, list(p.groups), p.title, p.department,
          p.manager.lower(), json.dumps(p.system_ids)) for p in people])
    return len(people)


async def list_people(conn: asyncpg.Connection, tenant: str) -> list[Person]:
    rows = await conn.fetch("SELECT * FROM registry.people WHERE tenant_id = $1 ORDER BY name, email", tenant)
    return [_person(r) for r in rows]


async def get_person(conn: asyncpg.Connection, tenant: str, email: str) -> Person | None:
    row = await conn.fetchrow("SELECT * FROM registry.people WHERE tenant_id = $1 AND email = $2", tenant,
                              email.strip().lower())
    return _person(row) if row is not None else None


def _person(row: asyncpg.Record) -> Person:
    return Person(email=row["email"], name=row["name"], first_name=row["first_name"], last_name=row["last_name"],
                  groups=tuple(row["groups"]), title=row["title"], department=row["department"],
                  manager=row["manager"], system_ids=json.loads(row["system_ids"]))


def _words(text: str) -> list[str]:
    return [w.casefold() for w in _WORD.findall(text)]


def matches(person: Person, query: str) -> bool:
    """Whether a name names this person: every word given is one of the person's name words (any order)."""
    words = _words(query)
    if not words:
        return False
    own = set(_words(person.name)) | set(_words(person.first_name)) | set(_words(person.last_name))
    return all(w in own for w in words)


def resolve(people: Iterable[Person], query: str, requester: str, *, argument: str = "") -> Person:
    """`me`, an email or a name → exactly one person; otherwise UNKNOWN_PERSON / AMBIGUOUS_PERSON naming candidates."""
    value = query.strip()
    where = f" for {argument}" if argument else ""
    everyone = list(people)
    if value.casefold() in ("me", "myself"):
        for person in everyone:
            if person.email == requester.lower():
                return person
        return Person(email=requester.lower(), name=requester)  # the verified requester, even if not imported yet
    if "@" in value:
        for person in everyone:
            if person.email == value.lower():
                return person
        raise MeshError(Reason.UNKNOWN_PERSON, f"no one in the directory has the email {value!r}{where}",
                        domain=DOMAIN, metadata=_meta(argument, value, []))
    exact = [p for p in everyone if p.name.casefold() == value.casefold()]
    found = sorted(exact or [p for p in everyone if matches(p, value)], key=lambda p: (p.name.casefold(), p.email))
    if len(found) == 1:
        return found[0]
    if not found:
        raise MeshError(Reason.UNKNOWN_PERSON, f"no one in the directory is called {value!r}{where}",
                        domain=DOMAIN, metadata=_meta(argument, value, []))
    names = ", ".join(p.label() for p in found[:MAX_CANDIDATES])
    raise MeshError(Reason.AMBIGUOUS_PERSON, f"{value!r}{where} could be any of: {names}", domain=DOMAIN,
                    metadata=_meta(argument, value, found))


def _meta(argument: str, query: str, candidates: Sequence[Person]) -> dict[str, str]:
    meta = {"query": query, "candidates": ", ".join(p.label() for p in candidates[:MAX_CANDIDATES]),
            "candidate_emails": ",".join(p.email for p in candidates[:MAX_CANDIDATES])}
    if argument:
        meta["argument"] = argument
    return meta


async def find(conn: asyncpg.Connection, tenant: str, query: str, requester: str, *, argument: str = "") -> Person:
    """resolve() against the tenant's directory, reading only the rows that can match."""
    value = query.strip()
    if value.casefold() in ("me", "myself"):
        return await get_person(conn, tenant, requester) or Person(email=requester.lower(), name=requester)
    if "@" in value:
        found = await get_person(conn, tenant, value)
        return found if found is not None else resolve([], value, requester, argument=argument)
    words = _words(value)
    if not words:
        return resolve([], value, requester, argument=argument)
    pattern = "%" + words[0].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = await conn.fetch("SELECT * FROM registry.people WHERE tenant_id = $1 AND lower(name) LIKE $2 "
                            "ORDER BY name, email LIMIT 500", tenant, pattern)
    return resolve([_person(r) for r in rows], value, requester, argument=argument)
