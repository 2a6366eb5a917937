"""Offline token counting (mesh.tokens) and the shared sentence encoder (mesh.embeddings)."""

from __future__ import annotations

import numpy as np
import pytest

from mesh import embeddings, tokens


def test_cl100k_counts_match_the_published_encoding_offline() -> None:
    enc = tokens.get_encoding()
    assert enc.encode_ordinary("hello world") == [15339, 1917]  # cl100k_base's ids, from the packaged BPE file
    assert tokens.count("hello world") == 2 and tokens.count("") == 0
    assert tokens.count_many(["hello world", ""]) == [2, 0]
    # Special-token markers typed by a user are ordinary text, never an error.
    assert tokens.count("<|endoftext|>") > 1
    assert tokens.truncate("one two three four", 2) == "one two"


def test_an_encoding_no_package_ships_fails_loudly() -> None:
    with pytest.raises(tokens.EncodingUnavailable, match="o200k_base"):
        tokens.count("hi", "o200k_base")
    assert tokens.available() == ["cl100k_base"]


def test_encoder_gives_unit_vectors_that_put_paraphrases_closest() -> None:
    vectors = embeddings.encode(["my VPN keeps disconnecting", "the virtual private network connection drops",
                                 "move the Globex renewal to June"])
    assert vectors.shape == (3, embeddings.DIMENSION) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert embeddings.encode([]).shape == (0, embeddings.DIMENSION)
    assert embeddings.get_encoder() is embeddings.get_encoder()
