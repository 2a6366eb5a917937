"""Tool manifests of the four connectors, loaded together, and the schema fragments they share."""

from __future__ import annotations

import copy
import importlib
from typing import Any

# The connectors whose manifests ship with agentmesh, in catalog order.
CONNECTORS: tuple[str, ...] = ("okta", "servicenow", "jira", "salesforce")

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# A person in a result: always a name beside the email, so an answer can be grounded in it.
PERSON: dict[str, Any] = {
    "type": "object",
    "description": "A person, as their display name and email.",
    "properties": {
        "name": {"type": "string", "description": "Display name, e.g. 'Dana Kim'."},
        "email": {"type": "string", "format": "email"},
    },
    "required": ["name", "email"],
    "additionalProperties": False,
}

PERSON_OR_NULL: dict[str, Any] = {"anyOf": [PERSON, {"type": "null"}]}


def person_argument(role: str, *, default: str | None = None) -> dict[str, Any]:
    """The schema of a person argument (`user`, `assignee`, ...); `role` says whom it names."""
    schema: dict[str, Any] = {
        "type": "string",
        "minLength": 1,
        "maxLength": 254,
        "description": (f"{role} Accepts \"me\" (the requester), an email, or a name that resolves to exactly one "
                        "person in the directory; an ambiguous or unknown name is an error listing the candidates."),
        "x-agentmesh-person": True,
    }
    if default is not None:
        schema["default"] = default
    return schema


def load_all() -> dict[str, dict[str, Any]]:
    """Every connector's manifest, keyed by connector: {"connector", "version", "actions"} (copies, safe to edit)."""
    manifests: dict[str, dict[str, Any]] = {}
    for name in CONNECTORS:
        module = importlib.import_module(f"connectors.{name}.manifest")
        manifests[module.CONNECTOR] = {
            "connector": module.CONNECTOR,
            "version": module.VERSION,
            "actions": copy.deepcopy(module.ACTIONS),
        }
    return manifests


def tool_specs() -> list[dict[str, Any]]:
    """All actions as flat tool specs named `<connector>.<action>`, each with its connector."""
    specs: list[dict[str, Any]] = []
    for connector, manifest in load_all().items():
        for action in manifest["actions"]:
            specs.append({**action, "name": f"{connector}.{action['name']}", "connector": connector})
    return specs
