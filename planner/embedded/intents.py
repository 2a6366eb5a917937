"""Recognising which tool a clause asks for: sentence-embedding similarity to the catalog's examples plus cues."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from planner.embedded.encoder import Encoder
from planner.embedded.text import Clause
from planner.embedded.tools import ToolInfo

INC = re.compile(r"\bINC\d{5,}\b", re.IGNORECASE)
RITM = re.compile(r"\bRITM\d{5,}\b", re.IGNORECASE)
ISSUE_KEY = re.compile(r"\b[A-Z][A-Z0-9]{1,9}-\d+\b")
# A Jira issue key's shape inside a pattern: ^[A-Z][A-Z0-9]+-\d+$ and the like.
_KEY_SHAPE = re.compile(r"\[A-Z\].*-\\d")

CONNECTOR_NAMES: dict[str, re.Pattern[str]] = {
    "jira": re.compile(r"(?<![-\w])jira(?![-\w])", re.IGNORECASE),
    "servicenow": re.compile(r"(?<![-\w])(?:service ?now|snow)(?![-\w])", re.IGNORECASE),
    "salesforce": re.compile(r"(?<![-\w])(?:salesforce|sfdc|crm)(?![-\w])(?!\s+(?:access|license|licence))",
                             re.IGNORECASE),
    "okta": re.compile(r"(?<![-\w])okta(?![-\w])", re.IGNORECASE),
}

_CHANGE = (r"\b(?:assign|reassign|give|hand|resolve|close|set|mark|move|update|change|add|comment|put|escalate|bump|"
           r"transition|reopen|start|push|note|post|write|reply|approve|reject|decline)\w*\b")
_QUESTION = re.compile(r"^\W*(?:what|which|who|whose|where|when|how|is|are|does|do|did|has|have|am|any)\b",
                       re.IGNORECASE)
_GROUP_NAME = r"(?-i:\b[A-Z][A-Za-z0-9]*(?:-[A-Z][A-Za-z0-9]*)+\b)"
_CREATE_TICKET = (r"\b(?:open|create|file|log|raise|submit|cut|lodge|make|put in|start|report|need|want)\s+(?:up\s+)?"
                  r"(?:a|an|new|another|one|me a)\b[^.?!]{0,40}?\b(?:ticket|incident)s?\b|\bnew (?:ticket|incident)\b")


@dataclass(frozen=True)
class Cue:
    """Adds `weight` to a tool when every pattern in `all_of` and none in `none_of` occurs in the clause."""

    all_of: tuple[re.Pattern[str], ...]
    none_of: tuple[re.Pattern[str], ...]
    weight: float

    def matches(self, text: str) -> bool:
        """Whether the cue fires on `text`."""
        return all(p.search(text) for p in self.all_of) and not any(p.search(text) for p in self.none_of)


def _cue(all_of: Sequence[str], weight: float, none_of: Sequence[str] = ()) -> Cue:
    return Cue(tuple(re.compile(p, re.IGNORECASE) for p in all_of),
               tuple(re.compile(p, re.IGNORECASE) for p in none_of), weight)


# Lexical cues per catalog tool: the words people use for each action, beyond the manifest's examples.
CUES: dict[str, tuple[Cue, ...]] = {
    "okta.get_user": (
        _cue([r"\bmanager\b|\bboss\b|\bsupervisor\b|\breport(?:s|ing)? (?:in)?to\b|\bline manager\b"], 0.45),
        _cue([r"\b(?:job )?title\b|\bdepartment\b|\bprofile\b|\bphone number\b|\bwho is\b|\bwho's\b"], 0.15,
             [r"\bassign|\bworking on\b|\bhandling\b"]),
        _cue([r"\baccount status\b|\bokta (?:account|status|profile)\b|\baccount (?:is )?active\b"], 0.25),
    ),
    "okta.list_groups": (
        _cue([r"\bgroups?\b|\bmemberships?\b"], 0.35,
             [r"\b(?:add|put|remove|take|drop|kick|grant|revoke|include|join)\b"]),
    ),
    "okta.list_apps": (
        _cue([r"\b(?:apps?|applications?|tiles?)\b"], 0.4, [r"\bapprov"]),
        _cue([r"\b(?:have|got|get) access to\b|\bcan i (?:use|access|get into|log ?in)"], 0.2,
             [r"\bpassword\b|\bgroup\b|\bneed\b|\brequest\b"]),
    ),
    "okta.reset_password": (
        _cue([r"\bpass ?words?\b|\bpwd\b|\bpasscode\b"], 0.55),
        _cue([r"\bforg[eo]t"], 0.15, [r"\bmfa\b|2fa|factor|authenticator"]),
        _cue([r"\breset (?:link|email)\b"], 0.3),
    ),
    "okta.unlock_user": (
        _cue([r"\bunlock"], 0.55),
        _cue([r"\blocked\b|\block(?:ed)? ?out\b|\blocking\b|\blockout\b"], 0.4, [r"\bunlocked\b"]),
    ),
    "okta.reset_factors": (
        _cue([r"\bmfa\b|\b2fa\b|\btwo[- ]factor\b|\bmulti[- ]?factor\b|\bsecond factor\b|\bfactors?\b|"
              r"\bauthenticators?\b|\bokta verify\b|\byubi ?key\b|\bsecurity key\b|\botp\b|\bpush notification"], 0.6),
    ),
    "okta.add_user_to_group": (
        _cue([r"\b(?:add|put|include|grant|join|enroll|give|get)\b", rf"\bgroup\b|{_GROUP_NAME}"], 0.45,
             [r"\bremov|\bout of\b|\bdrop\b|\bkick\b|\brevok|\bfrom\b|\bwhich\b|\bwhat\b|\blist\b"]),
    ),
    "okta.remove_user_from_group": (
        _cue([r"\b(?:remove|take|drop|kick|revoke|pull|delete)\b", rf"\bgroup\b|{_GROUP_NAME}"], 0.5),
        _cue([r"\bout of\b|\bfrom\b|\bno longer\b", r"\bgroup\b"], 0.2),
    ),
    "servicenow.create_incident": (
        _cue([_CREATE_TICKET], 0.45, [r"\bjira\b|\bbug\b|\bstory\b|\bcase\b"]),
        _cue([r"\b(?:tickets?|incidents?)\b"], 0.1, [r"\bjira\b|\bmy (?:tickets|incidents)\b"]),
        _cue([r"\bcan (?:it|someone|somebody) (?:take a look|look|check|fix|help)\b|\bnot working\b|\bbroken\b|"
              r"\bkeeps? \w+ing\b|\bis down\b|\bcrash|\bwon't\b|\bcan't\b|\bcannot\b|\bdoesn't work|\boutage\b"],
             0.1),
    ),
    "servicenow.get_incident": (
        _cue([INC.pattern], 0.15, [_CHANGE]),
        _cue([r"\bstatus\b|\bupdate on\b|\bdetails\b|\bany news\b|\bwho(?:'s| is) (?:working|handling)\b"], 0.1,
             [_CHANGE]),
    ),
    "servicenow.list_incidents": (
        _cue([r"\b(?:my|i have|i've|i raised|i opened|open|pending|outstanding|resolved|closed|all)\b"
              r"[^.?!]{0,30}\b(?:tickets|incidents)\b|\b(?:tickets|incidents)\b[^.?!]{0,25}"
              r"\b(?:i have|i've|i raised|i opened|open|pending|still)\b"], 0.3,
             [r"\bjira\b"]),
    ),
    "servicenow.add_comment": (
        _cue([r"\bcomment|\bnote\b|\bupdate \S+ with\b|\badd to\b|\btell (?:it|them|the team)\b|\bpost\b|\bwrite\b|"
              r"\breply\b"], 0.3),
    ),
    "servicenow.update_incident": (
        _cue([r"\bassign|\bgive\b|\bhand\b|\bresolve|\bclose\b|\bclosed\b|\bon hold\b|\bin progress\b|\burgency\b|"
              r"\bescalate|\bbump|\breopen|\bset\b|\bmark|\bchange\b|\bback to\b|\bstate\b|\bsolved\b|\bfixed\b"],
             0.3, [r"\bis \S+ fixed\b|\bfixed yet\b|\bwho\b"]),
    ),
    "servicenow.request_catalog_item": (
        _cue([r"\b(?:need|want|order|request|requisition|get me|like to have|'d like|would like|buy|purchase|"
              r"can i (?:get|have|order))\b"], 0.25,
             [r"\bpassword|\bunlock|\bticket|\bincident|\bapprov|\breset|\bjira\b|\bopportunit|\bcase\b|\btask\b|"
              r"\bgroup\b|\bmanager\b|\bapps?\b|RITM|\bstatus\b|\bissue\b|\bbug\b|\bcomment"]),
        _cue([r"\b(?:laptop|monitor|headset|keyboard|mouse|dock|docking station|phone|license|licence|software|"
              r"acrobat|visio|adobe|access|webcam|chair|desk|charger|adapter|cable|tablet|ipad|macbook|toner|"
              r"screen|headphones|equipment|hardware)s?\b"], 0.2,
             [r"\bbroken|\bcrash|\bnot working\b|\bwon't\b|\bcan't\b|\bissue\b|\bproblem\b|\bticket|\bincident|"
              r"\bflicker|\brequest from\b|\b(?:approve|reject|decline)\b|\bapps?\b|\bgroup\b"]),
    ),
    "servicenow.get_request": (
        _cue([RITM.pattern], 0.3, [r"\bapprove|\breject|\bdecline|\bdeny\b|\bsign off\b"]),
        _cue([r"\bmy (?:request|order)\b|\brequested item\b|\border status\b|\bwhere is my (?:order|request)\b"], 0.15),
    ),
    "servicenow.list_approvals": (
        _cue([r"\bapprovals?\b|\bto approve\b|\bsign[- ]?offs?\b|\bawaiting (?:my|me)\b|\bwaiting (?:for|on) (?:me|my)\b|"
              r"\bpending (?:my )?(?:decision|review)|\bi (?:have )?(?:approved|rejected)\b|\bdid i (?:approve|reject)"],
             0.45, [r"^\W*(?:please )?(?:approve|reject|decline|deny)\b"]),
    ),
    "servicenow.approve": (
        _cue([r"\bapprove\b|\bsign off on\b|\bgreen ?light\b|\bok the\b|\baccept the\b|\bgo ahead with\b"], 0.5,
             [r"\bapprovals\b|\bwhat\b|\bwhich\b|\bany|\bhave i\b|\bdid i\b|\bpending\b|\bwaiting\b|\bneed to\b"]),
    ),
    "servicenow.reject": (
        _cue([r"\breject|\bdecline|\bdeny\b|\bturn down\b|\bsay no to\b|\brefuse"], 0.5,
             [r"\bwhich\b|\bwhat\b|\blist\b|\bhave i\b|\bdid i\b"]),
    ),
    "jira.create_issue": (
        _cue([r"\b(?:create|file|open|log|raise|add|new|make|write up|submit|put)\b",
              r"\b(?:bug|task|story|issue|ticket|epic)\b"], 0.2,
             [r"\bcomment\b|\bcase\b|\bincident\b|\bremind|\bto-?do\b"]),
        _cue([r"\b(?:a|an|new|another)\s+(?:jira\s+)?(?:\w+\s+)?(?:bug|story|epic)\b"], 0.25),
        _cue([r"(?:\bin|\bto|\binto)\s+(?:the\s+)?(?-i:[A-Z]{2,10})\b(?!-)|(?-i:\b[A-Z]{2,10})\s+project\b"], 0.15,
             [r"\bincident\b|\bcase\b"]),
    ),
    "jira.get_issue": (
        _cue([ISSUE_KEY.pattern.replace("[A-Z]", "(?-i:[A-Z])")], 0.15, [_CHANGE]),
    ),
    "jira.search_issues": (
        _cue([r"\b(?:issues|bugs|tickets|stories|tasks)\b"], 0.15, [r"\b(?:create|file|log|raise|new)\b"]),
        _cue([r"\b(?:find|search|look for|look up|which|list|any|show)\b[^.?!]{0,40}\b(?:issue|bug|ticket|story)s?\b"],
             0.2),
        _cue([r"\bon my plate\b|\bmy (?:work|queue|backlog)\b|\bworking on\b|\bassigned to\b"], 0.2),
    ),
    "jira.add_comment": (
        _cue([r"\bcomment|\bnote\b|\breply\b|\bwrite\b|\bpost\b|\badd to\b|\bsaying\b|\bthat says\b"], 0.3),
    ),
    "jira.transition_issue": (
        _cue([r"\bmove|\bmark|\btransition|\bset\b|\bstart(?: work(?:ing)?)? on\b|\bclose\b|\breopen|\bsend \S+ back\b|"
              r"\bdone\b|\bin progress\b|\bin review\b|\bto do\b|\bresolve\b|\bfinish|\bcomplete"], 0.3,
             [r"\bcomment\b|\bis \S+ done\b|\bdone yet\b"]),
    ),
    "jira.assign_issue": (
        _cue([r"\bassign|\bgive\b|\bhand\b|\btake\b|\bassignee\b|\bpick up\b|\bown\b"], 0.35,
             [r"\bwho(?:'s| is)? (?:is )?assigned\b"]),
    ),
    "salesforce.find_account": (
        _cue([r"\baccounts?\b|\bcustomer\b|\bcompany\b|\bclient\b"], 0.2,
             [r"\bmy account\b|\block|\bpassword|\bokta\b|\bcase\b|\bopportunit|\bdeal|\bapps?\b"]),
        _cue([r"\bindustry\b|\bwho owns\b|\bowner of\b"], 0.2),
    ),
    "salesforce.list_opportunities": (
        _cue([r"\bopportunities\b|\bopps\b|\bdeals\b|\bpipeline\b"], 0.4),
    ),
    "salesforce.get_opportunity": (
        _cue([r"\bopportunity\b|\bdeal\b|\brenewal\b|\bexpansion\b|\bupsell\b|\bpilot\b"], 0.2,
             [r"\bopportunities\b|\bdeals\b|\bpipeline\b|" + _CHANGE + r"|\bclosed[- ](?:won|lost)\b"]),
    ),
    "salesforce.update_opportunity": (
        _cue([r"\bstage\b|\bclose date\b|\bclosing date\b|\bamount\b|\bnext step\b|\bclosed[- ]won\b|\bclosed[- ]lost\b|"
              r"\bwon\b|\blost\b|\bslipped\b|\bpush|\bmove\b|\bmark|\bset\b|\bupdate\b|\bchange\b"], 0.25,
             [r"^\W*(?:what|when|show|list|which)\b|\bopportunities\b|\bdeals\b"]),
    ),
    "salesforce.create_case": (
        _cue([r"\bcases?\b"], 0.5, [r"\bin case\b|\buse case\b|\bcase[- ]sensitive\b"]),
    ),
    "salesforce.create_task": (
        _cue([r"\bremind me\b|\bto-?do\b|\bfollow[- ]up task\b|\breminder\b|\btask (?:on|for) the\b"], 0.35,
             [r"\bjira\b"]),
    ),
    "salesforce.query": (
        _cue([r"\bsoql\b|\bselect\b.+\bfrom\b|\bhow many\b|\bcount\b|\bper account\b|\bquery\b"], 0.35,
             [r"\bjql\b|\bjira\b"]),
    ),
}


@dataclass(frozen=True)
class ClauseFeatures:
    """What a clause mentions that bears on which tool it asks for."""

    ids: frozenset[str]
    connectors: frozenset[str]
    question: bool


def features(clause: Clause) -> ClauseFeatures:
    """The record kinds, connectors and sentence form of a clause."""
    ids = set()
    if INC.search(clause.text):
        ids.add("incident")
    if RITM.search(clause.text):
        ids.add("request")
    if ISSUE_KEY.search(clause.text):
        ids.add("issue")
    connectors = frozenset(name for name, pattern in CONNECTOR_NAMES.items() if pattern.search(clause.text))
    return ClauseFeatures(frozenset(ids), connectors, bool(_QUESTION.match(clause.text)))


def id_kind(tool: ToolInfo, argument: str) -> str | None:
    """The record kind an identifier argument takes (incident, request, issue), from its schema pattern."""
    pattern = tool.properties.get(argument, {}).get("pattern", "")
    if "INC" in pattern:
        return "incident"
    if "RITM" in pattern:
        return "request"
    if _KEY_SHAPE.search(pattern) and "-" in pattern:
        return "issue"
    return None


@dataclass(frozen=True)
class Scored:
    """A tool's score for one clause, and the part that came from sentence similarity."""

    tool: str
    score: float
    similarity: float


class IntentIndex:
    """The catalog's example utterances and summaries, embedded once, with each tool's record-kind needs."""

    def __init__(self, tools: Sequence[ToolInfo], encoder: Encoder) -> None:
        self.tools = list(tools)
        self._encoder = encoder
        texts: list[str] = []
        owners: list[int] = []
        for index, tool in enumerate(self.tools):
            for text in (*tool.examples, tool.summary_text()):
                if text:
                    texts.append(text)
                    owners.append(index)
        self._owners = np.asarray(owners)
        self._matrix = encoder.encode(texts).T.copy() if texts else np.zeros((1, 0), dtype=np.float32)
        self._required_kind: list[str | None] = []
        self._optional_kinds: list[frozenset[str]] = []
        for tool in self.tools:
            required = [k for a in tool.required if (k := id_kind(tool, a))]
            self._required_kind.append(required[0] if required else None)
            self._optional_kinds.append(frozenset(k for a in tool.properties if (k := id_kind(tool, a))))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors for `texts` (one batch)."""
        return self._encoder.encode(texts)

    def score(self, clause: Clause, vector: np.ndarray) -> list[Scored]:
        """Every tool's score for `clause` (whose embedding is `vector`), best first."""
        similarities = vector @ self._matrix if self._matrix.size else np.zeros(0)
        best = np.full(len(self.tools), -1.0)
        np.maximum.at(best, self._owners, similarities)
        found = features(clause)
        scored: list[Scored] = []
        for index, tool in enumerate(self.tools):
            similarity = float(best[index])
            lexical = min(sum(cue.weight for cue in CUES.get(tool.name, ()) if cue.matches(clause.text)), 0.7)
            scored.append(Scored(tool.name, similarity + lexical + self._structure(index, tool, found), similarity))
        scored.sort(key=lambda s: (-s.score, s.tool))
        return scored

    def _structure(self, index: int, tool: ToolInfo, found: ClauseFeatures) -> float:
        """Bonuses and penalties from record ids, connector names and the clause's form."""
        adjust = 0.0
        required = self._required_kind[index]
        kinds = self._optional_kinds[index]
        if required is not None:
            if required in found.ids:
                adjust += 0.3
            elif found.ids:
                adjust -= 0.4
        elif kinds & found.ids:
            adjust += 0.2
        elif found.ids and not kinds:
            adjust -= 0.15
        if found.connectors:
            adjust += 0.12 if tool.connector in found.connectors else -0.2
        if found.question and tool.effect == "WRITE":
            adjust -= 0.1
        return adjust
