"""Splitting a request into clauses (one intent each, at most) and telling commands from statements and injections."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Verbs that start an instruction; a clause boundary is placed before them after "and", "then" or a comma.
ACTION_VERBS = frozenset(
    """open create file log raise submit report unlock reset add put remove take assign reassign give hand move mark
    set transition close resolve reopen start comment approve reject decline deny order request get find search look
    show list tell update push change bump escalate send check let notify reply write post make pull fetch remind
    clear wipe delete grant revoke drop kick display provide run query count bring book schedule cancel sign
    note leave record lookup locate see view""".split()
)
_LEADS = (
    r"please|kindly|also|then|can you|could you|would you|will you|can u|pls|plz|i(?:'d| would) (?:also )?like|"
    r"i (?:also )?(?:need|want)|what(?:'s| is| are)?|who(?:'s| is)?|which|where|when|how|is there|are there|do i|did i|"
    r"have i|am i"
)
# Openers of text that tries to change the assistant's role; it gets a clause of its own, so it can be set aside.
_INJECTION_LEADS = r"ignore|disregard|forget|pretend|you are now"
_VERB_ALT = "|".join(sorted(ACTION_VERBS, key=len, reverse=True))
_BOUNDARY = re.compile(
    rf"(?:,\s*(?:and\s+)?(?:then\s+)?|\s+and\s+(?:then\s+|also\s+)?|\s+then\s+|\s*;\s*|,\s*plus\s+|\s+as well as\s+|"
    rf"\s+-+\s+(?:and\s+|then\s+)?)"
    rf"(?=(?:{_LEADS}|{_INJECTION_LEADS}|{_VERB_ALT})\b)",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=\S)|\n+")
# Text after these is free text (a comment, a summary): no clause boundary is placed inside it on a bare comma.
_CONTENT_START = re.compile(r":\s|\b(?:saying|that says|to say|stating|reading|with the comment|with comment)\b",
                            re.IGNORECASE)
_INJECTION = re.compile(
    r"\b(?:ignore|disregard|forget|override)\b.{0,40}\b(?:instructions?|rules?|prompts?|polic(?:y|ies)|guidelines)\b|"
    r"\bsystem (?:override|prompt|message)\b|\byou are now\b|\b(?:developer|admin|god|jailbreak) mode\b|"
    r"\bact as (?:an? )?(?:admin|administrator|root)\b|\bpretend (?:you are|to be)\b|\bi am (?:an? |the )?admin",
    re.IGNORECASE,
)
_SMALL_TALK = re.compile(
    r"^\W*(?:hi|hello|hey|yo|howdy|good (?:morning|afternoon|evening)|thanks?(?: you)?|thank u|thx|cheers|ok(?:ay)?|"
    r"cool|great|nice|bye|goodbye|how are you|how's it going|how is it going|what's up|who are you|"
    r"what can you do|help)\b",
    re.IGNORECASE,
)
_IMPERATIVE_START = re.compile(rf"^\W*(?:{_LEADS}|{_VERB_ALT})\b", re.IGNORECASE)


@dataclass(frozen=True)
class Clause:
    """A stretch of the request that holds at most one instruction."""

    text: str
    start: int
    end: int
    injection: bool
    command: bool

    @property
    def lower(self) -> str:
        """The clause in lower case."""
        return self.text.lower()


def normalize(request: str) -> str:
    """The request with typographic quotes and dashes made plain and runs of spaces collapsed."""
    table = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": " - ",
                           "\u00a0": " "})
    return re.sub(r"[ \t]+", " ", request.translate(table)).strip()


def clauses(text: str) -> list[Clause]:
    """The clauses of `text`, split at sentence ends and before each new instruction."""
    out: list[Clause] = []
    position = 0
    for sentence in _SENTENCE.split(text):
        start = text.index(sentence, position)
        position = start + len(sentence)
        out.extend(_split_sentence(sentence, start))
    return [c for c in out if re.search(r"\w", c.text)]


def _split_sentence(sentence: str, offset: int) -> list[Clause]:
    content_at = content_start(sentence)
    cuts: list[tuple[int, int]] = []
    for match in _BOUNDARY.finditer(sentence):
        inside_content = match.start() >= content_at
        bare_comma = match.group().strip() in (",", "-", "--")
        if inside_content and (bare_comma or not _starts_with_verb(sentence[match.end():])):
            continue
        left = sentence[cuts[-1][1] if cuts else 0: match.start()]
        if bare_comma and len(re.findall(r"[A-Za-z']+", re.sub(r"\b[A-Z]+-?\d+\b", " ", left))) < 3:
            continue
        cuts.append(match.span())
    pieces: list[Clause] = []
    begin = 0
    for cut_start, cut_end in [*cuts, (len(sentence), len(sentence))]:
        piece = sentence[begin:cut_start]
        stripped = piece.strip(" ,;")
        if stripped:
            lead = piece.index(stripped)
            pieces.append(_clause(stripped, offset + begin + lead))
        begin = cut_end
    return pieces


def content_start(text: str) -> int:
    """Where free text (a comment, a summary) starts in `text`: after an instruction's colon or "saying"; else its end.

    A colon only opens free text after an instruction ("open a ticket: ..."), not after a label ("Urgent: ...").
    """
    for match in _CONTENT_START.finditer(text):
        before = text[: match.start()]
        if match.group().strip() != ":" or re.search(rf"\b(?:{_VERB_ALT})\b", before, re.IGNORECASE):
            return match.start()
    return len(text)


def head(text: str) -> str:
    """The instruction part of a clause, without the free text it carries."""
    return text[: content_start(text)]


def _starts_with_verb(text: str) -> bool:
    word = re.match(r"\s*(\w+)", text)
    return bool(word and word.group(1).lower() in ACTION_VERBS)


def _clause(text: str, start: int) -> Clause:
    return Clause(text=text, start=start, end=start + len(text), injection=bool(_INJECTION.search(text)),
                  command=bool(_IMPERATIVE_START.match(text)))


def is_small_talk(text: str) -> bool:
    """Whether the whole request is a greeting, thanks or a question about the assistant itself."""
    return bool(_SMALL_TALK.match(text)) and len(re.findall(r"\w+", text)) <= 8


def injection_span(text: str) -> bool:
    """Whether `text` tries to change the assistant's instructions or role."""
    return bool(_INJECTION.search(text))
