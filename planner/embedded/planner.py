"""The embedded planner: a request in words → a typed plan of tool steps, refusals, a question or an explanation."""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from planner.embedded.arguments import Ambiguous, Filled, Scope, Unknown, fill, missing_arguments
from planner.embedded.encoder import Encoder, default_encoder
from planner.embedded.intents import ID_PATTERNS, IntentIndex, Scored, features, id_kind, kinds_in, lexical_score
from planner.embedded.model import Effect, Person, PlanResult, PlanStep, Refusal
from planner.embedded.people import Directory
from planner.embedded.text import Clause, clauses, head, is_small_talk, normalize
from planner.embedded.tools import ToolInfo

# A clause asks for a tool when its best score reaches ACCEPT; with several systems named, each system's best tool
# needs ACCEPT_PER_CONNECTOR.
ACCEPT = 0.52
ACCEPT_PER_CONNECTOR = 0.3
# A clause that states something ("I'm locked out", "we won the Initech deal") asks for a change only with a cue at
# least this strong; otherwise only reads are considered for it.
STATEMENT_WRITE_CUE = 0.3
# Verbs that ask for something no catalog tool does unless a tool's own cues recognise the clause.
_UNSUPPORTED = re.compile(
    r"^\W*(?:(?:please|can you|could you|would you|pls|kindly|go ahead and|i want you to|i need you to)\s+)?"
    r"(?P<verb>delete|erase|purge|destroy|wipe|archive|merge|clone|rename|export|download|print|email|e-mail|"
    r"call|book|refund|pay|transfer|deploy|restart|reboot|install|uninstall|shut down|migrate|schedule|fire|hire|"
    r"promote|send (?:an? |the )?(?:e-?mail|message|text|sms|invite|invitation|fax)|write (?:me )?(?:an? |the )?"
    r"(?:poem|story|essay|song|e-?mail|letter|speech|joke))\b",
    re.IGNORECASE,
)
_QUESTIONS = {
    "short_description": "What's the problem the ticket should describe?",
    "summary": "What should the issue's summary say?",
    "subject": "What should the subject say?",
    "project": "Which Jira project should the issue go in (its key, e.g. ENG)?",
    "comment": "What should the comment say?",
    "number": "Which record do you mean (its number)?",
    "key": "Which Jira issue do you mean (its key, e.g. ENG-101)?",
    "item": "Which catalog item would you like to order?",
    "group": "Which group do you mean?",
    "status": "Which status should it move to?",
    "opportunity": "Which opportunity do you mean?",
    "account": "Which account is it for?",
    "name": "Which account should I look up?",
    "related_to": "Which account or opportunity is the task for?",
    "assignee": "Who should it be assigned to?",
    "soql": "Which SOQL query should I run?",
}


@dataclass
class _Draft:
    """A step before policy and completeness checks, with the clause it came from.

    A draft is `firm` when an instruction asked for it; one read from a statement ("I've started on ENG-102") only
    gives context, and is dropped, with whatever problem it has, when instructions were planned beside it.
    """

    id: str
    tool: ToolInfo
    clause: Clause
    filled: Filled
    depends_on: list[str]
    firm: bool


class EmbeddedPlanner:
    """Plans with the catalog's example utterances embedded once (all-MiniLM-L6-v2) plus lexical cues and rules."""

    def __init__(self, tools_catalog: Sequence[Mapping[str, Any]], encoder: Encoder | None = None) -> None:
        self._tools = {spec["name"]: ToolInfo.from_spec(spec) for spec in tools_catalog}
        self._index = IntentIndex(list(self._tools.values()), encoder if encoder is not None else default_encoder())

    @property
    def tools(self) -> Mapping[str, ToolInfo]:
        """The catalog the planner recognises, by tool name."""
        return self._tools

    def plan(
        self,
        request: str,
        *,
        requester: str,
        allowed_tools: set[str],
        denied_tools: Mapping[str, str],
        directory: Sequence[Person],
        today: dt.date,
        context: Mapping[str, Any] | None = None,
    ) -> PlanResult:
        """A plan for `request` made by `requester`; `context` may carry `turns` (recent messages, oldest first)."""
        text = normalize(request)
        if not re.search(r"\w", text):
            return PlanResult(question="What would you like me to do?")
        parts = clauses(text)
        # Text that tries to change the assistant's role is inert: dropped, unless it sits inside an instruction.
        usable = [c for c in parts if not c.injection or c.command]
        if not usable:
            return PlanResult(explanation="That asks me to change my instructions or role, which I can't do. "
                                          "Tell me what you need done and I'll plan it under your own permissions.")
        try:
            people = _directory(tuple(directory))
        except TypeError:  # a Person built with unhashable fields (a list of groups) is indexed afresh
            people = Directory(directory)
        names = [m.text for m in people.mentions(text, requester) if not m.is_self and "@" not in m.text]
        vectors = self._index.encode([c.text for c in usable], names)
        history = _history(context)
        remembered = kinds_in(history)
        intents: list[tuple[Clause, str]] = []
        unsupported: list[str] = []
        for clause, vector in zip(usable, vectors, strict=True):
            earlier = [self._tools[name] for _, name in intents]
            chosen, refused_verb = self._recognise(clause, self._index.score(clause, vector, earlier, remembered))
            intents.extend((clause, tool) for tool in chosen)
            if refused_verb:
                unsupported.append(refused_verb)
        drafts = self._drafts(intents, usable, text, requester, people, today, history)
        return self._decide(drafts, allowed_tools, denied_tools, unsupported, text)

    def _recognise(self, clause: Clause, scored: list[Scored]) -> tuple[list[str], str | None]:
        """The tools a clause asks for, and the verb it uses when that verb is something no tool does."""
        if not clause.command:
            scored = [s for s in scored if self._tools[s.tool].effect != "WRITE"
                      or lexical_score(s.tool, head(clause.text)) >= STATEMENT_WRITE_CUE]
            if not scored:
                return [], None
        best = scored[0]
        verb = _UNSUPPORTED.match(clause.text)
        if verb and lexical_score(best.tool, clause.text) < 0.3:
            return [], verb.group("verb").lower()
        if best.score < ACCEPT:
            return [], None
        found = features(clause)
        lead = self._tools[best.tool]
        if len(found.connectors) >= 2 and lead.connector in found.connectors and not found.ids:
            chosen = [best.tool]
            for connector in sorted(found.connectors - {lead.connector}):
                peer = next((s for s in scored if self._same_shape(s.tool, lead, connector)), None)
                if peer is not None and peer.score >= ACCEPT_PER_CONNECTOR:
                    chosen.append(peer.tool)
            return chosen, None
        return [best.tool], None

    def _same_shape(self, name: str, lead: ToolInfo, connector: str) -> bool:
        """Whether `name` is `connector`'s counterpart of `lead` (same effect; no required argument if it has none)."""
        tool = self._tools[name]
        if tool.connector != connector or tool.effect != lead.effect:
            return False
        return bool(lead.required) or not tool.required

    def _drafts(
        self,
        intents: list[tuple[Clause, str]],
        usable: list[Clause],
        text: str,
        requester: str,
        people: Directory,
        today: dt.date,
        history: Sequence[str],
    ) -> list[_Draft]:
        """Steps with arguments filled, duplicates merged and missing record ids taken from earlier steps' results."""
        drafts: list[_Draft] = []
        for clause, name in intents:
            tool = self._tools[name]
            others = [c for c in usable if c is not clause]
            scope = Scope(request=text, clause=clause, others=others, requester=requester, directory=people,
                          today=today, history=history)
            for filled in _fan_out(tool, clause, fill(tool, scope)):
                duplicate = next((d for d in drafts if d.tool.name == name and _compatible(d.filled, filled)), None)
                if duplicate is not None:
                    _merge(duplicate.filled, filled, tool)
                    duplicate.firm = duplicate.firm or clause.command
                    continue
                drafts.append(_Draft(f"d{len(drafts) + 1}", tool, clause, filled, [], clause.command))
        planned: list[_Draft] = []
        for draft in drafts:
            for argument in list(draft.filled.missing):
                source = next((e for e in reversed(planned) if e.tool.result_path(argument)), None)
                if source is None and draft.firm:
                    source = self._finder(draft, argument, usable, text, requester, people, today)
                    if source is not None:
                        source.id = f"d{len(drafts) + len(planned) + 1}"
                        planned.append(source)
                if source is not None:
                    draft.filled.args[argument] = f"{{{{steps.{source.id}.{source.tool.result_path(argument)}}}}}"
                    draft.filled.missing.remove(argument)
                    draft.depends_on.append(source.id)
            planned.append(draft)
        return planned

    def _finder(self, draft: _Draft, argument: str, usable: list[Clause], text: str, requester: str,
                people: Directory, today: dt.date) -> _Draft | None:
        """A search that finds the record a clause describes but does not name ("assign me the issue about X").

        Only a READ tool of the same system, needing no argument, returning the missing one, and given a filter the
        clause states (not just its defaults) qualifies; otherwise the planner asks instead.
        """
        for tool in self._tools.values():
            if (tool.connector != draft.tool.connector or tool.effect != "READ" or tool.required
                    or tool.result_path(argument) is None):
                continue
            scope = Scope(request=text, clause=draft.clause, others=[c for c in usable if c is not draft.clause],
                          requester=requester, directory=people, today=today)
            filled = fill(tool, scope)
            stated = [name for name, value in filled.args.items()
                      if value is not None and value != tool.default(name) and not tool.is_person(name)]
            if stated and not filled.unclear:
                return _Draft("", tool, draft.clause, filled, [], False)
        return None

    def _decide(
        self,
        drafts: list[_Draft],
        allowed: set[str],
        denied: Mapping[str, str],
        unsupported: list[str],
        text: str,
    ) -> PlanResult:
        """Applies what the requester may use and what is still unclear, then numbers the steps.

        A denied tool becomes a refusal; a tool the tenant lacks, an explanation; an unclear or missing detail, a
        question. When a question is asked, the plan keeps only its reads: nothing is changed until the answer.
        """
        result = PlanResult()
        dropped: set[str] = set()
        questions: list[str] = []
        unavailable: list[str] = []
        kept: list[_Draft] = []
        instructed = any(d.firm for d in drafts)
        needed = {dep for d in drafts for dep in d.depends_on}
        for draft in drafts:
            name = draft.tool.name
            context_only = instructed and not draft.firm and draft.id not in needed
            question = _question(draft)
            if any(dep in dropped for dep in draft.depends_on) or (context_only and (
                    name in denied or name not in allowed or question or draft.tool.effect == "READ")):
                dropped.add(draft.id)
                continue
            if name in denied:
                result.refusals.append(Refusal(name, denied[name] or f"you may not use {name}"))
                dropped.add(draft.id)
                continue
            if name not in allowed:
                unavailable.append(name)
                dropped.add(draft.id)
                continue
            if question:
                questions.append(question)
                dropped.add(draft.id)
                continue
            kept.append(draft)
        if instructed:
            kept = [d for d in kept if d.firm or any(d.id in k.depends_on for k in kept)]
        if questions:
            reads = [d for d in kept if d.tool.effect != "WRITE"]
            dropped |= {d.id for d in kept if d.tool.effect == "WRITE"}
            kept = [d for d in reads if not any(dep in dropped for dep in d.depends_on)]
            result.question = " ".join(dict.fromkeys(questions))
        numbering = {draft.id: f"s{index}" for index, draft in enumerate(kept, start=1)}
        for draft in kept:
            args = {k: _renumber(v, numbering) for k, v in draft.filled.args.items()}
            result.steps.append(PlanStep(numbering[draft.id], draft.tool.name, args,
                                         [numbering[d] for d in draft.depends_on], _effect(draft.tool.effect)))
        explanations = []
        if unavailable:
            connectors = sorted({n.split(".", 1)[0] for n in unavailable})
            explanations.append(f"{', '.join(connectors)} is not connected for your organisation, so I can't run "
                                f"{', '.join(unavailable)}.")
        if unsupported and not result.steps:
            explanations.append(f"No tool I have can {unsupported[0]} that; I can look things up and make the changes "
                                "the ServiceNow, Jira, Salesforce and Okta tools allow.")
        if explanations:
            result.explanation = " ".join(explanations)
        if not (result.steps or result.refusals or result.question or result.explanation):
            if is_small_talk(text):
                result.explanation = ("Hi! I can open and follow IT tickets, request catalog items, work with Jira "
                                      "issues, Salesforce opportunities and cases, and handle Okta account tasks.")
            else:
                result.question = ("I'm not sure what you'd like me to do. Which ticket, issue, account or request "
                                   "do you mean, and what should happen to it?")
        return result


@functools.lru_cache(maxsize=16)
def _directory(people: tuple[Person, ...]) -> Directory:
    """The directory index of a tenant, reused while its people do not change (building it compiles a regex)."""
    return Directory(people)


def _history(context: Mapping[str, Any] | None) -> list[str]:
    """Texts of the recent turns, newest first, where a record mentioned earlier ("it") can be found."""
    if not context:
        return []
    turns = context.get("turns") or []
    texts = [t.get("text", "") if isinstance(t, Mapping) else str(t) for t in turns]
    return [t for t in reversed(texts) if t]


def _fan_out(tool: ToolInfo, clause: Clause, filled: Filled) -> list[Filled]:
    """One step per record when a clause names several of the kind the tool takes ("show ENG-1 and ENG-2")."""
    for argument in tool.required:
        kind = id_kind(tool, argument)
        pattern = ID_PATTERNS.get(kind or "")
        if pattern is None:
            continue
        found = list(dict.fromkeys(m.group().upper() for m in pattern.finditer(clause.text)))
        if len(found) > 1:
            copies = []
            for value in found:
                args = {**filled.args, argument: value}
                copies.append(Filled(args, missing_arguments(tool, args), list(filled.unclear)))
            return copies
    return [filled]


def _compatible(first: Filled, second: Filled) -> bool:
    return all(first.args.get(k) in (None, v) or v is None for k, v in second.args.items())


def _merge(into: Filled, other: Filled, tool: ToolInfo) -> None:
    for key, value in other.args.items():
        if into.args.get(key) is None and value is not None:
            into.args[key] = value
    into.missing[:] = missing_arguments(tool, into.args)
    into.unclear.extend(u for u in other.unclear if u not in into.unclear)


def _question(draft: _Draft) -> str | None:
    for unclear in draft.filled.unclear:
        if isinstance(unclear, Ambiguous):
            names = ", ".join(f"{p.name} ({p.email})" for p in unclear.candidates)
            return f"Which {unclear.name} do you mean: {names}?"
        if isinstance(unclear, Unknown):
            return f"I couldn't find {unclear.name} in your company directory. Who do you mean (name or email)?"
    if draft.filled.missing:
        first = draft.filled.missing[0]
        if "|" in first:
            options = [name.replace("_", " ") for name in first.split("|")]
            return f"Tell me at least one of these for {draft.tool.name}: {', '.join(options)}."
        return _QUESTIONS.get(first, f"What {first.replace('_', ' ')} should I use for {draft.tool.name}?")
    return None


def _renumber(value: Any, numbering: Mapping[str, str]) -> Any:
    if isinstance(value, str) and value.startswith("{{steps."):
        return re.sub(r"\{\{steps\.(d\d+)\.", lambda m: f"{{{{steps.{numbering[m.group(1)]}.", value)
    return value


def _effect(effect: str) -> Effect:
    return "WRITE" if effect == "WRITE" else "READ"

