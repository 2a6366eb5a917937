"""The shared encoder: the ONNX export agrees with the torch model, and concurrent callers share passes."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from mesh import embeddings

TEXTS = ["My VPN keeps dropping, open a ticket and tell me who my manager is", "Who is my manager?",
         "Show me my open Jira issues", "Created INC0010023 for VPN dropping; your manager is Carol Smith"]


def test_the_onnx_export_matches_the_torch_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(embeddings.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv(embeddings.BF16_ENV, "0")
    path = embeddings.model_path()
    exported = embeddings.exported(path)
    assert exported.parent == tmp_path and exported.stat().st_size > 1_000_000
    assert embeddings.exported(path) == exported  # exported once, then reused
    assert not list(tmp_path.glob(".*.tmp"))
    onnx = embeddings._Onnx(path, 1).forward(TEXTS, 64)
    torch = embeddings._Torch(path, 1).forward(TEXTS, 64)
    assert onnx.shape == torch.shape == (len(TEXTS), embeddings.DIMENSION)
    assert np.allclose(np.linalg.norm(onnx, axis=1), 1.0, atol=1e-5)
    assert float(np.min(np.sum(onnx * torch, axis=1))) > 0.9999
    # Batched with padding, a text gets the vector it gets alone.
    alone = embeddings._Onnx(path, 1).forward([TEXTS[1]], 64)[0]
    assert float(alone @ onnx[1]) > 0.99999


def test_concurrent_callers_get_their_own_rows() -> None:
    encoder = embeddings.get_encoder()
    alone = {t: encoder.encode([t])[0] for t in TEXTS}
    results: dict[int, np.ndarray] = {}
    start = threading.Barrier(8)

    def call(i: int) -> None:
        start.wait()
        results[i] = encoder.encode([TEXTS[i % 4], TEXTS[(i + 1) % 4]])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, rows in results.items():
        assert float(rows[0] @ alone[TEXTS[i % 4]]) > 0.99999
        assert float(rows[1] @ alone[TEXTS[(i + 1) % 4]]) > 0.99999
