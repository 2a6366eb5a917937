"""The sentence encoder the planner matches intents with: the process-wide all-MiniLM-L6-v2 of mesh.embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np


class Encoder(Protocol):
    """Turns texts into L2-normalized float32 vectors, one row per text."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """The unit vectors of `texts`, shape (len(texts), dimension)."""
        ...


def default_encoder() -> Encoder:
    """The process-wide MiniLM encoder (loaded offline on first use, about a second, and shared afterwards)."""
    from mesh.embeddings import get_encoder

    return get_encoder()
