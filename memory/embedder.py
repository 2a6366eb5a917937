"""Embedding providers for memory: the local MiniLM encoder (default) or the OpenAI embeddings API."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import openai

from mesh import embeddings

_CACHE_SIZE = 2048
# Non-urgent texts wait at most this long, or until this many are waiting, and are then encoded in one pass: a
# pass costs a fixed ~6 ms plus ~2.5 ms per short text, so a run summary costs ~9 ms alone and ~3-4 ms in company.
WINDOW_S = 0.25
WINDOW_TEXTS = 32


class EmbeddingUnavailable(Exception):
    """The embedding provider could not be reached or refused the request."""


class Embedder(Protocol):
    """Texts in, unit float32 vectors out; `model` and `dimension` name the embedding space."""

    model: str
    dimension: int

    async def warm_up(self) -> None:
        """Gets ready to answer quickly (loads a local model)."""
        ...

    async def embed(self, texts: Sequence[str], *, urgent: bool = True, scope: str = "") -> np.ndarray:
        """Unit vectors of `texts`, shape (len(texts), dimension). `urgent=False`: the caller is off a request's
        critical path (recording a finished run), so the texts may wait a moment to be encoded with others.
        `scope` partitions the cache of recent texts (memory scopes it to one user)."""
        ...

    async def close(self) -> None:
        """Releases connections."""
        ...


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


class _Cache:
    """An LRU of recent texts' embeddings: a request is embedded for recall and its summary, and a long session's
    older turns are condensed again on every request."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def get(self, text: tuple[str, str]) -> np.ndarray | None:
        found = self._items.get(text)
        if found is not None:
            self._items.move_to_end(text)
        return found

    def put(self, text: tuple[str, str], vector: np.ndarray) -> None:
        self._items[text] = vector
        if len(self._items) > _CACHE_SIZE:
            self._items.popitem(last=False)


class _Window:
    """Texts that may wait (off the critical path), gathered for WINDOW_S or WINDOW_TEXTS and encoded in one pass
    in a worker thread. (Hand-written: a dozen lines over asyncio; the batching libraries are servers.)"""

    def __init__(self, encode: Callable[[list[str]], np.ndarray]) -> None:
        self._encode = encode
        self._waiting: list[tuple[list[str], asyncio.Future[np.ndarray]]] = []
        self._count = 0
        self._timer: asyncio.TimerHandle | None = None
        self._passes: set[asyncio.Task[None]] = set()

    async def embed(self, texts: list[str]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._waiting.append((texts, future))
        self._count += len(texts)
        if self._count >= WINDOW_TEXTS:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(WINDOW_S, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting, self._count = self._waiting, [], 0
        if batch:
            task = asyncio.get_running_loop().create_task(self._pass(batch))
            self._passes.add(task)
            task.add_done_callback(self._passes.discard)

    async def _pass(self, batch: list[tuple[list[str], asyncio.Future[np.ndarray]]]) -> None:
        try:
            vectors = await asyncio.to_thread(self._encode, [t for texts, _ in batch for t in texts])
        except Exception as err:  # each waiting caller sees the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        at = 0
        for texts, future in batch:
            if not future.done():  # a caller that gave up (cancelled) is skipped
                future.set_result(vectors[at:at + len(texts)])
            at += len(texts)


class LocalEmbedder:
    """all-MiniLM-L6-v2 (mesh.embeddings), run in a worker thread so the event loop keeps serving."""

    model = embeddings.MODEL_NAME
    dimension = embeddings.DIMENSION

    def __init__(self) -> None:
        self._cache = _Cache()
        self._window = _Window(embeddings.encode)

    async def warm_up(self) -> None:
        """Loads the model now rather than on the first request."""
        encoder = await asyncio.to_thread(embeddings.get_encoder)
        await asyncio.to_thread(encoder.encode, ["warm up"])

    async def embed(self, texts: Sequence[str], *, urgent: bool = True, scope: str = "") -> np.ndarray:
        found = [self._cache.get((scope, t)) for t in texts]
        missing = [t for t, v in zip(texts, found, strict=True) if v is None]
        if not missing:
            return np.stack([v for v in found if v is not None]) if found \
                else np.zeros((0, self.dimension), dtype=np.float32)
        if urgent:
            vectors = await asyncio.to_thread(embeddings.encode, missing)
        else:
            vectors = await self._window.embed(missing)
        fresh = iter(vectors)
        rows = []
        for text, vector in zip(texts, found, strict=True):
            if vector is None:
                vector = next(fresh)
                self._cache.put((scope, text), vector)
            rows.append(vector)
        return np.stack(rows)

    async def close(self) -> None:
        return None


class OpenAIEmbedder:
    """The OpenAI embeddings API (or any server speaking /v1/embeddings) through the openai SDK."""

    def __init__(self, model: str, dimension: int, *, base_url: str | None, api_key: str | None,
                 timeout_s: float) -> None:
        self.model = model
        self.dimension = dimension
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "unset", timeout=timeout_s,
                                          max_retries=2)
        self._cache = _Cache()

    async def warm_up(self) -> None:
        return None

    async def embed(self, texts: Sequence[str], *, urgent: bool = True, scope: str = "") -> np.ndarray:
        if len(texts) == 1:
            cached = self._cache.get((scope, texts[0]))
            if cached is not None:
                return cached[None, :]
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        try:
            response = await self._client.embeddings.create(model=self.model, input=list(texts),
                                                            dimensions=self.dimension, encoding_format="float")
        except openai.APIError as err:
            raise EmbeddingUnavailable(f"embeddings from {self.model} failed: {err.__class__.__name__}") from err
        rows = sorted(response.data, key=lambda d: d.index)
        vectors = np.asarray([r.embedding for r in rows], dtype=np.float32)
        if vectors.shape != (len(texts), self.dimension):
            raise EmbeddingUnavailable(f"{self.model} returned shape {vectors.shape}, expected "
                                       f"({len(texts)}, {self.dimension})")
        vectors = _normalise(vectors)
        if len(texts) == 1:
            self._cache.put((scope, texts[0]), vectors[0])
        return vectors

    async def close(self) -> None:
        await self._client.close()
