"""google.protobuf.Struct in and out: JSON-like dicts, with whole numbers given back as ints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2


def whole_numbers(value: Any) -> Any:
    """Struct carries every number as a double; integral ones come back as int (urgency 2, not 2.0)."""
    if isinstance(value, dict):
        return {k: whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_numbers(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    out: dict[str, Any] = whole_numbers(json_format.MessageToDict(value))
    return out


def struct(value: Mapping[str, Any] | None) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if value:
        out.update(dict(value))
    return out
