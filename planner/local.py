"""A user's tools, denied tools and directory built from the manifests and policy.json, as ListTools would."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2

from agentmesh.common.v1 import common_pb2
from connectors.common.manifest import load_all
from connectors.registry.catalog import list_tools, load_catalog, tools_of
from connectors.registry.policy import Policy
from planner.embedded.evaluate import fixtures_dir


@dataclass(frozen=True)
class Listing:
    """What a planner request carries for one user."""

    tools: list[common_pb2.ToolSpec]
    denied: list[common_pb2.DeniedTool]
    people: list[common_pb2.Person]
    groups: tuple[str, ...]
    fingerprint: str
    policy: dict[str, Any]


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def policies(folder: Path | None = None) -> dict[str, Any]:
    """The fixtures' policy.json (tenant → policy document)."""
    data: dict[str, Any] = json.loads(((folder or fixtures_dir()) / "policy.json").read_text())
    return data


def local_listing(tenant: str, user: str, folder: Path | None = None) -> Listing:
    """The tools, denied tools and people for `user` of a demo `tenant`; raises KeyError for unknown ones."""
    folder = folder or fixtures_dir()
    document = policies(folder)[tenant]
    policy = Policy.from_dict(document)
    fixture = json.loads((folder / f"{tenant}.json").read_text())
    people = [common_pb2.Person(email=u["email"], name=f"{u['first_name']} {u['last_name']}",
                                first_name=u["first_name"], last_name=u["last_name"], groups=u.get("groups", []),
                                title=u.get("title") or "", department=u.get("department") or "",
                                manager=u.get("manager") or "") for u in fixture["users"]]
    person = next((p for p in people if p.email.casefold() == user.casefold()), None)
    if person is None:
        raise KeyError(f"{user} is not in {tenant}'s directory")
    groups = tuple(person.groups)
    tools = [t for manifest in load_all().values() if policy.connector_enabled(f"{manifest['connector']}.x")
             for t in tools_of(manifest)]
    listing = list_tools(tenant, policy, groups, tools, load_catalog())
    specs = [common_pb2.ToolSpec(
        name=o.tool.name, description=o.tool.description,
        effect=common_pb2.EFFECT_WRITE if o.tool.effect == "WRITE" else common_pb2.EFFECT_READ,
        arguments_schema=_struct(dict(o.tool.arguments_schema)), result_schema=_struct(dict(o.tool.result_schema)),
        examples=list(o.tool.examples), scopes=list(o.tool.scopes), confirm_before=o.confirm_before,
        connector=o.tool.connector, version=o.tool.version) for o in listing.tools]
    denied = [common_pb2.DeniedTool(name=d.name, description=d.description, examples=list(d.examples),
                                    reason=d.reason) for d in listing.denied]
    return Listing(specs, denied, people, groups, listing.fingerprint, document)
