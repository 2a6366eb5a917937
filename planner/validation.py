"""Plan validation: permitted tools, schema-valid arguments (references allowed), a DAG, defaults, emails."""

from __future__ import annotations

import copy
import graphlib
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from planner.embedded.model import Person, PlanResult, PlanStep, Refusal
from planner.prompts import MAX_STEPS, PLAN_SCHEMA, STEP_ID_PATTERN

# `{{steps.<id>.<path>}}`: path is dotted keys and [n] list indexes (DESIGN.md, "Plans, references and outcomes").
_ID = r"[A-Za-z0-9_\-]+"
REFERENCE = re.compile(rf"\{{\{{\s*steps\.({_ID})((?:\.{_ID}|\[\d+\])*)\s*\}}\}}")
_BRACES = re.compile(r"\{\{(.*?)\}\}")
_STEP_ID = re.compile(STEP_ID_PATTERN)
# Person arguments by name (catalog.md); a schema may also mark one with `x-agentmesh-person`.
PERSON_ARGUMENTS = frozenset({"user", "assignee", "assigned_to", "owner", "caller", "requested_for"})
_SELF = frozenset({"me", "myself", "i", "self", "requester"})
_PLAN_VALIDATOR = jsonschema.Draft202012Validator(PLAN_SCHEMA)


@dataclass(frozen=True)
class ToolInfo:
    """A tool this user may call, as the planner knows it (from RegistryService.ListTools)."""

    name: str
    effect: str
    arguments_schema: Mapping[str, Any]
    description: str = ""
    version: str = ""
    examples: tuple[str, ...] = ()

    def person_arguments(self) -> set[str]:
        properties = self.arguments_schema.get("properties", {})
        return {name for name, schema in properties.items()
                if name in PERSON_ARGUMENTS or (isinstance(schema, Mapping) and schema.get("x-agentmesh-person"))}


class ToolCatalog:
    """What a plan may use: the user's tools (with schemas) and the tools denied to them (with why)."""

    def __init__(self, tools: Iterable[ToolInfo], denied: Mapping[str, str]) -> None:
        self.tools = {tool.name: tool for tool in tools}
        self.denied = dict(denied)
        self._validators: dict[str, jsonschema.protocols.Validator] = {}

    def validator(self, tool: ToolInfo) -> jsonschema.protocols.Validator:
        found = self._validators.get(tool.name)
        if found is None:
            found = self._validators[tool.name] = _validator_for(tool.arguments_schema)
        return found


def _validator_for(schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


def schema_violations(schema: Mapping[str, Any]) -> list[str]:
    """Why a tool's arguments schema is not a usable JSON Schema (callers send them; bad ones are refused)."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as err:
        return [err.message]
    return []


@dataclass(frozen=True)
class Ambiguous:
    """A name that fits several people."""

    candidates: tuple[Person, ...]


class People:
    """The tenant directory, for turning `me`, names and emails into one person's email."""

    def __init__(self, people: Sequence[Person]) -> None:
        self.people = tuple(people)
        self._by_email = {p.email.casefold(): p for p in people}

    def resolve(self, value: str, requester: str) -> str | Ambiguous | None:
        """The email `value` names; Ambiguous when several people fit; None when nobody does."""
        text = value.strip()
        key = text.casefold()
        if key in _SELF or key == requester.casefold():
            return requester
        if "@" in text:
            if not self.people:  # no directory came with the request: the registry resolves the email later
                return key
            person = self._by_email.get(key)
            return person.email if person else None
        key = re.sub(r"['\u2019]s$", "", key)
        for exact in (lambda p: key in {f"{p.first_name} {p.last_name}".casefold(), p.name.casefold()},
                      lambda p: key in {p.first_name.casefold(), p.last_name.casefold()}):
            found = tuple({p.email: p for p in self.people if exact(p)}.values())
            if len(found) == 1:
                return found[0].email
            if found:
                return Ambiguous(found)
        return None


@dataclass
class Validation:
    """A validated plan (defaults filled, persons as emails, dependencies completed) and what was wrong."""

    plan: PlanResult
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def plan_arguments(plan: PlanResult) -> dict[str, Any]:
    """A plan in the `submit_plan` shape (what models produce and what the validator reads)."""
    return {
        "steps": [{"id": s.id, "tool": s.tool, "args": dict(s.args), "depends_on": list(s.depends_on)}
                  for s in plan.steps],
        "refusals": [{"tool": r.tool, "reason": r.reason} for r in plan.refusals],
        "question": plan.question,
        "explanation": plan.explanation,
    }


def validate(raw: Any, catalog: ToolCatalog, people: People, requester: str,
             known_steps: Collection[str] = ()) -> Validation:
    """Checks a submitted plan (the `submit_plan` shape) and returns it normalized, with every problem found.

    `known_steps` are ids of steps that ran in earlier rounds (a re-plan may depend on them and keep them).
    """
    problems: list[str] = []
    if not isinstance(raw, Mapping):
        return Validation(PlanResult(), ["the plan must be a JSON object with steps, refusals, question, "
                                         "explanation"])
    for error in sorted(_PLAN_VALIDATOR.iter_errors(raw), key=lambda e: list(map(str, e.absolute_path))):
        problems.append(f"plan{_path(error.absolute_path)}: {error.message}")
    if problems:
        return Validation(PlanResult(), problems)
    question = _text(raw.get("question"))
    explanation = _text(raw.get("explanation"))
    refusals: list[Refusal] = []
    for position, given in enumerate(raw.get("refusals") or []):
        refused = str(given["tool"])
        if refused in catalog.denied:
            refusals.append(Refusal(refused, str(given.get("reason") or "").strip() or catalog.denied[refused]))
        elif refused in catalog.tools:
            problems.append(f"refusals[{position}]: the requester may use {refused}; plan the call instead of "
                            "refusing it")
        else:
            problems.append(f"refusals[{position}]: {refused} is not a tool; name a tool from DENIED TOOLS")

    steps_in = list(raw.get("steps") or [])
    ids = [str(s["id"]) for s in steps_in]
    known = set(known_steps)
    dropped: set[str] = set()
    steps: list[PlanStep] = []
    for position, given in enumerate(steps_in):
        step_id, tool_name = str(given["id"]), str(given["tool"])
        where = f"steps[{position}] ({step_id} {tool_name})"
        if not _STEP_ID.match(step_id):
            problems.append(f"{where}.id: 1-64 letters, digits, '_' or '-'")
        elif step_id in ids[:position]:
            problems.append(f"{where}.id: duplicate step id {step_id!r}")
        tool = catalog.tools.get(tool_name)
        if tool is None:
            if tool_name in catalog.denied:
                # A tool the requester may not use at all is refused, never planned.
                if not any(r.tool == tool_name for r in refusals):
                    refusals.append(Refusal(tool_name, catalog.denied[tool_name]))
                dropped.add(step_id)
            else:
                problems.append(f"{where}.tool: {tool_name} is not one of the requester's tools")
            continue
        # A null is an optional argument not given (models and the embedded planner both write them).
        args = {k: copy.deepcopy(v) for k, v in dict(given["args"]).items() if v is not None}
        depends = [str(d) for d in given.get("depends_on") or []]
        _fill_defaults(tool, args)
        for name in sorted(tool.person_arguments()):
            value = args.get(name)
            if not isinstance(value, str) or REFERENCE.search(value):
                continue
            resolved = people.resolve(value, requester)
            if isinstance(resolved, Ambiguous):
                names = ", ".join(f"{p.name} ({p.email})" for p in resolved.candidates)
                problems.append(f"{where}.args.{name}: {value!r} fits several people ({names}); ask which one")
            elif resolved is None:
                problems.append(f"{where}.args.{name}: {value!r} is nobody in the directory; use \"me\", a "
                                "listed email, or ask")
            else:
                args[name] = resolved
        referenced = _references(args, f"{where}.args", step_id, set(ids) | known, problems)
        depends.extend(r for r in sorted(referenced) if r not in depends)
        for dep in depends:
            if dep == step_id:
                problems.append(f"{where}.depends_on: a step cannot depend on itself")
            elif dep not in ids and dep not in known:
                problems.append(f"{where}.depends_on: unknown step {dep!r}")
        problems.extend(_argument_problems(catalog, tool, args, where))
        steps.append(PlanStep(step_id, tool_name, args, depends, "WRITE" if tool.effect == "WRITE" else "READ"))

    if dropped:
        steps = _without_dependents(steps, dropped)
    if len(steps) > MAX_STEPS:
        problems.append(f"plan.steps: at most {MAX_STEPS} steps")
    if not problems:
        problems.extend(_cycle(steps))
    if question and any(s.effect == "WRITE" for s in steps):
        problems.append("plan: a plan that asks a question must not hold WRITE steps; ask first, change later")
    if not (steps or refusals or question or explanation):
        problems.append("plan: give steps, refusals, a question or an explanation")
    return Validation(PlanResult(steps, refusals, question, explanation), problems)


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _path(path: Iterable[Any]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _fill_defaults(tool: ToolInfo, args: dict[str, Any]) -> None:
    for name, schema in tool.arguments_schema.get("properties", {}).items():
        if name not in args and isinstance(schema, Mapping) and "default" in schema:
            args[name] = copy.deepcopy(schema["default"])


def _references(value: Any, where: str, step_id: str, ids: set[str], problems: list[str]) -> set[str]:
    """The steps `value` refers to; malformed references and references to unknown steps are problems."""
    found: set[str] = set()
    if isinstance(value, str):
        for match in _BRACES.finditer(value):
            if not match.group(1).strip().startswith("steps"):
                continue
            ref = REFERENCE.fullmatch(match.group(0))
            if ref is None:
                problems.append(f"{where}: malformed reference {match.group(0)}; write {{{{steps.<id>.<path>}}}} "
                                "with dotted keys and [n]")
            elif ref.group(1) == step_id:
                problems.append(f"{where}: a step cannot refer to its own result")
            elif ref.group(1) not in ids:
                problems.append(f"{where}: refers to unknown step {ref.group(1)!r}")
            else:
                found.add(ref.group(1))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            found |= _references(item, f"{where}.{key}", step_id, ids, problems)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found |= _references(item, f"{where}[{index}]", step_id, ids, problems)
    return found


def _is_whole_reference(value: Any) -> bool:
    return isinstance(value, str) and REFERENCE.fullmatch(value.strip()) is not None


def _argument_problems(catalog: ToolCatalog, tool: ToolInfo, args: Mapping[str, Any], where: str) -> list[str]:
    """Schema violations of the arguments; an argument that is wholly a reference is checked when resolved."""
    referenced = {k for k, v in args.items() if _is_whole_reference(v)}
    if referenced:
        schema = _without_requirements(tool.arguments_schema, referenced)
        instance = {k: v for k, v in args.items() if k not in referenced}
        validator = _validator_for(schema)
    else:
        instance = dict(args)
        validator = catalog.validator(tool)
    out = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        out.append(f"{where}.args{_path(error.absolute_path)}: {_message(error)}")
    return out


def _without_requirements(schema: Mapping[str, Any], names: set[str]) -> dict[str, Any]:
    """The schema with `names` no longer required (at the top and in anyOf/oneOf branches): references supply them."""
    out = copy.deepcopy(dict(schema))
    if isinstance(out.get("required"), list):
        out["required"] = [r for r in out["required"] if r not in names]
    for key in ("anyOf", "oneOf"):
        for branch in out.get(key, []):
            if isinstance(branch, dict) and isinstance(branch.get("required"), list):
                branch["required"] = [r for r in branch["required"] if r not in names]
    return out


def _message(error: jsonschema.ValidationError) -> str:
    if error.validator == "anyOf" and all(isinstance(b, Mapping) and set(b) == {"required"}
                                          for b in error.validator_value):
        sets = [" and ".join(b["required"]) for b in error.validator_value]
        return "give at least one of: " + ", ".join(sets)
    return error.message


def _without_dependents(steps: list[PlanStep], dropped: set[str]) -> list[PlanStep]:
    """Steps that do not (transitively) wait for a dropped step."""
    gone = set(dropped)
    changed = True
    while changed:
        changed = False
        for step in steps:
            if step.id not in gone and any(d in gone for d in step.depends_on):
                gone.add(step.id)
                changed = True
    return [s for s in steps if s.id not in gone]


def _cycle(steps: Sequence[PlanStep]) -> list[str]:
    ids = {s.id for s in steps}
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for step in steps:
        sorter.add(step.id, *[d for d in step.depends_on if d in ids])
    try:
        sorter.prepare()
    except graphlib.CycleError as err:
        cycle = " -> ".join(str(n) for n in err.args[1]) if len(err.args) > 1 else ""
        return [f"plan.steps: the dependencies form a cycle ({cycle})"]
    return []
