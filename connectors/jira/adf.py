"""Atlassian Document Format: plain text to an ADF document and back, for descriptions and comments."""

from __future__ import annotations

from typing import Any

# Block nodes whose text reads as its own line when flattened.
_BLOCKS = frozenset({"paragraph", "heading", "blockquote", "codeBlock", "listItem", "bulletList", "orderedList",
                     "panel", "rule", "table", "tableRow", "tableHeader", "tableCell", "mediaSingle",
                     "expand", "nestedExpand", "taskList", "taskItem", "decisionList", "decisionItem"})


def to_adf(text: str) -> dict[str, Any]:
    """A `doc` (version 1) with one paragraph per blank-line-separated block and hard breaks for single newlines."""
    content: list[dict[str, Any]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        inline: list[dict[str, Any]] = []
        for n, line in enumerate(block.split("\n")):
            if n:
                inline.append({"type": "hardBreak"})
            if line:
                inline.append({"type": "text", "text": line})
        content.append({"type": "paragraph", "content": inline})
    return {"type": "doc", "version": 1, "content": content}


def is_document(value: Any) -> bool:
    """Whether a value has the shape of an ADF document (what Jira accepts in a v3 rich-text field)."""
    return (isinstance(value, dict) and value.get("type") == "doc" and value.get("version") == 1
            and isinstance(value.get("content"), list))


def to_text(doc: Any) -> str:
    """The document's readable text: blocks on their own lines, mentions and emoji as their text, links as URLs."""
    if doc is None:
        return ""
    if isinstance(doc, str):
        return doc
    lines: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            lines.append("".join(current))
            current.clear()

    def walk(node: Any) -> None:
        if not isinstance(node, dict):
            return
        kind = node.get("type")
        attrs = node.get("attrs") or {}
        if kind == "text":
            current.append(str(node.get("text", "")))
        elif kind == "hardBreak":
            current.append("\n")
        elif kind == "mention":
            current.append(str(attrs.get("text") or attrs.get("id", "")))
        elif kind == "emoji":
            current.append(str(attrs.get("text") or attrs.get("shortName", "")))
        elif kind in ("inlineCard", "blockCard", "embedCard"):
            current.append(str(attrs.get("url", "")))
        elif kind == "status":
            current.append(str(attrs.get("text", "")))
        elif kind == "date":
            current.append(str(attrs.get("timestamp", "")))
        block = kind in _BLOCKS
        if block:
            flush()
        for child in node.get("content") or []:
            walk(child)
        if block:
            flush()

    walk(doc)
    flush()
    return "\n".join(line for line in lines if line.strip()).strip()
