"""Finding the people a request names: the requester ("me", "my"), emails, full names and first or last names."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from planner.embedded.model import Person

# First names that are also ordinary words: they name a person only when capitalized mid-sentence or possessive.
_COMMON_WORDS = frozenset(
    "will may grace mark frank bill pat sue jack rose amber summer hope joy faith dawn art gene gay ray rich "
    "chase drew guy hunter june april august max miles lane dean case bob sky page dale carol skip penny "
    "victor don rob sandy lee park young long king hill bell".split()
)
# Words that open a sentence as a verb or modal, not as a name ("Mark ENG-1 as done", "Will you...").
_SENTENCE_OPENERS = frozenset("will may mark bill page chase hope skip park sue rob".split())
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_SELF = re.compile(r"\b(?:myself|mine|me|my|i'm|i've|i'd|i'll|im|i)\b", re.IGNORECASE)
_THIRD_PERSON = re.compile(r"\b(?:him|her|his|hers|them|their|they|she|he)\b", re.IGNORECASE)
_POSSESSIVE = re.compile(r"^'s?")


@dataclass(frozen=True)
class Mention:
    """A person named in text: the candidates it may mean (one when it resolves) and how it was written."""

    start: int
    end: int
    text: str
    candidates: tuple[Person, ...]
    possessive: bool
    is_self: bool = False

    @property
    def person(self) -> Person | None:
        """The person meant, when exactly one candidate fits."""
        return self.candidates[0] if len(self.candidates) == 1 else None


class Directory:
    """A tenant directory indexed for name lookups."""

    def __init__(self, people: Sequence[Person]) -> None:
        self.people = tuple(people)
        self._by_email = {p.email.casefold(): p for p in people}
        self._full: dict[str, list[Person]] = defaultdict(list)
        self._single: dict[str, list[Person]] = defaultdict(list)
        for person in people:
            full = f"{person.first_name} {person.last_name}".strip().casefold()
            self._full[full].append(person)
            if person.name and person.name.casefold() != full:
                self._full[person.name.casefold()].append(person)
            for token in (person.first_name, person.last_name):
                if token:
                    self._single[token.casefold()].append(person)
        names = sorted({*self._full, *self._single}, key=len, reverse=True)
        self._pattern = (
            re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b", re.IGNORECASE) if names else None
        )

    def by_email(self, email: str) -> Person | None:
        """The person with this email, if any."""
        return self._by_email.get(email.strip().casefold())

    def mentions(self, text: str, requester: str) -> list[Mention]:
        """The people named in `text`, in order; the requester's "me", "my" and "I" included as self mentions."""
        found: list[Mention] = []
        taken: list[tuple[int, int]] = []
        for match in _EMAIL.finditer(text):
            person = self.by_email(match.group())
            candidates: tuple[Person, ...] = (person,) if person else (Person(match.group(), match.group(), "", ""),)
            found.append(Mention(match.start(), match.end(), match.group(), candidates, False,
                                 is_self=match.group().casefold() == requester.casefold()))
            taken.append(match.span())
        if self._pattern is not None:
            for match in self._pattern.finditer(text):
                if any(s <= match.start() < e for s, e in taken):
                    continue
                word = match.group()
                key = word.casefold()
                possessive = bool(_POSSESSIVE.match(text[match.end():]))
                if key not in self._full and not self._names_a_person(text, match, possessive):
                    continue
                candidates = tuple(self._full.get(key) or self._single.get(key) or ())
                unique = tuple({p.email: p for p in candidates}.values())
                found.append(Mention(match.start(), match.end(), word, unique, possessive,
                                     is_self=len(unique) == 1 and unique[0].email.casefold() == requester.casefold()))
                taken.append(match.span())
        me = self.by_email(requester) or Person(requester, requester, "", "")
        for match in _SELF.finditer(text):
            if any(s <= match.start() < e for s, e in taken):
                continue
            word = match.group().lower()
            found.append(Mention(match.start(), match.end(), match.group(), (me,), word in ("my", "mine"), True))
        found.sort(key=lambda m: m.start)
        return found

    @staticmethod
    def _names_a_person(text: str, match: re.Match[str], possessive: bool) -> bool:
        word = match.group()
        if word.casefold() not in _COMMON_WORDS:
            return True
        if possessive:
            return True
        at_start = not text[: match.start()].strip() or text[: match.start()].rstrip()[-1:] in ".!?:;"
        return word[:1].isupper() and not (at_start and word.casefold() in _SENTENCE_OPENERS)


def third_person(text: str) -> bool:
    """Whether `text` refers to someone by a pronoun (him, her, their...)."""
    return bool(_THIRD_PERSON.search(text))
