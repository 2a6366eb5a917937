"""Tools from connector manifests: argument validation with defaults, person arguments, and per-user listings."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jsonschema

from connectors.common.manifest import tool_specs
from connectors.registry.policy import SUBJECT_ARGUMENT, Policy
from mesh.structs import whole_numbers

PERSON_FLAG = "x-agentmesh-person"
# catalog.md: the person arguments, for manifests that do not flag them.
PERSON_ARGUMENTS = frozenset({"user", "assignee", "assigned_to", "owner", "caller", "requested_for"})


@dataclass(frozen=True)
class Tool:
    """One `<connector>.<action>` with its schemas, as served by one manifest version."""

    name: str
    connector: str
    action: str
    description: str
    effect: str  # READ or WRITE
    arguments_schema: Mapping[str, Any]
    result_schema: Mapping[str, Any]
    scopes: tuple[str, ...]
    examples: tuple[str, ...]
    version: str

    @cached_property
    def validator(self) -> jsonschema.Draft202012Validator:
        return jsonschema.Draft202012Validator(dict(self.arguments_schema))

    @cached_property
    def properties(self) -> Mapping[str, Any]:
        props = self.arguments_schema.get("properties", {})
        return props if isinstance(props, Mapping) else {}

    @cached_property
    def person_arguments(self) -> tuple[str, ...]:
        """The arguments that name a person (flagged in the schema, else by the catalog's names)."""
        flagged = tuple(n for n, s in self.properties.items() if isinstance(s, Mapping) and s.get(PERSON_FLAG))
        if flagged:
            return flagged
        return tuple(n for n, s in self.properties.items()
                     if n in PERSON_ARGUMENTS and isinstance(s, Mapping) and s.get("type") == "string")

    @property
    def has_subject(self) -> bool:
        """Whether a policy `subject` constrains this tool (it has a `user` person argument)."""
        return SUBJECT_ARGUMENT in self.person_arguments

    def with_defaults(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments with every schema default filled in and whole numbers as ints."""
        out = {k: whole_numbers(v) for k, v in arguments.items()}
        for name, schema in self.properties.items():
            if name not in out and isinstance(schema, Mapping) and "default" in schema:
                out[name] = schema["default"]
        return out

    def violations(self, arguments: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Field violations against the arguments schema, one per problem, paths like `arguments.urgency`."""
        errors = sorted(self.validator.iter_errors(dict(arguments)),
                        key=lambda e: (list(map(str, e.absolute_path)), e.message))
        return [(_path(e), e.message) for e in errors]


def _path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator in ("required", "additionalProperties", "dependentRequired") and "'" in error.message:
        parts.append(error.message.split("'")[1])
    return "arguments" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in parts if p)




def manifest_digest(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


_TOOLS_BY_DIGEST: dict[str, tuple[Tool, ...]] = {}


def tools_of(manifest: Mapping[str, Any], digest: str | None = None) -> tuple[Tool, ...]:
    """The tools of a manifest ({"connector", "version", "actions"}); compiled once per manifest digest."""
    key = digest or manifest_digest(manifest)
    cached = _TOOLS_BY_DIGEST.get(key)
    if cached is not None:
        return cached
    connector = str(manifest["connector"])
    tools = tuple(
        Tool(name=f"{connector}.{a['name']}", connector=connector, action=str(a["name"]),
             description=str(a.get("description", "")), effect=str(a.get("effect", "READ")),
             arguments_schema=a.get("arguments_schema") or {"type": "object"},
             result_schema=a.get("result_schema") or {"type": "object"},
             scopes=tuple(a.get("scopes", ())), examples=tuple(a.get("examples", ())),
             version=str(manifest.get("version", "")))
        for a in manifest.get("actions", []))
    _TOOLS_BY_DIGEST[key] = tools
    return tools


def manifest_violations(manifest: Mapping[str, Any], expected_connector: str) -> list[str]:
    """Problems that make a fetched manifest unusable (wrong connector, bad schemas, duplicate actions)."""
    problems: list[str] = []
    if manifest.get("connector") != expected_connector:
        problems.append(f"the endpoint serves connector {manifest.get('connector')!r}, not {expected_connector!r}")
    seen: set[str] = set()
    for action in manifest.get("actions", []):
        name = action.get("name", "")
        if not name or name in seen:
            problems.append(f"action {name!r} is missing or repeated")
        seen.add(name)
        if action.get("effect") not in ("READ", "WRITE"):
            problems.append(f"action {name!r} has no READ/WRITE effect")
        try:
            jsonschema.Draft202012Validator.check_schema(action.get("arguments_schema") or {})
        except jsonschema.SchemaError as err:
            problems.append(f"action {name!r} has an invalid arguments schema: {err.message}")
    return problems


@dataclass(frozen=True)
class CatalogEntry:
    """A catalog tool as the planner sees it when it is denied: name, description, examples."""

    name: str
    description: str
    examples: tuple[str, ...]
    effect: str = ""


def load_catalog(path: Path | None = None) -> list[CatalogEntry]:
    """The catalog tools offered as denied tools: a JSON list of specs, or the manifests shipped in connectors/."""
    specs: Iterable[Mapping[str, Any]] = json.loads(path.read_text()) if path else tool_specs()
    return [CatalogEntry(str(s["name"]), str(s.get("description", "")), tuple(s.get("examples", ())),
                         str(s.get("effect", ""))) for s in specs]


@dataclass(frozen=True)
class Offered:
    """A tool this user may call, and whether the tenant wants it confirmed first."""

    tool: Tool
    confirm_before: bool


@dataclass(frozen=True)
class Denied:
    """A catalog tool this user may not use at all, and why."""

    name: str
    description: str
    examples: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Listing:
    """What ListTools answers: offered tools, denied tools, and the fingerprint of that permission set."""

    tools: list[Offered]
    denied: list[Denied]
    fingerprint: str


def list_tools(tenant: str, policy: Policy, groups: Sequence[str], tools: Iterable[Tool],
               catalog: Iterable[CatalogEntry]) -> Listing:
    """The tools `groups` may use among the tenant's registered tools, and every other known tool as denied."""
    offered: list[Offered] = []
    denied: list[Denied] = []
    seen: set[str] = set()
    for tool in sorted(tools, key=lambda t: t.name):
        seen.add(tool.name)
        if policy.may_use(groups, tool.name):
            offered.append(Offered(tool, policy.needs_confirmation(tool.name)))
        else:
            denied.append(Denied(tool.name, tool.description, tool.examples, denial_reason(policy, groups, tool.name)))
    for entry in sorted(catalog, key=lambda e: e.name):
        if entry.name in seen:
            continue
        seen.add(entry.name)
        reason = (denial_reason(policy, groups, entry.name) if not policy.may_use(groups, entry.name)
                  else f"the {entry.name.split('.', 1)[0]} connector is not registered for this tenant")
        denied.append(Denied(entry.name, entry.description, entry.examples, reason))
    return Listing(offered, denied, fingerprint(tenant, groups, offered, denied))


def denial_reason(policy: Policy, groups: Sequence[str], tool: str) -> str:
    """Why a tool is not offered at all: the connector is not enabled, a deny rule, or no allow rule."""
    if not policy.connector_enabled(tool):
        return f"the {tool.split('.', 1)[0]} connector is not enabled for this tenant"
    decision = policy.decide(groups, tool, None, "")
    return decision.reason


def fingerprint(tenant: str, groups: Sequence[str], offered: Sequence[Offered], denied: Sequence[Denied]) -> str:
    """A digest of tenant, groups and the offered tools (name, version, confirmation) and denied names."""
    doc = {"tenant": tenant, "groups": sorted(set(groups)),
           "tools": [[o.tool.name, o.tool.version, o.confirm_before] for o in offered],
           "denied": sorted(d.name for d in denied)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]
