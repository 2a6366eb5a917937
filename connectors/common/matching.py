"""catalog.md's rule for records named in words: every word given occurs in the name, ignoring case and order."""

from __future__ import annotations

import re

_WORDS = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """The distinct lower-cased words of a text, in order."""
    return list(dict.fromkeys(_WORDS.findall(text.lower())))


def words_match(wanted: str, name: str) -> bool:
    """Whether every word of `wanted` occurs in `name` ("Initech renewal" → "Initech Renewal 2027")."""
    given = words(wanted)
    have = set(words(name))
    return bool(given) and all(w in have for w in given)
