"""Rule-based extraction of the preferences a user states ("my default Jira project is ENG", "I'm on a ThinkPad")."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from memory.sessions import split_sentences

# A value runs to the end of its clause: punctuation or a conjunction ends it.
_VALUE = r"(?P<v>[^,.;:!?()]+?)"
_VALUE_END = r"(?=\s*(?:[,.;:!?()]|$|\b(?:and|but|so|because|since|which|when|while|if|though|please)\b))"
_QUESTION_START = re.compile(
    r"^\s*(?:what|which|who|whom|whose|where|when|why|how|is|are|am|was|were|do|does|did|can|could|should|would|"
    r"will|shall|may|might|have|has)\b", re.IGNORECASE)
_DEVICES = (r"thinkpad|macbook(?: air| pro)?|mac(?:book)?|imac|mac mini|dell|xps|latitude|precision|hp|elitebook|"
            r"spectre|surface(?: pro| laptop)?|lenovo|yoga|chromebook|laptop|desktop|workstation|pc|windows(?: \d+)?|"
            r"linux|ubuntu|fedora|macos|iphone|android|pixel|galaxy|ipad")
_PHONES = re.compile(r"\b(?:iphone|android|pixel|galaxy)\b", re.IGNORECASE)
_SYSTEMS = re.compile(r"\b(?:windows|linux|ubuntu|fedora|macos)\b", re.IGNORECASE)
_CHANNELS = re.compile(r"\b(?:slack|e-?mail|teams|phone|text|sms|call)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Preference:
    """A stated preference: its subject (one row per subject, the latest wins) and the fact in third person."""

    subject: str
    text: str


def _clean(value: str) -> str:
    value = re.sub(r"^(?:the|a|an|my)\s+", "", value.strip(), flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", value).strip(" '\"")


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _third_person(text: str) -> str:
    """First person to third ("my laptop" -> "the user's laptop"), for a fact recalled later."""
    swaps = [(r"\bI am\b|\bI'm\b", "the user is"), (r"\bI've\b|\bI have\b", "the user has"),
             (r"\bI\b", "the user"), (r"\bmy\b", "the user's"), (r"\bmine\b", "the user's"),
             (r"\bme\b", "the user"), (r"\bmyself\b", "the user")]
    for pattern, repl in swaps:
        text = re.sub(pattern, repl, text, flags=re.IGNORECASE)
    return text


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".!")
    return text[:1].upper() + text[1:] + "."


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _digest(text: str) -> str:
    return hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()[:16]


def _device(m: re.Match[str]) -> Preference | None:
    value = _clean(m.group("v"))
    if not re.search(rf"\b(?:{_DEVICES})\b", value, re.IGNORECASE):
        return None
    if _PHONES.search(value):
        return Preference("device.phone", f"The user's phone is {_article(value)} {value}.")
    if _SYSTEMS.search(value) and not re.search(r"\b(?:laptop|desktop|pc|thinkpad|macbook|surface|dell)\b", value,
                                                re.IGNORECASE):
        return Preference("device.os", f"The user's computer runs {value}.")
    return Preference("device.computer", f"The user's computer is {_article(value)} {value}.")


def _default(m: re.Match[str]) -> Preference | None:
    what = _clean(m.group("what")).lower()
    value = _clean(m.group("v"))
    if not what or not value or len(what.split()) > 4:
        return None
    system = ""
    for name in ("jira", "servicenow", "salesforce", "okta"):
        if what.startswith(name + " "):
            system, what = name, what[len(name) + 1:]
    if not system:
        system = {"project": "jira", "board": "jira", "assignment group": "servicenow"}.get(what, "")
    label = {"jira": "Jira", "servicenow": "ServiceNow", "salesforce": "Salesforce", "okta": "Okta"}.get(system, "")
    noun = f"{label} {what}".strip()
    subject = f"default.{system + '.' if system else ''}{_slug(what)}"
    return Preference(subject, f"The user's default {noun} is {value}.")


def _prefer(m: re.Match[str]) -> Preference | None:
    value = _clean(m.group("v"))
    if not value:
        return None
    verb = "would rather" if m.group("verb").lower() == "rather" else "prefers" + (m.group("to") or "")
    text = _sentence(f"the user {verb} {_third_person(value)}")
    if _CHANNELS.search(value):
        return Preference("contact.channel", text)
    return Preference("prefer." + _digest(value), text)


def _always(m: re.Match[str]) -> Preference | None:
    value = m.group("v").strip()
    word = m.group("w").lower()
    if len(value.split()) < 2:
        return None
    verb = "always" if word == "always" else "never"
    text = _sentence(f"the user wants the agent to {verb} {_third_person(value)}")
    return Preference(f"{verb}.{_digest(value)}", text)


def _simple(subject: str, template: str) -> Callable[[re.Match[str]], Preference | None]:
    def build(m: re.Match[str]) -> Preference | None:
        value = _clean(m.group("v"))
        return Preference(subject, template.format(v=value)) if value else None

    return build


def _remember(m: re.Match[str]) -> Preference | None:
    value = m.group("v").strip()
    if len(value.split()) < 3:
        return None
    return Preference("note." + _digest(value), _sentence(_third_person(value)))


_I = r"\bI(?:'m| am)"
_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], Preference | None]]] = [
    (re.compile(r"\b(?:please )?(?:remember|note|keep in mind) that (?P<v>.+)$", re.IGNORECASE), _remember),
    (re.compile(rf"\bmy (?:default |usual |main |primary |preferred )(?P<what>[\w ]+?) (?:is|should be|=) {_VALUE}"
                rf"{_VALUE_END}", re.IGNORECASE), _default),
    (re.compile(rf"\bmy (?P<what>(?:jira |servicenow )?(?:project|assignment group|board)) (?:is|should be) "
                rf"{_VALUE}{_VALUE_END}", re.IGNORECASE), _default),
    (re.compile(r"\buse (?P<v>[\w-]+) as my (?:default |usual )?(?P<what>(?:jira )?project)\b", re.IGNORECASE),
     _default),
    (re.compile(rf"{_I} (?:on|using|working on) (?:a |an |my )?{_VALUE}{_VALUE_END}", re.IGNORECASE), _device),
    (re.compile(rf"\bI (?:use|have|work on) (?:a |an )?{_VALUE}{_VALUE_END}", re.IGNORECASE), _device),
    (re.compile(rf"\bmy (?:laptop|computer|machine|phone|mobile|device) is (?:a |an )?{_VALUE}{_VALUE_END}",
                re.IGNORECASE), _device),
    (re.compile(rf"\bmy time ?zone is {_VALUE}{_VALUE_END}", re.IGNORECASE),
     _simple("timezone", "The user's timezone is {v}.")),
    (re.compile(rf"{_I} (?:in|on) (?:the )?(?P<v>[\w/+ -]+?) time ?zone\b", re.IGNORECASE),
     _simple("timezone", "The user's timezone is {v}.")),
    (re.compile(r"\b(?:please )?call me (?P<v>[A-Z][\w'-]+)"), _simple("name", "The user prefers to be called {v}.")),
    (re.compile(rf"{_I} (?:on|in|part of) the (?P<v>[\w&/ -]+?) team\b", re.IGNORECASE),
     _simple("team", "The user is on the {v} team.")),
    (re.compile(rf"\bmy team is (?:the )?(?P<v>[\w&/ -]+?)(?: team)?{_VALUE_END}", re.IGNORECASE),
     _simple("team", "The user is on the {v} team.")),
    (re.compile(rf"(?:{_I} based in|\bmy office is in|\bI work (?:from|out of|in) the) {_VALUE}(?: office)?"
                rf"{_VALUE_END}", re.IGNORECASE),
     _simple("office", "The user's office is in {v}.")),
    (re.compile(rf"\bI(?:'d| would)? (?P<verb>rather|prefer)(?P<to> to)? {_VALUE}{_VALUE_END}", re.IGNORECASE),
     _prefer),
    (re.compile(r"^(?:please )?(?P<w>always|never|don't ever|do not ever) (?P<v>.+?)[.!]?$", re.IGNORECASE), _always),
]


def is_question(sentence: str) -> bool:
    return sentence.rstrip().endswith("?") or bool(_QUESTION_START.match(sentence))


def extract(text: str) -> list[Preference]:
    """The preferences a user turn states, one per subject (questions state none)."""
    found: dict[str, Preference] = {}
    for sentence in split_sentences(text):
        if is_question(sentence):
            continue
        for pattern, build in _RULES:
            match = pattern.search(sentence)
            if match is None:
                continue
            preference = build(match)
            if preference is not None:
                found.setdefault(preference.subject, preference)
                break
    return list(found.values())
