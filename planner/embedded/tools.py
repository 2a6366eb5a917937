"""What the planner needs to know about each catalog tool, read from its manifest spec."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Result fields that can feed an argument of a later step, by argument name (first found wins).
_FEEDS: dict[str, tuple[str, ...]] = {
    "key": ("key",),
    "number": ("number",),
    "opportunity": ("id", "name"),
    "account": ("name", "id"),
    "related_to": ("name", "id"),
    "name": ("name",),
    "item": ("item", "name"),
    "group": ("name", "id"),
}


@dataclass(frozen=True)
class ToolInfo:
    """A catalog tool: its name, effect, texts that describe it and the shape of its arguments and result.

    `alternatives` are the schema's `anyOf` sets of required arguments: at least one set must be given in full.
    """

    name: str
    connector: str
    action: str
    effect: str
    description: str
    examples: tuple[str, ...]
    properties: Mapping[str, Mapping[str, Any]]
    required: tuple[str, ...]
    alternatives: tuple[tuple[str, ...], ...]
    result_schema: Mapping[str, Any]

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> ToolInfo:
        """A tool from a manifest spec (`name` is `<connector>.<action>`)."""
        name = spec["name"]
        connector, _, action = name.partition(".")
        schema = spec.get("arguments_schema") or {}
        alternatives = tuple(
            tuple(alt.get("required", ())) for alt in schema.get("anyOf", ()) if isinstance(alt, Mapping)
        )
        return cls(
            name=name,
            connector=spec.get("connector", connector),
            action=action,
            effect=spec.get("effect", "READ"),
            description=spec.get("description", ""),
            examples=tuple(spec.get("examples", ())),
            properties=dict(schema.get("properties", {})),
            required=tuple(schema.get("required", ())),
            alternatives=alternatives,
            result_schema=spec.get("result_schema") or {},
        )

    def is_person(self, argument: str) -> bool:
        """Whether `argument` names a person (its value is an email once planned)."""
        return bool(self.properties.get(argument, {}).get("x-agentmesh-person"))

    def default(self, argument: str) -> Any:
        """The schema default of `argument`, or None."""
        return self.properties.get(argument, {}).get("default")

    def enum(self, argument: str) -> tuple[Any, ...]:
        """The allowed values of `argument` when its schema lists them."""
        return tuple(self.properties.get(argument, {}).get("enum", ()))

    def pattern(self, argument: str) -> re.Pattern[str] | None:
        """The compiled schema pattern of `argument`, if any."""
        pattern = self.properties.get(argument, {}).get("pattern")
        return re.compile(pattern) if pattern else None

    def kind(self, argument: str) -> str:
        """The JSON type of `argument` (`string` when unstated or a union)."""
        kind = self.properties.get(argument, {}).get("type", "string")
        return kind if isinstance(kind, str) else "string"

    def summary_text(self) -> str:
        """The first sentence of the description, used as one more example of what the tool does."""
        return self.description.split(". ")[0].rstrip(".")

    def result_path(self, argument: str) -> str | None:
        """A path into this tool's result that yields a value for `argument` of a later step, e.g. `issues[0].key`."""
        fields = _FEEDS.get(argument, (argument,))
        properties = self.result_schema.get("properties", {})
        for field_name in fields:
            if field_name in properties and _is_scalar(properties[field_name]):
                return field_name
        for list_name, schema in properties.items():
            if schema.get("type") != "array":
                continue
            item_properties = schema.get("items", {}).get("properties", {})
            for field_name in fields:
                if field_name in item_properties and _is_scalar(item_properties[field_name]):
                    return f"{list_name}[0].{field_name}"
        return None


def _is_scalar(schema: Mapping[str, Any]) -> bool:
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    return any(k in ("string", "integer", "number") for k in kinds)
