"""Which of a user's tools an LLM prompt describes when there are many: the ones closest to the request."""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from typing import Any, Protocol

import numpy as np

from planner.validation import ToolInfo


class SentenceEncoder(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class ToolRanker:
    """Ranks tools by cosine similarity of the request to each tool's description and examples (vectors cached
    per tool name and version, so a tool is embedded once per process)."""

    def __init__(self, encoder: SentenceEncoder | None = None) -> None:
        self._encoder = encoder
        self._vectors: dict[tuple[str, str], np.ndarray] = {}
        self._lock = threading.Lock()

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        if self._encoder is None:
            from mesh.embeddings import get_encoder

            self._encoder = get_encoder()
        return self._encoder.encode(texts)

    def _tool_vector(self, tool: ToolInfo) -> np.ndarray:
        key = (tool.name, tool.version)
        with self._lock:
            found = self._vectors.get(key)
        if found is None:
            texts = [tool.description or tool.name.replace("_", " ").replace(".", " "), *tool.examples]
            vectors = self._encode(texts)
            mean = vectors.mean(axis=0)
            found = mean / (np.linalg.norm(mean) or 1.0)
            with self._lock:
                self._vectors[key] = found
        return found

    def select(self, request: str, tools: Sequence[ToolInfo], limit: int,
               keep: Collection[str] = ()) -> list[ToolInfo]:
        """At most `limit` tools (plus the ones named in `keep`), most relevant first; all of them when few."""
        if len(tools) <= limit:
            return list(tools)
        query: Any = self._encode([request])[0]
        scored = sorted(tools, key=lambda t: float(np.dot(self._tool_vector(t), query)), reverse=True)
        chosen = scored[:limit]
        chosen += [t for t in tools if t.name in keep and t not in chosen]
        return chosen
