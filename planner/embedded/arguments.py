"""Filling a tool's arguments from the words of a request: record ids, people, dates, amounts and free text."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from planner.embedded import values
from planner.embedded.dates import MONTHS, WEEKDAYS, find_dates
from planner.embedded.intents import INC, ISSUE_KEY, NOT_PROJECTS, RITM
from planner.embedded.model import Person
from planner.embedded.people import Directory, Mention, third_person
from planner.embedded.text import ACTION_VERBS, Clause, content_start
from planner.embedded.tools import ToolInfo

_REQ = re.compile(r"\bREQ\d{5,}\b", re.IGNORECASE)
# Arguments a statement elsewhere in the request can supply ("Umbrella Expansion will close on Feb 28 - update it").
_FROM_STATEMENTS = frozenset({"number", "key", "opportunity", "account", "related_to", "close_date", "due_date",
                              "amount", "stage", "group", "item", "requested_for"})
_ANAPHORA = re.compile(r"\b(?:it|them|they|their|that one|this one)\b", re.IGNORECASE)
_ARTICLES = r"(?:a|an|the|some|my|our|this|that|these|those|one|another|new|brand new|replacement|spare|extra)"
_FILLER = frozenset(
    """a an the to for of in on at by with and or it this that these those me my i you your we our us please pls can
    could would will should just also kindly ticket tickets incident incidents issue issues jira servicenow open create
    file log raise submit new one so why how what which is are be was it's im i'm get make sure someone somebody look
    into take look at up out now again help""".split()
)
_STOP_IN_NAMES = frozenset(
    """to as at is was on in for by with from of and or the a an stage amount close closing date next step steps
    value probability owner status please it its this that be set move mark update change push closed won lost open
    done resolved fixed signed now""".split()
)
_GENERIC_RECORD_NOUNS = ("opportunity", "opportunities", "opp", "opps", "deal", "deals", "account", "accounts")
_NOT_NAMES = frozenset(
    """I Salesforce Jira Okta ServiceNow SOQL JQL Please Can Could Would Will The A An My Our Closed Won Lost Open New
    Done Hi Hey Thanks Also Then Urgent What Which Who Where When How Is Are Do Does Did Show List Find Log Create
    We They He She It You Their This That These Those There Here Yes No Ok Okay
    Mark Move Push Set Update Change Close Get Give Add Put Remove Make Tell Let Search Look Pull File Raise
    Approve Reject Decline Order Request Assign Reset Unlock Note Comment Any Case Ticket Bug Task Story Incident
    Issue Jira Opportunity Account Deal""".split()
)


@dataclass(frozen=True)
class Ambiguous:
    """A name that fits several directory entries."""

    name: str
    candidates: tuple[Person, ...]


@dataclass(frozen=True)
class Unknown:
    """A name that fits nobody in the directory."""

    name: str


PersonValue = str | Ambiguous | Unknown | None


@dataclass
class Scope:
    """Everything argument extraction may read for one step: its clause, the request and the requester's world."""

    request: str
    clause: Clause
    others: Sequence[Clause]
    requester: str
    directory: Directory
    today: dt.date
    history: Sequence[str] = ()
    mentions: list[Mention] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.mentions = self.directory.mentions(self.clause.text, self.requester)

    @property
    def text(self) -> str:
        """The clause's text."""
        return self.clause.text

    def statements(self) -> list[str]:
        """The request's other clauses that state a problem or a reason rather than ask for something."""
        return [c.text for c in self.others if not c.injection and not c.command]


@dataclass
class Filled:
    """A step's arguments, and what stops it from being planned as is (a missing or unclear detail)."""

    args: dict[str, Any]
    missing: list[str]
    unclear: list[Ambiguous | Unknown]


def fill(tool: ToolInfo, scope: Scope) -> Filled:
    """Every argument of `tool`: the value the request gives, else the schema default (`me` → the requester)."""
    args: dict[str, Any] = {}
    unclear: list[Ambiguous | Unknown] = []
    for name in tool.properties:
        value: Any
        if tool.is_person(name):
            value = _person(tool, name, scope)
            if value is None and name in _FROM_STATEMENTS:
                value = next((v for s in scope.statements() if s != scope.text
                              if (v := _person(tool, name, _statement_scope(scope, s))) is not None), None)
            if isinstance(value, Ambiguous | Unknown):
                unclear.append(value)
                value = None
        else:
            extractor = _EXTRACTORS.get(name)
            value = extractor(tool, name, scope) if extractor else None
            if value is None and extractor is not None and name in _FROM_STATEMENTS:
                value = next((v for s in scope.statements() if s != scope.text
                              if (v := extractor(tool, name, _statement_scope(scope, s))) is not None), None)
        if value is None or value == "":
            value = tool.default(name)
            if tool.is_person(name) and isinstance(value, str) and value.lower() == "me":
                value = scope.requester
        args[name] = value
    return Filled(args, missing_arguments(tool, args), unclear)


def missing_arguments(tool: ToolInfo, args: dict[str, Any]) -> list[str]:
    """Required arguments without a value; an unmet `anyOf` shows as its alternatives joined by `|`."""
    missing = [name for name in tool.required if args.get(name) in (None, "")]
    if tool.alternatives and not any(all(args.get(n) not in (None, "") for n in alt) for alt in tool.alternatives):
        missing.append("|".join(name for alt in tool.alternatives for name in alt))
    return missing


# ---- record identifiers -------------------------------------------------------------------------------------------


def _record_number(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    pattern = tool.pattern(name)
    kinds = (INC, RITM, _REQ) if pattern is None else tuple(
        p for p, prefix in ((INC, "INC"), (RITM, "RITM"), (_REQ, "REQ")) if prefix in pattern.pattern
    )
    for text in (scope.text, *scope.history):
        for kind in kinds:
            match = kind.search(text)
            if match:
                return match.group().upper()
    return None


def _issue_key(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    for text in (scope.text, *scope.history):
        match = ISSUE_KEY.search(text)
        if match:
            return match.group()
    return None


def _project(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    text = _without_ids(scope.text)
    for pattern in (
        r"\b(?:in|into|to|for|under|on)\s+(?:the\s+)?(?:jira\s+)?(?:project\s+)?(?-i:([A-Z][A-Z0-9]{1,9}))\b(?![-'])",
        r"(?-i:\b([A-Z][A-Z0-9]{1,9}))\s+(?:project|board|backlog|space|queue)\b",
        r"(?-i:\b([A-Z][A-Z0-9]{1,9}))\s+(?:issues|bugs|tickets|stories|tasks|epics|bug|task|story|issue)\b",
        r"\bproject\s+(?:key\s+)?[\"']?([A-Za-z][A-Za-z0-9]{1,9})\b",
        r"\b(?:the|in|into)\s+([a-z][a-z0-9]{1,9})\s+(?:project|board|backlog)\b",
    ):
        for match in re.finditer(pattern, text, re.IGNORECASE):
            key = match.group(1).upper()
            if key not in NOT_PROJECTS and not key.isdigit():
                return key
    if tool.action.startswith("create"):
        head_text = text[: content_start(text)]
        for match in re.finditer(r"(?<![\w-])([A-Z][A-Z0-9]{1,9})(?![\w-])", head_text):
            if match.group(1) not in NOT_PROJECTS:
                return match.group(1)
    return None


def _without_ids(text: str) -> str:
    return RITM.sub(" ", INC.sub(" ", ISSUE_KEY.sub(" ", text)))


# ---- people -------------------------------------------------------------------------------------------------------


def _person(tool: ToolInfo, name: str, scope: Scope) -> PersonValue:
    """The person an argument names, by the argument's role in the tool."""
    text = scope.text
    mentions = scope.mentions
    others = [m for m in mentions if not m.is_self]
    if name in ("assignee", "assigned_to"):
        if tool.action.startswith("search") or tool.action.startswith("list"):
            return _filter_person(scope, others)
        if tool.action.startswith("create") and not re.search(r"\bassign|\bfor\s+\w+\s+to\b|\bowner\b", text,
                                                                re.IGNORECASE):
            return None
        cue = re.search(r"\b(?:assign\w*|give|hand|reassign\w*|to)\b", text, re.IGNORECASE)
        after = [m for m in mentions if cue and m.start > cue.start()] or mentions
        chosen = _last_meaningful(after, text)
        if chosen is None:
            return _pronoun(scope) or _unknown_name(text, r"\b(?:to|for)\s+([A-Z][a-z]+)\b(?![-'])")
        return _value(chosen, scope)
    if name in ("owner", "caller"):
        return _filter_person(scope, others, default_self=False)
    if others:
        return _value(others[0], scope)
    if any(m.is_self for m in mentions):
        return scope.requester
    return _pronoun(scope) or _unknown_name(text, r"(?-i:\b([A-Z][a-z]+))'s\b")


def _filter_person(scope: Scope, others: list[Mention], *, default_self: bool = True) -> PersonValue:
    """The person a search or list is about: someone named, else the requester when they say "my" or "I have"."""
    text = scope.text
    for mention in others:
        before = text[max(0, mention.start - 30): mention.start].lower()
        if mention.possessive or re.search(r"(?:assigned to|owned by|for|of|by|raised by|from)\s+$", before):
            return _value(mention, scope)
    if others and not re.search(r"\bshow\b|\btell\b", text[: others[0].start], re.IGNORECASE):
        return _value(others[0], scope)
    lowered = text.lower()
    owned = re.search(r"\bmy\b(?! (?:account|password|manager|boss))|\bmine\b|\bassigned to me\b|\bi (?:have|own|am|'m)"
                      r"\b|\bi've got\b|\bon my plate\b|\bdo i\b|\bam i\b|\bhave i\b|\bi raised\b|\bi opened\b|"
                      r"\bfor me to\b|\bopen for me\b|\bwaiting (?:for|on) me\b|\bon me\b", lowered)
    if owned and (default_self or "assigned" in lowered):
        return scope.requester
    return None


def _last_meaningful(mentions: list[Mention], text: str) -> Mention | None:
    """The person a "to whom" argument names: the last one named, else the requester speaking of themselves."""
    usable = [m for m in mentions if m.text.lower() not in ("my", "mine", "i", "i'm", "im")]
    if usable:
        return usable[-1]
    return next((m for m in mentions if m.is_self), None)


def _value(mention: Mention, scope: Scope) -> PersonValue:
    if mention.is_self:
        return scope.requester
    if mention.person is not None:
        return mention.person.email
    if mention.candidates:
        return Ambiguous(mention.text, mention.candidates)
    return Unknown(mention.text)


def _pronoun(scope: Scope) -> PersonValue:
    """The person a pronoun refers to: the last other person named earlier in the request."""
    if not third_person(scope.text):
        return None
    earlier = [m for m in scope.directory.mentions(scope.request[: scope.clause.start], scope.requester)
               if not m.is_self]
    if not earlier:
        earlier = [m for m in scope.directory.mentions(scope.request, scope.requester) if not m.is_self]
    return _value(earlier[-1], scope) if earlier else None


def _unknown_name(text: str, pattern: str) -> Unknown | None:
    match = re.search(pattern, text)
    if not match or match.group(1) in _NOT_NAMES or match.group(1).lower() in ACTION_VERBS:
        return None
    word = match.group(1)
    if word.capitalize() in MONTHS or word.lower() in MONTHS or word.lower() in WEEKDAYS:
        return None
    return Unknown(word)


# ---- free text ----------------------------------------------------------------------------------------------------


def _clean(text: str | None, limit: int = 160) -> str | None:
    if text is None:
        return None
    text = re.sub(r"\s+", " ", text).strip(" \t,;:-\"'")
    text = re.sub(r"^(?:please|pls|kindly)\s+", "", text, flags=re.IGNORECASE)
    text = re.sub(r"[\s,]*(?:please|pls|thanks|thank you|thx)[.!?]*$", "", text, flags=re.IGNORECASE)
    text = text.strip(" ,;:-\"'")
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def _meaningful(text: str | None, minimum: int = 1) -> bool:
    if not text:
        return False
    words = [w for w in re.findall(r"[a-z0-9']+", text.lower()) if w not in _FILLER]
    return len(words) >= minimum


def _quoted(text: str) -> str | None:
    match = re.search(r"\"([^\"]{2,})\"|'([^']{3,})'(?!s\b)", text)
    return (match.group(1) or match.group(2)) if match else None


def _after_colon(text: str) -> str | None:
    match = re.search(r":\s+(.+)$", text)
    return match.group(1) if match and _meaningful(match.group(1)) else None


def _comment_text(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    """The text of a comment: quoted, after a colon or "saying"/"that", else what follows the record id."""
    text = scope.text
    quoted = _quoted(text)
    if quoted:
        return _clean(quoted, 4000)
    match = re.search(r":\s*(.+)$|\b(?:saying|that says|to say|stating|reading|with the comment|with comment|"
                      r"with note|noting|asking|to let (?:them|it|him|her) know|letting (?:them|it) know)\b"
                      r"\s*:?\s*(.+)$", text, re.IGNORECASE)
    if match:
        return _clean(match.group(1) or match.group(2), 4000)
    record = INC.search(text) or ISSUE_KEY.search(text) or RITM.search(text)
    if record:
        rest = text[record.end():]
        rest = re.sub(r"^\s*(?:with|that|to say|saying|:|-|,)\s*", "", rest, flags=re.IGNORECASE)
        if _meaningful(rest):
            return _clean(rest, 4000)
        head = text[: record.start()]
        head = re.sub(r"\b(?:on|to|for)\s*$", "", head, flags=re.IGNORECASE)
        head = re.sub(r"^\s*(?:please\s+)?(?:add|post|write|leave|put|tell \w+|comment|note|reply)\b\s*"
                      r"(?:a\s+)?(?:comment|note)?\s*", "", head, flags=re.IGNORECASE)
        if _meaningful(head, 2):
            return _clean(head, 4000)
    if tool.action in ("approve", "reject"):
        reason = re.search(r"(?:[,;:]\s*|\s+-\s+|\b(?:because|since|as|due to)\s+)(.+)$", text, re.IGNORECASE)
        if reason and _meaningful(reason.group(1)):
            return _clean(reason.group(1), 4000)
        return None
    return None


def _ticket_description(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    """A one-line summary of the problem or the work: after a colon, after the ticket noun, or the problem told."""
    text = _without_behalf(scope.text)
    quoted = _quoted(text)
    if quoted:
        return _clean(quoted)
    colon = _after_colon(text)
    if colon:
        return _clean(colon)
    nouns = r"(?:ticket|incident|issue|bug|task|story|epic|case|item|request)s?"
    head = re.search(rf"\b{nouns}\b", text, re.IGNORECASE)
    if head:
        rest = text[head.end():]
        rest = re.sub(r"^\s*(?:(?:in|on|for|against|with)\s+(?:the\s+)?(?-i:[A-Z][A-Z0-9]{1,9}\b)(?:\s+project)?)?",
                      "", rest)
        if tool.connector == "salesforce":
            rest = re.sub(r"^\s*(?:for|on|against|with)\s+(?:the\s+)?(?:[A-Z][\w&.'-]*\s*)+(?:account\b)?", "", rest)
        rest = rest.strip()
        if not re.match(r"(?:so\b|and\b|please\b|for me\b|for it\b|asap\b|now\b|$)", rest, re.IGNORECASE):
            rest = re.sub(r"^(?:,|-|to say|saying|that says|about|regarding|re|for|that|because|since|as|to|:)\s*",
                          "", rest, flags=re.IGNORECASE)
            if _meaningful(rest, 2):
                return _clean(rest)
    problem = [s for s in scope.statements() if _meaningful(s)]
    if problem:
        return _clean(_strip_labels(" ".join(problem)))
    if tool.name == "servicenow.create_incident" or tool.action.startswith("create"):
        own = re.sub(r"^\W*(?:please\s+|can you\s+|could you\s+)?(?:report|flag|tell it about|let it know about)\s+",
                     "", text, flags=re.IGNORECASE)
        if own != text and _meaningful(own, 2):
            return _clean(own)
        if not scope.clause.command and _meaningful(text, 2):
            return _clean(_strip_labels(text))
    return None


def _subject(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    """A case's subject, or a to-do's: what to do ("remind me to call Initech next Tuesday" → "call Initech")."""
    if tool.action != "create_task":
        return _ticket_description(tool, name, scope)
    text = scope.text
    for date in reversed(find_dates(text, scope.today)):
        text = text[: date.start] + text[date.end:]
    text = re.sub(r"\b(?:by|on|before|until|due)\s*$", "", text.strip(), flags=re.IGNORECASE)
    quoted = _quoted(text) or _after_colon(text)
    if quoted:
        return _clean(quoted)
    match = re.search(r"\b(?:remind (?:me|us)|reminder|to-?do|task|follow[- ]up)\b.*?\b(?:to|:)\s+(.+)$", text,
                      re.IGNORECASE)
    if match and _meaningful(match.group(1)):
        return _clean(re.sub(r"\s+(?:by|on|before|due)\s*$", "", match.group(1), flags=re.IGNORECASE))
    match = re.search(r"\bfollow[- ]up (?:with|on)\s+(.+)$", text, re.IGNORECASE)
    if match:
        return _clean(f"Follow up with {match.group(1)}")
    return None


def _without_behalf(text: str) -> str:
    return re.sub(r"\s*\bon behalf of\s+\S+(?:\s+[A-Z]\w+)?", "", text, flags=re.IGNORECASE)


def _strip_labels(text: str) -> str:
    return re.sub(r"^\W*(?:urgent|important|fyi|note|help|hi|hello|hey)\b\W*", "", text, flags=re.IGNORECASE)


def _full_description(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    """Details beyond the one-line summary, when the request gives more than one sentence about the problem."""
    statements = [s for s in scope.statements() if _meaningful(s, 2)]
    if len(statements) >= 2:
        return _clean(" ".join(statements), 4000)
    return None


def _search_text(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    """Words an issue's text must contain: the topic after "about"/"mentioning", or the words naming the issue."""
    text = _without_ids(scope.text)
    match = re.search(r"\b(?:about|mentioning|regarding|related to|concerning|containing|titled|called|named|"
                      r"with the words?|that mentions?|on the topic of|for)\s+(.+?)(?:\s+(?:in|on)\s+jira\b|[,;.!?]|"
                      r"\s+and\b|\s+(?:that|which)\s+(?:is|are)\b|$)", text, re.IGNORECASE)
    phrase = match.group(1) if match else None
    if phrase is None:
        named = re.search(r"\b(?:find|search for|look for|look up|locate|get)\s+(?:me\s+)?(?:the|a|an|that)\s+(.+?)\s+"
                          r"(?:jira\s+)?(?:issue|ticket|bug|story|task)\b", text, re.IGNORECASE)
        phrase = named.group(1) if named else None
    if phrase is None and _ANAPHORA.search(text):
        for statement in scope.statements():
            found = _search_text(tool, name, _statement_scope(scope, statement))
            if found:
                return found
    if phrase is None:
        return None
    phrase = re.sub(rf"^{_ARTICLES}\s+", "", phrase.strip(), flags=re.IGNORECASE)
    phrase = re.sub(r"\s+(?:jira\s+)?(?:issues?|tickets?|bugs?|stories|story|tasks?)$", "", phrase, flags=re.IGNORECASE)
    phrase = re.sub(r"^(?:jira\s+)?(?:issues?|tickets?|bugs?)\s+(?:about|on|for)\s+", "", phrase, flags=re.IGNORECASE)
    phrase = re.sub(rf"^{_ARTICLES}\s+", "", phrase.strip(), flags=re.IGNORECASE)
    if phrase.lower() in ("me", "it", "them", "jira") or not _meaningful(phrase):
        return None
    return _clean(phrase, 200)


def _statement_scope(scope: Scope, statement: str) -> Scope:
    """A scope over one of the request's statements, for details a pronoun ("it", "them") points back to."""
    start = scope.request.find(statement)
    clause = Clause(statement, max(start, 0), max(start, 0) + len(statement), injection=False, command=False)
    return Scope(scope.request, clause, [], scope.requester, scope.directory, scope.today)


def _query(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    if name == "soql":
        match = re.search(r"\bselect\b.+$", scope.text, re.IGNORECASE)
        return match.group().strip().rstrip(".") if match else None
    match = re.search(r"\bjql\b\s*:?\s*(.+)$", scope.text, re.IGNORECASE)
    return _clean(match.group(1), 2000) if match else None


# ---- named records ------------------------------------------------------------------------------------------------


def record_names(text: str, directory: Directory, requester: str, skip: Sequence[str] = ()) -> list[str]:
    """Names of records (accounts, opportunities) in `text`: runs of capitalized words and the nouns that follow."""
    masked = text
    for phrase in skip:
        if phrase:
            masked = re.sub(re.escape(phrase), lambda m: " " * len(m.group()), masked, flags=re.IGNORECASE)
    for mention in directory.mentions(text, requester):
        masked = masked[: mention.start] + " " * (mention.end - mention.start) + masked[mention.end:]
    masked = ISSUE_KEY.sub(lambda m: " " * len(m.group()), INC.sub(lambda m: " " * len(m.group()), masked))
    tokens = list(re.finditer(r"[A-Za-z0-9][\w&.'-]*", masked))
    names: list[str] = []
    current: list[str] = []
    first_word = True
    for index, token in enumerate(tokens):
        word = token.group().rstrip(".'")
        gap = masked[tokens[index - 1].end(): token.start()] if index else ""
        broken = bool(re.search(r"[,;:!?()\"]|\s{2,}", gap)) or gap.strip(" ") not in ("",)
        if broken and current:
            names.append(" ".join(current))
            current = []
        capital = word[:1].isupper() and word not in _NOT_NAMES and (word.upper() != word or len(word) > 1)
        sentence_start = first_word or bool(re.search(r"[.!?:]\s*$", masked[: token.start()]))
        first_word = False
        if capital and not (sentence_start and word.lower() in ACTION_VERBS) and not _is_calendar(word):
            current.append(word)
        elif current and word.lower() not in _STOP_IN_NAMES and not _is_calendar(word) and (
                word[:1].islower() or word.isdigit()):
            current.append(word)
        elif current:
            names.append(" ".join(current))
            current = []
    if current:
        names.append(" ".join(current))
    out = []
    for name in names:
        words = name.split()
        while words and words[-1].lower() in (*_GENERIC_RECORD_NOUNS, "'s", "s"):
            words.pop()
        while words and re.fullmatch(r"\W*", words[-1]):
            words.pop()
        cleaned = re.sub(r"'s$", "", " ".join(words)).strip()
        if cleaned and not re.fullmatch(r"[a-z0-9 ]+", cleaned):
            out.append(cleaned)
    return out


def _is_calendar(word: str) -> bool:
    lowered = word.lower().rstrip(".")
    return lowered in MONTHS or lowered in WEEKDAYS


def _lowercase_record(text: str) -> str | None:
    match = re.search(r"\b(?:the|for|on|of|about|with)\s+([a-z][\w&.'-]*(?:\s+[a-z][\w&.'-]*){0,2}?)\s+"
                      r"(?:deal|opportunity|opp|account|renewal|expansion|upsell|pilot)\b", text)
    if not match or match.group(1) in _STOP_IN_NAMES or match.group(1) in ("my", "our", "this", "that"):
        return None
    suffix = re.search(r"\s+(renewal|expansion|upsell|pilot)\b", text[match.end(1):match.end()])
    return match.group(1) + (f" {suffix.group(1)}" if suffix else "")


def _named_record(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    """An account or opportunity named in words, excluding stages, dates and people."""
    text = scope.text
    content = re.search(r":\s|\b(?:about|because|since|saying)\b|,\s", text)
    head = text[: content.start()] if content and tool.action in ("create_case", "create_task") else text
    skip = [s for s in _stage_words(tool, head)]
    skip += [head[d.start:d.end] for d in find_dates(head, scope.today)]
    names = record_names(head, scope.directory, scope.requester, skip)
    if names:
        return names[0]
    return _lowercase_record(head.lower())


def _stage_words(tool: ToolInfo, text: str) -> list[str]:
    known = _known_stages(tool)
    found = []
    for stage_name in known:
        if re.search(re.escape(stage_name), text, re.IGNORECASE):
            found.append(stage_name)
    found += re.findall(r"\bclosed[- ](?:won|lost)\b", text, re.IGNORECASE)
    return found


def _known_stages(tool: ToolInfo) -> list[str]:
    return values.stages_from(tool.properties.get("stage", {}).get("description", "")) or [
        "Prospecting", "Qualification", "Needs Analysis", "Proposal/Price Quote", "Negotiation/Review", "Closed Won",
        "Closed Lost"]


def _catalog_item(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    """The thing asked for ("a new external monitor" → "external monitor"), or the item an approval is about."""
    text = _without_ids(scope.text)
    if tool.action in ("approve", "reject"):
        for pattern in (
            r"(?:'s|\bthe|\bthat|\bthis|\bhis|\bher|\btheir|\bmy)\s+(?P<item>[\w -]+?)\s+"
            r"(?:request|order|requisition)\b",
            r"\b(?:request|order)\s+for\s+(?:an?\s+|the\s+|some\s+)?(?P<item>[\w -]+?)"
            r"(?:\s+(?:from|for|by)\b|\s+-\s|[,.;:!?]|$)",
        ):
            match = re.search(pattern, text, re.IGNORECASE)
            if match:
                item = _strip_people(match.group("item"), scope)
                item = re.sub(rf"^{_ARTICLES}\s+", "", item, flags=re.IGNORECASE).strip()
                if item and item.lower() not in ("pending", "new", "latest", "last", "only", "open"):
                    return item
        return None
    match = re.search(r"\b(?:need|want|order|request|requisition|get me|get us|get|have|buy|purchase|like|requesting|"
                      r"ordering)\b\s+"
                      r"(?:to\s+(?:order|request|get|have|buy)\s+)?(?:me\s+|us\s+)?(?P<rest>.+)$", text, re.IGNORECASE)
    if not match:
        return None
    rest = match.group("rest")
    rest = re.split(r"[,.;!?]|\s+-\s+|\b(?:for|because|since|so|as|please|mine|my old|which|that|to replace|asap|"
                    r"today|tomorrow|by)\b", rest, maxsplit=1, flags=re.IGNORECASE)[0]
    rest = re.sub(r"^(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|a couple of|a pair of)\s+", "",
                  rest.strip(), flags=re.IGNORECASE)
    for _ in range(3):
        rest = re.sub(rf"^{_ARTICLES}\s+", "", rest.strip(), flags=re.IGNORECASE)
    rest = re.sub(r"\s+(?:from the catalog|from it|please)$", "", rest.strip(), flags=re.IGNORECASE)
    quantity = values.count_word(text) or 1
    if quantity > 1 and re.search(r"[^s]s$", rest):
        rest = rest[:-1]
    return _clean(rest, 100) if _meaningful(rest) else None


def _strip_people(text: str, scope: Scope) -> str:
    for mention in scope.directory.mentions(text, scope.requester):
        text = text.replace(mention.text, " ")
    return re.sub(r"\s+", " ", text).strip()


def _group(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    """An Okta group named in the request ("the Salesforce-Users group" → "Salesforce-Users")."""
    text = scope.text
    hyphen = re.search(r"(?-i:\b[A-Z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)+\b)", text)
    if hyphen and not ISSUE_KEY.fullmatch(hyphen.group()):
        return hyphen.group()
    for pattern in (
        r"\b(?:to|into|in|from|out of|of)\s+(?:the\s+)?(?:okta\s+)?(?P<g>[\w&' -]+?)\s+(?:okta\s+)?group\b",
        r"\bgroup\s+(?:called\s+|named\s+)?['\"]?(?P<g>[\w&-]+(?:\s+[A-Z][\w&-]*)*)",
        r"\b(?:to|into|from|out of)\s+(?:the\s+)?(?P<g>[A-Z][\w&-]*(?:\s+[A-Z][\w&-]*)*)",
        r"\b(?:the|my)\s+(?P<g>[\w&-]+(?:\s+[\w&-]+)?)\s+group\b",
    ):
        match = re.search(pattern, text, re.IGNORECASE if "(?-i" not in pattern else 0)
        if match:
            group = _strip_people(match.group("g"), scope)
            group = re.sub(r"^(?:the|a|an|my)\s+", "", group, flags=re.IGNORECASE).strip(" '\"")
            if group and group.lower() not in ("me", "him", "her", "them", "the", "a"):
                return group
    return None


# ---- typed values -------------------------------------------------------------------------------------------------


def _urgency(tool: ToolInfo, name: str, scope: Scope) -> int | None:
    texts = [scope.text] if tool.action.startswith("update") else [scope.text, *scope.statements()]
    for text in texts:
        value = values.urgency(text)
        if value is not None and (not tool.enum(name) or value in tool.enum(name)):
            return value
    return None


def _priority(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    for text in (scope.text, *scope.statements()):
        value = values.priority(text)
        if value:
            return value
    return None


def _status(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    text = _without_ids(scope.text)
    if tool.action.startswith("transition"):
        return values.jira_status(text, target=True)
    if re.search(r"\b(?:in|with) (?:the )?status\b|\bthat are\b|\bin (?:review|progress)\b|\bdone\b|\bto do\b|"
                 r"\bblocked\b|\bclosed\b|\bfinished\b", text, re.IGNORECASE):
        return values.jira_status(text, target=False)
    return None


def _state(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    allowed = [str(v) for v in tool.enum(name)]
    if tool.action.startswith("list") and "open" in allowed:
        return values.list_state(scope.text, allowed)
    if tool.action.startswith("list"):
        return values.approval_state(scope.text, allowed)
    return values.incident_state(_without_ids(scope.text), allowed)


def _stage(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    return values.stage(scope.text, _known_stages(tool))


def _amount(tool: ToolInfo, name: str, scope: Scope) -> float | None:
    found = values.amounts(_without_ids(scope.text))
    return found[0] if found else None


def _date(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    dates = find_dates(_without_ids(scope.text), scope.today)
    return dates[0].value.isoformat() if dates else None


def _include_closed(tool: ToolInfo, name: str, scope: Scope) -> bool | None:
    if re.search(r"\bclosed\b|\blost\b|\bwon\b|\ball (?:of )?(?:my )?(?:deals|opportunities)\b", scope.text,
                 re.IGNORECASE) and not re.search(r"\bclosing\b|\bclose date\b", scope.text, re.IGNORECASE):
        return True
    return None


def _issue_type(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    return values.issue_type(scope.text, [str(v) for v in tool.enum(name)] or ["Task", "Bug", "Story"])


def _limit(tool: ToolInfo, name: str, scope: Scope) -> int | None:
    return values.limit(scope.text)


def _quantity(tool: ToolInfo, name: str, scope: Scope) -> int | None:
    return values.count_word(_without_ids(scope.text))


def _justification(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    match = re.search(r"\b(?:because|since|as|for|so that|so)\s+(.+)$|,\s*(.+)$", scope.text, re.IGNORECASE)
    reason = (match.group(1) or match.group(2)) if match else None
    if reason is None:
        statements = [s for s in scope.statements() if _meaningful(s, 2)]
        reason = " ".join(statements) if statements else None
    return _clean(reason, 1000) if _meaningful(reason, 2) else None


def _next_step(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    match = re.search(r"\bnext step\b.*?(?:\bto\b|\bas\b|:)\s*['\"]?(.+?)['\"]?\s*$", scope.text, re.IGNORECASE)
    return _clean(match.group(1), 255) if match else None


def _close_notes(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    match = re.search(r"\b(?:with (?:the )?(?:close |resolution )?notes?|notes?)\s*:?\s*(.+)$", scope.text,
                      re.IGNORECASE)
    return _clean(match.group(1), 4000) if match else None


def _close_code(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    if re.search(r"\bwork ?around\b", scope.text, re.IGNORECASE):
        return "Solved (Work Around)"
    return None


def _category(tool: ToolInfo, name: str, scope: Scope) -> str | None:
    match = re.search(r"\bcategory\s*(?:of|:|=|to)?\s*['\"]?(\w+)", scope.text, re.IGNORECASE)
    return match.group(1).lower() if match else None


_Extractor = Callable[[ToolInfo, str, Scope], Any]
_EXTRACTORS: dict[str, _Extractor] = {
    "number": _record_number,
    "key": _issue_key,
    "project": _project,
    "comment": _comment_text,
    "short_description": _ticket_description,
    "summary": _ticket_description,
    "subject": _subject,
    "description": _full_description,
    "text": _search_text,
    "jql": _query,
    "soql": _query,
    "opportunity": _named_record,
    "account": _named_record,
    "name": _named_record,
    "related_to": _named_record,
    "item": _catalog_item,
    "group": _group,
    "urgency": _urgency,
    "priority": _priority,
    "status": _status,
    "state": _state,
    "stage": _stage,
    "amount": _amount,
    "min_amount": _amount,
    "close_date": _date,
    "due_date": _date,
    "closing_before": _date,
    "include_closed": _include_closed,
    "issue_type": _issue_type,
    "limit": _limit,
    "quantity": _quantity,
    "justification": _justification,
    "next_step": _next_step,
    "close_notes": _close_notes,
    "close_code": _close_code,
    "category": _category,
}
