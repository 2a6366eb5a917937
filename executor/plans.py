"""Plans as the executor takes them: validation, effective dependencies, and merging a re-plan into a run."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from . import references
from .model import Plan, PlannedStep, StepState, StepStatus

MAX_STEPS = 50
_STEP_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_TOOL = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")


def dependencies(step: PlannedStep) -> tuple[str, ...]:
    """The steps `step` waits for: the declared ones and the ones its arguments refer to."""
    extra = sorted(references.referenced_steps(step.arguments) - set(step.depends_on))
    return (*step.depends_on, *extra)


def violations(plan: Plan, known: Collection[str] = (), prefix: str = "plan") -> list[tuple[str, str]]:
    """What is wrong with a plan, as (field, description); `known` are ids of steps that ran in earlier rounds."""
    out: list[tuple[str, str]] = []
    if len(plan.steps) > MAX_STEPS:
        out.append((f"{prefix}.steps", f"at most {MAX_STEPS} steps"))
    ids = [s.id for s in plan.steps]
    for i, step in enumerate(plan.steps):
        where = f"{prefix}.steps[{i}]"
        if not _STEP_ID.match(step.id):
            out.append((f"{where}.id", "1-64 letters, digits, '_' or '-'"))
        elif step.id in ids[:i]:
            out.append((f"{where}.id", f"duplicate step id {step.id!r}"))
        if not _TOOL.match(step.tool):
            out.append((f"{where}.tool", "must be <connector>.<action> in snake_case"))
        for dep in step.depends_on:
            if dep == step.id:
                out.append((f"{where}.depends_on", "a step cannot depend on itself"))
            elif dep not in ids and dep not in known:
                out.append((f"{where}.depends_on", f"unknown step {dep!r}"))
        for name, value in step.arguments.items():
            for bad in references.malformed(value):
                out.append((f"{where}.arguments.{name}",
                            f"malformed reference {bad}; write {{{{steps.<id>.<path>}}}} with dotted keys and [n]"))
            for ref in sorted(references.referenced_steps(value)):
                if ref == step.id:
                    out.append((f"{where}.arguments.{name}", "a step cannot refer to its own result"))
                elif ref not in ids and ref not in known:
                    out.append((f"{where}.arguments.{name}", f"refers to unknown step {ref!r}"))
    if not out and _has_cycle(plan):
        out.append((f"{prefix}.steps", "the steps' dependencies form a cycle"))
    return out


def _has_cycle(plan: Plan) -> bool:
    graph = {s.id: [d for d in dependencies(s) if plan.step(d) is not None] for s in plan.steps}
    state: dict[str, int] = {}

    def visit(node: str) -> bool:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1 or (nxt not in state and visit(nxt)):
                return True
        state[node] = 2
        return False

    return any(node not in state and visit(node) for node in graph)


def merge_revision(existing: Mapping[str, StepState], revised: Plan) -> Plan:
    """The revised plan as the run will execute it. A step that already ran successfully and comes back unchanged
    (same id, tool and planned arguments) is kept and not run again; any other reuse of an id seen in the run gets
    a fresh id (`<id>-r<round>`), with the revised plan's dependencies and references following it, so that an
    idempotency key (tenant, run, step) never meets different arguments."""
    taken = set(existing) | {s.id for s in revised.steps}
    renames: dict[str, str] = {}
    for step in revised.steps:
        old = existing.get(step.id)
        if old is None:
            continue
        if old.status is StepStatus.OK and old.tool == step.tool and old.planned == step.arguments:
            continue
        fresh, n = f"{step.id}-r{revised.round}", 2
        while fresh in taken:
            fresh, n = f"{step.id}-r{revised.round}-{n}", n + 1
        taken.add(fresh)
        renames[step.id] = fresh
    if not renames:
        return revised
    steps = tuple(
        PlannedStep(renames.get(s.id, s.id), s.tool, references.rename(s.arguments, renames),
                    tuple(renames.get(d, d) for d in s.depends_on), s.effect, s.description)
        for s in revised.steps)
    return revised.with_steps(steps)
