"""Recognising which tool a clause asks for: sentence-embedding similarity to the catalog's examples plus cues."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from planner.embedded.encoder import Encoder
from planner.embedded.text import Clause, head
from planner.embedded.tools import ToolInfo

INC = re.compile(r"\bINC\d{5,}\b", re.IGNORECASE)
RITM = re.compile(r"\bRITM\d{5,}\b", re.IGNORECASE)
ISSUE_KEY = re.compile(r"\b[A-Z][A-Z0-9]{1,9}-\d+\b")
# All-caps words that are not Jira project keys.
NOT_PROJECTS = frozenset(
    """IT VPN MFA SSO HR QA PR OK US UK EU PDF CRM SOQL JQL SLA ASAP FYI AM PM TLS DNS CSV URL ID INC RITM REQ CEO CTO
    VP EOD EOW EOM ETA TBD PTO OOO AI OTP SMS USB HDMI SAP AWS GCP DB UI UX IOS NOTE README ALL NOT AND THE
    SYSTEM OVERRIDE URGENT IMPORTANT FAQ IP PC OS CPU RAM SSD EOL NDA KPI OKR RFP PO LOL HELP PLEASE""".split()
)
_PROJECT_KEY = r"(?-i:\b(?!(?:" + "|".join(sorted(NOT_PROJECTS)) + r")\b)[A-Z][A-Z0-9]{1,9})\b(?!-)"
ID_PATTERNS: dict[str, re.Pattern[str]] = {"incident": INC, "request": RITM, "issue": ISSUE_KEY}
# A Jira issue key's shape inside a pattern: ^[A-Z][A-Z0-9]+-\d+$ and the like.
_KEY_SHAPE = re.compile(r"\[A-Z\].*-\\d")

CONNECTOR_NAMES: dict[str, re.Pattern[str]] = {
    "jira": re.compile(r"(?<![-\w])jira(?![-\w])", re.IGNORECASE),
    "servicenow": re.compile(r"(?<![-\w])(?:service ?now|snow)(?![-\w])", re.IGNORECASE),
    "salesforce": re.compile(r"(?<![-\w])(?:salesforce|sfdc|crm)(?![-\w])(?!\s+(?:access|license|licence))",
                             re.IGNORECASE),
    "okta": re.compile(r"(?<![-\w])okta(?![-\w])", re.IGNORECASE),
}

_CHANGE = (r"\b(?:assign|reassign|give(?! me\b| us\b)|hand|resolve|close|set|mark|move|update|change|add|comment|"
           r"put|escalate|bump|transition|reopen|start|push|note|post|write|reply|approve|reject|decline)\w*\b")
_QUESTION = re.compile(r"^\W*(?:what|which|who|whose|where|when|how|is|are|does|do|did|has|have|am|any)\b",
                       re.IGNORECASE)
_ANAPHOR = re.compile(r"\b(?:it|its|that one|this one|them|those|"
                      r"that (?:issue|ticket|incident|deal|opportunity|request)|"
                      r"the (?:issue|ticket|incident|deal|opportunity|request|one))\b", re.IGNORECASE)
# "create a ...", "open a new ...": the clause asks for a new record, whatever ids its text mentions.
_CREATES = re.compile(r"\b(?:create|open|file|log|raise|submit|make|cut|lodge)\s+(?:up\s+)?(?:a|an|new|another)\b|"
                      r"\badd (?:a |another )?new\b|^\W*(?:new\s+|an?\s+)?(?:it\s+|jira\s+|servicenow\s+|"
                      r"salesforce\s+)?"
                      r"(?:ticket|incident|bug|task|story|issue|epic|case)\b\s*(?:for|in|on|about|please|pls|asap|:|"
                      r"[.!]|$)",
                      re.IGNORECASE)
# A clause that opens with the kind of record it wants, without a verb: "Ticket please", "Bug for ENG: ...".
_RECORD_HEADLINE = (r"^\W*(?:new\s+|an?\s+)?(?:it\s+|jira\s+|servicenow\s+|salesforce\s+)?"
                    r"(?:ticket|incident|bug|task|story|issue|epic|case)\b\s*(?:for|in|on|about|please|pls|asap|:|"
                    r"[.!]|$)")
_GROUP_NAME = r"(?-i:\b[A-Z][A-Za-z0-9]*(?:-[A-Z][A-Za-z0-9]*)+\b)"
_MY_WORK = (r"\b(?:what|anything|what else)\s+(?:do|have)\s+i\s+(?:have|got)\b|\bon my plate\b|"
            r"\bwhat (?:work|tasks|items|stuff) do i have\b|\bmy (?:open )?(?:items|tasks)\b|"
            r"\bmy (?:work|queue|backlog)\b|\bassigned to me\b|\bi have open\b|\bopen for me\b|\bi'm working on\b|"
            r"\bwaiting on me\b")
_CREATE_TICKET = (r"\b(?:open(?:ing)?|creat(?:e|ing)|fil(?:e|ing)|log(?:ging)?|rais(?:e|ing)|submit(?:ting)?|cut|lodge|"
                  r"mak(?:e|ing)|put in|start|report|need|want)\s+(?:up\s+)?"
                  r"(?:a|an|new|another|one|me a)\b[^.?!]{0,40}?\b(?:ticket|incident)s?\b|\bnew (?:ticket|incident)\b")


# Capitalized words that carry meaning for intent matching; any other capitalized word inside a sentence is a name
# (a person, an account, a product) and is dropped before embedding, so names do not steer the similarity.
_MEANINGFUL_CAPITALS = frozenset(
    """jira okta salesforce servicenow outlook sso vpn mfa wifi it done review progress closed won lost open new
    prospecting qualification negotiation proposal analysis hold resolved task bug story""".split()
)
_CAPITALIZED = re.compile(r"(?<![\w'@.-])[A-Z][a-z]+(?:-[A-Za-z0-9]+)*(?![\w@-])")


def delexicalize(text: str, names: Sequence[str] = ()) -> str:
    """The text as embedded: record ids and emails made generic, names (and the given `names`) dropped."""
    for name in sorted(names, key=len, reverse=True):
        text = re.sub(rf"\b{re.escape(name)}\b", " ", text, flags=re.IGNORECASE)
    text = INC.sub("INC0012345", text)
    text = RITM.sub("RITM0012345", text)
    text = ISSUE_KEY.sub("PROJ-123", text)
    text = re.sub(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", "someone@example.com", text)
    text = _CAPITALIZED.sub(lambda m: m.group() if m.start() == 0 or m.group().lower() in _MEANINGFUL_CAPITALS else "",
                            text.strip())
    return re.sub(r"\s+", " ", text).strip() or text


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
        _cue([r"\bmanager\b|\bboss\b|\bsupervisor\b|\breport(?:s|ing)? (?:in)?to\b|\bline manager\b|\bmanages\b|"
              r"\bteam lead\b"], 0.45),
        _cue([r"\b(?:job )?title\b|\bdepartment\b|\bprofile\b|\bphone number\b|\bwho is\b|\bwho's\b"], 0.15,
             [r"\bassign|\bworking on\b|\bhandling\b"]),
        _cue([r"\baccount status\b|\bokta (?:account|status|profile)\b|\baccount (?:is )?active\b"], 0.25),
    ),
    "okta.list_groups": (
        _cue([r"\bgroups?\b|\bmemberships?\b"], 0.35,
             [r"\b(?:add|put|remove|take|drop|kick|grant|revoke|include|join)\b|\bto be (?:in|added|a member|part)\b|"
              r"\bbe (?:added|put)\b|"
              r"\bshould be in\b"]),
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
        _cue([r"\b(?:needs?|wants?|should|has) to be (?:in|added to|a member of|part of)\b|\bshould be in\b|"
              r"\b(?:be|get|been|getting) (?:added|put) (?:to|in|into)\b|"
              r"\b(?:give|grant) (?:me|him|her|them|(?-i:[A-Z]\w+)) access to (?:the )?(?-i:[A-Z][\w-]*) group\b"],
             0.4),
        _cue([r"\b(?:add|put)\s+(?:me|him|her|them|(?-i:[A-Z]\w+)(?:\s+(?-i:[A-Z]\w+))?)\s+(?:to|in|into)\s+"
              r"(?:the\s+)?(?-i:[A-Z][\w-]*)(?![\w-]*-\d)"], 0.35),
    ),
    "okta.remove_user_from_group": (
        _cue([r"\b(?:remove|take|drop|kick|revoke|pull|delete)\b", rf"\bgroup\b|{_GROUP_NAME}"], 0.5),
        _cue([r"\bout of\b|\bfrom\b|\bno longer\b", r"\bgroup\b"], 0.2),
        _cue([r"\b(?:remove|take|drop|kick)\s+(?:me|him|her|them|(?-i:[A-Z]\w+)(?:\s+(?-i:[A-Z]\w+))?)\s+"
              r"(?:from|out of)\s+(?:the\s+)?(?-i:[A-Z][\w-]*)(?![\w-]*-\d)"], 0.4),
    ),
    "servicenow.create_incident": (
        _cue([_CREATE_TICKET], 0.45, [r"\bjira\b|\bbug\b|\bstory\b|\bcase\b"]),
        _cue([_RECORD_HEADLINE, r"^\W*(?:new\s+|an?\s+)?(?:it\s+|servicenow\s+)?(?:ticket|incident)\b"], 0.45),
        _cue([r"\b(?:tickets?|incidents?)\b"], 0.1, [r"\bjira\b|\bmy (?:tickets|incidents)\b"]),
        _cue([r"\b(?:can|could|would|will) (?:it|someone|somebody|you guys|the help ?desk|support|the it team)\s+"
              r"(?:please\s+)?(?:take a look|have a look|look|check|fix|help|investigate|sort)"], 0.35),
        _cue([r"\bnot working\b|\bbroken\b|\bkeeps? \w+ing\b|\b(?:is|are|has been|have been|went|goes) down\b|"
              r"\bcrash|\bwon't\b|\bcan't\b|\bcannot\b|\bdoesn't work|\boutage\b"], 0.1),
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
        _cue([_MY_WORK], 0.2),
    ),
    "servicenow.add_comment": (
        _cue([r"\bcomment|\bnote\b|\bupdate \S+ with\b|\badd to\b|\btell (?:it|them|the team)\b|\bpost\b|\bwrite\b|"
              r"\breply\b"], 0.3),
    ),
    "servicenow.update_incident": (
        _cue([r"\b(?:re)?assign|\bgive\b(?! me\b| us\b)|\bhand\b|\bresolve|\bclose\b|\bclosed\b|\bon hold\b|"
              r"\bin progress\b|"
              r"\burgency\b|\bescalate|\bbump|\breopen|\bset\b|\bmark|\bchange\b|\bback to\b|\bstate\b|\bsolved\b|"
              r"\bfixed\b|\b(?:should|can|must|needs to) (?:go|be assigned|be routed) to\b|\broute\b|\bgoes to\b"],
             0.3, [r"\bis \S+ fixed\b|\bfixed yet\b|\bwho\b|\bclosed[- ](?:won|lost)\b|\bclose date\b"]),
    ),
    "servicenow.request_catalog_item": (
        _cue([r"\b(?:need|want|order|request|requisition|get me|like to have|'d like|would like|buy|purchase|"
              r"can i (?:get|have|order)|requesting|ordering)\b"], 0.25,
             [r"\bpassword|\bunlock|\bticket|\bincident|\bapprov|\bsign off\b|'s request\b|\brequest (?:for|from)\b|"
              r"'s (?:\w+ )?request\b|\breset|\bjira\b|\bopportunit|\bcase\b|\btask\b|"
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
        _cue([r"\bapprovals?\b|\bto approve\b|\bsign[- ]?offs\b|\bmy sign[- ]?off\b|\bawaiting (?:my|me)\b|"
              r"\bwaiting (?:for|on) (?:me|my)\b|\bpending (?:my )?(?:decision|review)|\bi (?:have )?(?:approved|"
              r"rejected)\b|"
              r"\bdid i (?:approve|reject)"],
             0.45, [r"^\W*(?:please )?(?:approve|reject|decline|deny)\b"]),
    ),
    "servicenow.approve": (
        _cue([r"\bapprove\b|\bsign off on\b|\bgreen ?light\b|\bok the\b|\baccept the\b|\bgo ahead with\b"], 0.5,
             [r"^\W*(?:what|which|any|do|did|have|show|list|is|are)\b|\bapprovals\b|\bto approve\b|\bwaiting\b|"
              r"\bneed to approve\b"]),
        _cue([r"^\W*(?:ok|okay|yes|sure|fine)\b[,!]?\s+\S", r"\brequest|\border\b|RITM"], 0.45),
    ),
    "servicenow.reject": (
        _cue([r"\breject|\bdecline|\bdeny\b|\bturn down\b|\bsay no to\b|\brefuse"], 0.5,
             [r"\bwhich\b|\bwhat\b|\blist\b|\bhave i\b|\bdid i\b"]),
    ),
    "jira.create_issue": (
        _cue([_RECORD_HEADLINE, r"^\W*(?:new\s+|an?\s+)?(?:jira\s+)?(?:bug|task|story|issue|epic)\b"], 0.3,
             [r"\bincident\b|\bsalesforce\b|\bcase\b"]),
        _cue([r"\b(?:create|file|open|log|raise|add|new|make|write up|submit|put)\b",
              r"\b(?:bug|task|story|issue|ticket|epic)\b"], 0.2,
             [r"\bcomment\b|\bcase\b|\bincident\b|\bremind|\bto-?do\b"]),
        _cue([r"\b(?:a|an|new|another)\s+(?:jira\s+)?(?:\w+\s+)?(?:bug|story|epic)\b"], 0.25),
        _cue([r"^\W*(?:new\s+)?(?-i:[A-Z][A-Z0-9]{1,9})\s+(?:bug|task|story|issue|ticket)\s*:"], 0.5),
        _cue([rf"(?:\bin|\bto|\binto)\s+(?:the\s+)?{_PROJECT_KEY}|"
              rf"{_PROJECT_KEY}\s+(?:project|bug|task|story|issue|ticket)\b"],
             0.15, [r"\bincident\b|\bcase\b"]),
    ),
    "jira.get_issue": (
        _cue([ISSUE_KEY.pattern.replace("[A-Z]", "(?-i:[A-Z])")], 0.15, [_CHANGE]),
    ),
    "jira.search_issues": (
        _cue([r"\b(?:issues|bugs|stories)\b"], 0.15, [r"\b(?:create|file|log|raise|new)\b"]),
        _cue([r"^\W*(?:what|which|show|list|find|any)\b|\?\s*$",
              r"\b(?:in|are|is)\s+(?:in\s+)?(?:to do|in progress|in review|review|done|blocked)\b"], 0.2),
        _cue([r"\b(?:find|search|look for|look up|which|list|any|show)\b[^.?!]{0,40}\b(?:issue|bug|story)s?\b"],
             0.2),
        _cue([_MY_WORK + r"|\bworking on\b|\bassigned to\b"], 0.2),
    ),
    "jira.add_comment": (
        _cue([r"\bcomment|\bnote\b|\breply\b|\bwrite\b|\bpost\b|\badd to\b|\bsaying\b|\bthat says\b"], 0.3),
    ),
    "jira.transition_issue": (
        _cue([r"\bmove|\bmark|\btransition|\bset\b|\bstart(?: work(?:ing)?)? on\b|\bclose\b|\breopen|\bsend \S+ back\b|"
              r"\bdone\b|\bin progress\b|\bin review\b|\bto do\b|\bresolve\b|\bfinish|\bcomplete|"
              r"\b(?:to|into|as)\s+(?:in\s+)?(?:review|qa|testing|blocked|backlog)\b"], 0.3,
             [r"\bcomment\b|\bis \S+ done\b|\bdone yet\b|^\W*(?:what|which|who|show|list|find)\b"]),
    ),
    "jira.assign_issue": (
        _cue([r"\b(?:re)?assign|\bgive\b(?! me\b| us\b)|\bhand\b|\btake\b|\bassignee\b|\bpick up\b|\bown\b|"
              r"\b(?:should|can|must|needs to) (?:go|be assigned) to\b|\bgoes to\b"], 0.35,
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
        _cue([r"^\W*(?:what|when|how|which|show|tell|give)\b",
              r"\b(?:amount|stage|close date|closing date|next step|probability|expected to close|closing|worth|"
              r"value)\b"], 0.25, [r"\bopportunities\b|\bdeals\b|\bpipeline\b|\bmy\b|\btickets?\b|\bissues?\b"]),
        _cue([r"\bopportunity\b|\bdeal\b|\brenewal\b|\bexpansion\b|\bupsell\b|\bpilot\b"], 0.2,
             [r"\bopportunities\b|\bdeals\b|\bpipeline\b|" + _CHANGE + r"|\bclosed[- ](?:won|lost)\b"]),
    ),
    "salesforce.update_opportunity": (
        _cue([r"\bstage\b|\bclose date\b|\bclosing date\b|\bamount\b|\bnext step\b|\bclosed[- ]won\b|"
              r"\bclosed[- ]lost\b|\bwon\b|\blost\b|\bslipped\b|\bsigned\b|\bprospecting\b|\bqualification\b|"
              r"\bneeds analysis\b|"
              r"\bproposal\b|\bnegotiation\b|\bprice quote\b"], 0.3,
             [r"^\W*(?:what|when|show|list|which|how)\b|\bopportunities\b|\bdeals\b"]),
        _cue([r"\b(?:is now|now in|moved to|has moved to|went to|is in|to)\b",
              r"\bprospecting\b|\bqualification\b|\bneeds analysis\b|\bproposal\b|\bnegotiation\b|"
              r"\bclosed[- ](?:won|lost)\b"],
             0.2, [r"^\W*(?:what|when|show|list|which|how)\b|\bopportunities\b|\bdeals\b"]),
        _cue([r"\bpush|\bmove\b|\bmark|\bset\b|\bupdate\b|\bchange\b|\bbump\b|\bslip"], 0.1,
             [r"^\W*(?:what|when|show|list|which|how)\b|\bopportunities\b|\bdeals\b|" + INC.pattern + "|"
              + ISSUE_KEY.pattern]),
    ),
    "salesforce.create_case": (
        _cue([r"\bcases?\b"], 0.5, [r"\bin case\b|\buse case\b|\bcase[- ]sensitive\b"]),
    ),
    "salesforce.create_task": (
        _cue([r"\bremind me\b|\bto-?do\b|\bfollow[- ]up task\b|\breminder\b|\btask (?:on|for|against) (?:the )?"
              r"(?-i:[A-Z])"], 0.35, [r"\bjira\b|(?:\bin|\bto|\binto)\s+(?:the\s+)?(?-i:[A-Z]{2,10})\b(?!-)"]),
    ),
    "salesforce.query": (
        _cue([r"\bsoql\b|\bselect\b.+\bfrom\b"], 0.6, [r"\bjql\b|\bjira\b"]),
        _cue([r"\bhow many\b|\bcount\b|\bper account\b|\bquery\b"], 0.25, [r"\bjql\b|\bjira\b|\bmy\b"]),
    ),
}


def lexical_score(tool: str, text: str) -> float:
    """The sum of `tool`'s cues that fire on `text`, capped."""
    return min(sum(cue.weight for cue in CUES.get(tool, ()) if cue.matches(text)), 0.7)


@dataclass(frozen=True)
class ClauseFeatures:
    """What a clause mentions that bears on which tool it asks for."""

    ids: frozenset[str]
    connectors: frozenset[str]
    question: bool
    anaphor: bool
    creates: bool


def features(clause: Clause) -> ClauseFeatures:
    """The record kinds, connectors and sentence form of a clause."""
    instruction = head(clause.text)
    ids = {kind for kind, pattern in ID_PATTERNS.items() if pattern.search(instruction)}
    connectors = frozenset(name for name, pattern in CONNECTOR_NAMES.items() if pattern.search(clause.text))
    anaphor = bool(_ANAPHOR.search(clause.text))
    creates = bool(_CREATES.search(head(clause.text)))
    return ClauseFeatures(frozenset(ids), connectors, bool(_QUESTION.match(clause.text)), anaphor, creates)


def kinds_in(texts: Sequence[str]) -> frozenset[str]:
    """The record kinds (incident, request, issue) whose ids occur in `texts`."""
    return frozenset(kind for kind, pattern in ID_PATTERNS.items() if any(pattern.search(t) for t in texts))


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


def _top_two_mean(similarities: np.ndarray) -> float:
    """The mean of the two best similarities (the best alone when there is one): steadier than the maximum."""
    if similarities.size == 0:
        return 0.0
    if similarities.size == 1:
        return float(similarities[0])
    top = np.partition(similarities, -2)[-2:]
    return float(top.mean())


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
        self._slices: list[tuple[int, int]] = []
        for tool in self.tools:
            start = len(texts)
            texts.extend(delexicalize(t) for t in (*tool.examples, tool.summary_text()) if t)
            self._slices.append((start, len(texts)))
        self._matrix = encoder.encode(texts).T.copy() if texts else np.zeros((1, 0), dtype=np.float32)
        self._required_kind: list[str | None] = []
        self._optional_kinds: list[frozenset[str]] = []
        for tool in self.tools:
            required = [k for a in tool.required if (k := id_kind(tool, a))]
            self._required_kind.append(required[0] if required else None)
            self._optional_kinds.append(frozenset(k for a in tool.properties if (k := id_kind(tool, a))))

    def encode(self, texts: Sequence[str], names: Sequence[str] = ()) -> np.ndarray:
        """Unit vectors for `texts` (one batch), delexicalized like the examples; `names` are people to drop."""
        return self._encoder.encode([delexicalize(t, names) for t in texts])

    def score(self, clause: Clause, vector: np.ndarray, earlier: Sequence[ToolInfo] = (),
              remembered: frozenset[str] = frozenset()) -> list[Scored]:
        """Every tool's score for `clause` (whose embedding is `vector`), best first.

        `earlier` are the tools already chosen for the request's previous clauses: a record id they return can fill
        this clause's ("find the issue and assign it to me"). `remembered` are the record kinds the conversation's
        recent turns name ("what's its status?" after talking about an incident).
        """
        similarities = vector @ self._matrix if self._matrix.size else np.zeros(0)
        best = [_top_two_mean(similarities[a:b]) for a, b in self._slices]
        found = features(clause)
        instruction = head(clause.text)
        scored: list[Scored] = []
        for index, tool in enumerate(self.tools):
            similarity = best[index]
            lexical = lexical_score(tool.name, instruction)
            fed = any(e.result_path(a) for e in earlier for a in tool.required) or (
                self._required_kind[index] in remembered)
            adjust = self._structure(index, tool, found, fed)
            scored.append(Scored(tool.name, similarity + lexical + adjust, similarity))
        scored.sort(key=lambda s: (-s.score, s.tool))
        return scored

    def _structure(self, index: int, tool: ToolInfo, found: ClauseFeatures, fed: bool) -> float:
        """Bonuses and penalties from record ids, connector names and the clause's form."""
        adjust = 0.0
        required = self._required_kind[index]
        kinds = self._optional_kinds[index]
        creating = tool.action.startswith(("create", "request"))
        if required is not None:
            if required in found.ids:
                adjust += 0.3 if creating or not found.creates else 0.0
            elif found.ids:
                adjust -= 0.4
            elif fed:
                adjust += 0.1 if found.anaphor else 0.0
            else:
                adjust -= 0.15
        elif kinds & found.ids:
            adjust += 0.2
        elif found.ids and not kinds:
            adjust -= 0.15
        if found.connectors:
            adjust += 0.12 if tool.connector in found.connectors else -0.2
        if found.question and tool.effect == "WRITE":
            adjust -= 0.1
        if found.creates:
            adjust += 0.15 if creating else -0.15 if tool.effect == "READ" else 0.0
        return adjust
