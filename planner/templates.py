"""Templated answers: what each step did or found, names beside ids, and plainly what was not done."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from planner.model import DENIED, FAILED, OK, SKIPPED, AnswerInput, Observation

_MAX_LISTED = 10
_REFERENCE = re.compile(r"\{\{\s*steps\.[^}]*\}\}")
_URGENCY = {1: "high", 2: "medium", 3: "low"}

# What each tool does, in words that fit "I couldn't ..." and "I didn't ..." (arguments fill the braces).
_ACTIONS: dict[str, str] = {
    "okta.get_user": "look up {user} in Okta",
    "okta.list_groups": "list the Okta groups of {user}",
    "okta.list_apps": "list the Okta apps of {user}",
    "okta.reset_password": "reset the password of {user}",
    "okta.unlock_user": "unlock the account of {user}",
    "okta.reset_factors": "reset the MFA factors of {user}",
    "okta.add_user_to_group": "add {user} to the group {group}",
    "okta.remove_user_from_group": "remove {user} from the group {group}",
    "servicenow.create_incident": "open the incident \"{short_description}\"",
    "servicenow.get_incident": "look up {number}",
    "servicenow.list_incidents": "list the incidents of {caller}",
    "servicenow.add_comment": "add the comment to {number}",
    "servicenow.update_incident": "update {number}",
    "servicenow.request_catalog_item": "order {item}",
    "servicenow.get_request": "look up {number}",
    "servicenow.list_approvals": "list your approvals",
    "servicenow.approve": "approve the request {which}",
    "servicenow.reject": "reject the request {which}",
    "jira.create_issue": "create the Jira issue \"{summary}\"",
    "jira.get_issue": "look up {key}",
    "jira.search_issues": "search Jira",
    "jira.add_comment": "add the comment to {key}",
    "jira.transition_issue": "move {key} to {status}",
    "jira.assign_issue": "assign {key} to {assignee}",
    "salesforce.find_account": "find the account {name}",
    "salesforce.list_opportunities": "list the opportunities",
    "salesforce.get_opportunity": "look up the opportunity {opportunity}",
    "salesforce.update_opportunity": "update the opportunity {opportunity}",
    "salesforce.create_case": "log the case \"{subject}\" for {account}",
    "salesforce.create_task": "create the task \"{subject}\"",
    "salesforce.query": "run the query",
}


class _Args(dict[str, Any]):
    """Arguments for an action phrase: references read as "it", absent values as "it" too."""

    def __missing__(self, key: str) -> str:
        return "it"


def action(tool: str, arguments: Mapping[str, Any]) -> str:
    """What a step was to do, in words (`reset the password of bob.smith@acme.example`)."""
    values = _Args({k: ("it" if isinstance(v, str) and _REFERENCE.search(v) else v)
                    for k, v in arguments.items() if v is not None})
    values["which"] = next((str(values[k]) for k in ("number", "item", "requested_for") if k in values), "")
    phrase = _ACTIONS.get(tool, f"run {tool}")
    return re.sub(r"\s+", " ", phrase.format_map(values)).strip()


def _get(value: Any, *path: str | int) -> Any:
    for part in path:
        if isinstance(part, int):
            value = value[part] if isinstance(value, list) and -len(value) <= part < len(value) else None
        else:
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is None:
            return None
    return value


def _urgency(value: Any) -> str:
    return _URGENCY.get(value, str(value)) if isinstance(value, int) else str(value)


def _person(value: Any) -> str:
    """`Name (email)`, or whichever of them is known."""
    name, email = _get(value, "name"), _get(value, "email")
    if name and email:
        return f"{name} ({email})"
    return str(name or email or "someone")


def _name(value: Any) -> str:
    return str(_get(value, "name") or _get(value, "email") or "nobody")


def _amount(value: Any) -> str:
    if isinstance(value, int | float):
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"
    return str(value)


def _listing(items: Sequence[Any], render: Callable[[Any], str], total: Any = None) -> str:
    shown = [render(item) for item in items[:_MAX_LISTED]]
    count = total if isinstance(total, int) and total >= len(items) else len(items)
    more = count - len(shown)
    text = "; ".join(shown)
    return f"{text}; and {more} more" if more > 0 else text


def _changes(output: Mapping[str, Any]) -> str:
    changes = output.get("changes") or []
    parts = [f"{c.get('field')} from {_plain(c.get('from'))} to {_plain(c.get('to'))}" for c in changes
             if isinstance(c, Mapping)]
    return ", ".join(parts)


def _plain(value: Any) -> str:
    if isinstance(value, Mapping):
        return _person(value)
    if value is None or value == "":
        return "empty"
    return str(value)


def _incident(o: Mapping[str, Any]) -> str:
    return f"{o.get('number')} \"{o.get('short_description')}\" ({o.get('state')})"


def _issue(o: Mapping[str, Any]) -> str:
    assignee = _get(o, "assignee", "name")
    tail = f", {assignee}" if assignee else ""
    return f"{o.get('key')} \"{o.get('summary')}\" ({o.get('status')}{tail})"


def _opportunity(o: Mapping[str, Any]) -> str:
    parts = [str(x) for x in (o.get("account"), f"amount {_amount(o.get('amount'))}" if o.get("amount")
                              is not None else None, o.get("stage"),
                              f"closes {o.get('close_date')}" if o.get("close_date") else None) if x]
    return f"{o.get('name')} ({', '.join(parts)})"


def _request(o: Mapping[str, Any]) -> str:
    text = (f"{o.get('number')} ({o.get('item')} for {_name(o.get('requested_for'))}) is at stage {o.get('stage')}, "
            f"approval {o.get('approval')}")
    approvers = o.get("approvers") or []
    if approvers:
        text += "; approvers: " + _listing(approvers, lambda x: f"{_name(x)} ({x.get('state')})")
    return text + "."


def _okta_user(o: Mapping[str, Any], a: Mapping[str, Any]) -> str:
    text = f"{_person(o)}"
    details = ", ".join(str(x) for x in (o.get("title"), o.get("department")) if x)
    if details:
        text += f", {details}"
    text += f". Okta status: {o.get('status')}."
    manager = o.get("manager")
    text += f" Manager: {_person(manager)}." if manager else " No manager is recorded."
    return text


_DONE: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], str]] = {
    "okta.get_user": _okta_user,
    "okta.list_groups": lambda o, a: (
        f"{_name(o.get('user'))} is in {o.get('total', len(o.get('groups') or []))} groups: "
        f"{_listing(o.get('groups') or [], lambda g: str(g.get('name')), o.get('total'))}."),
    "okta.list_apps": lambda o, a: (
        f"{_name(o.get('user'))} has access to {o.get('total', len(o.get('apps') or []))} apps: "
        f"{_listing(o.get('apps') or [], lambda x: str(x.get('label')), o.get('total'))}."),
    "okta.reset_password": lambda o, a: (
        f"I reset the password of {_person(o.get('user'))}; the reset link went to {o.get('email_sent_to')}."),
    "okta.unlock_user": lambda o, a: (
        f"I unlocked the account of {_person(o.get('user'))} (it was {o.get('previous_status')}, now "
        f"{o.get('status')})."),
    "okta.reset_factors": lambda o, a: f"I reset the MFA factors of {_person(o.get('user'))}.",
    "okta.add_user_to_group": lambda o, a: (
        f"I added {_name(o.get('user'))} to the group {_get(o, 'group', 'name')}." if o.get("changed") else
        f"{_name(o.get('user'))} was already in the group {_get(o, 'group', 'name')}."),
    "okta.remove_user_from_group": lambda o, a: (
        f"I removed {_name(o.get('user'))} from the group {_get(o, 'group', 'name')}." if o.get("changed") else
        f"{_name(o.get('user'))} was not in the group {_get(o, 'group', 'name')}."),
    "servicenow.create_incident": lambda o, a: (
        f"I opened incident {o.get('number')} \"{o.get('short_description')}\" for {_name(o.get('caller'))} "
        f"(urgency {_urgency(o.get('urgency'))}, state {o.get('state')})."),
    "servicenow.get_incident": lambda o, a: (
        f"{_incident(o)}: urgency {_urgency(o.get('urgency'))}, caller "
        f"{_name(o.get('caller'))}, assigned to {_name(o.get('assigned_to'))}."),
    "servicenow.list_incidents": lambda o, a: (
        f"{o.get('total', len(o.get('incidents') or []))} incidents: "
        f"{_listing(o.get('incidents') or [], _incident, o.get('total'))}." if o.get("incidents") else
        "There are no incidents matching that."),
    "servicenow.add_comment": lambda o, a: (
        f"I added your comment to {o.get('number')} \"{o.get('short_description')}\"."),
    "servicenow.update_incident": lambda o, a: (
        f"I updated {o.get('number')} \"{o.get('short_description')}\": {_changes(o) or 'no field changed'}."),
    "servicenow.request_catalog_item": lambda o, a: (
        f"I ordered {o.get('quantity')} x {o.get('item')} for {_name(o.get('requested_for'))}: request "
        f"{o.get('request_number')}, requested item {o.get('number')} (approval {o.get('approval')}, stage "
        f"{o.get('stage')})."),
    "servicenow.get_request": lambda o, a: _request(o),
    "servicenow.list_approvals": lambda o, a: (
        f"{o.get('total', len(o.get('approvals') or []))} approvals: "
        + _listing(o.get("approvals") or [], lambda x: f"{x.get('number')} {x.get('item')} for "
                   f"{_name(x.get('requested_for'))} ({x.get('state')})", o.get("total")) + "."
        if o.get("approvals") else "No approvals are waiting for you."),
    "servicenow.approve": lambda o, a: (
        f"I approved {o.get('number')} ({o.get('item')} for {_name(o.get('requested_for'))}); its stage is now "
        f"{o.get('stage')}."),
    "servicenow.reject": lambda o, a: (
        f"I rejected {o.get('number')} ({o.get('item')} for {_name(o.get('requested_for'))}); its stage is now "
        f"{o.get('stage')}."),
    "jira.create_issue": lambda o, a: (
        f"I created {o.get('key')} \"{o.get('summary')}\" ({o.get('issue_type')}) in "
        f"{_get(o, 'project', 'name') or _get(o, 'project', 'key')}"
        + (f", assigned to {_name(o.get('assignee'))}" if o.get("assignee") else "") + "."),
    "jira.get_issue": lambda o, a: (
        f"{_issue(o)}: {o.get('issue_type')}, priority {o.get('priority') or 'none'}, assigned to "
        f"{_name(o.get('assignee'))}."),
    "jira.search_issues": lambda o, a: (
        f"I found {o.get('total', len(o.get('issues') or []))} issues: "
        f"{_listing(o.get('issues') or [], _issue, o.get('total'))}." if o.get("issues") else
        "No Jira issues match that."),
    "jira.add_comment": lambda o, a: f"I added your comment to {o.get('key')} \"{o.get('summary')}\".",
    "jira.transition_issue": lambda o, a: (
        f"I moved {o.get('key')} \"{o.get('summary')}\" from {o.get('previous_status')} to {o.get('status')}."),
    "jira.assign_issue": lambda o, a: (
        f"I assigned {o.get('key')} \"{o.get('summary')}\" to {_person(o.get('assignee'))}."),
    "salesforce.find_account": lambda o, a: (
        f"I found {o.get('total', len(o.get('accounts') or []))} accounts: "
        + _listing(o.get("accounts") or [], lambda x: f"{x.get('name')} ({x.get('industry') or 'no industry'}, "
                   f"owner {_name(x.get('owner'))})", o.get("total")) + "."
        if o.get("accounts") else "No account matches that."),
    "salesforce.list_opportunities": lambda o, a: (
        f"{o.get('total', len(o.get('opportunities') or []))} opportunities: "
        f"{_listing(o.get('opportunities') or [], _opportunity, o.get('total'))}." if o.get("opportunities")
        else "No opportunities match that."),
    "salesforce.get_opportunity": lambda o, a: (
        f"{_opportunity(o)}, owner {_name(o.get('owner'))}"
        + (f", next step: {o.get('next_step')}" if o.get("next_step") else "") + "."),
    "salesforce.update_opportunity": lambda o, a: (
        f"I updated the opportunity {o.get('name')}: {_changes(o) or 'no field changed'}."),
    "salesforce.create_case": lambda o, a: (
        f"I logged case {o.get('case_number')} \"{o.get('subject')}\" for {o.get('account')} (status "
        f"{o.get('status')})."),
    "salesforce.create_task": lambda o, a: (
        f"I created the task \"{o.get('subject')}\" on {_get(o, 'related_to', 'name')}"
        + (f", due {o.get('due_date')}" if o.get("due_date") else "") + "."),
    "salesforce.query": lambda o, a: f"The query returned {o.get('total', len(o.get('records') or []))} records.",
}


def done(result: Observation) -> str:
    """What a successful step did or found; the connector's own summary when the tool has no template."""
    render = _DONE.get(result.tool)
    if render is not None and result.output:
        try:
            return render(result.output, result.arguments)
        except (AttributeError, KeyError, TypeError, ValueError):
            pass
    if result.summary:
        return result.summary
    what = action(result.tool, result.arguments)
    return f"Done: {what}."


def not_done(result: Observation, planned: Mapping[str, Any] | None = None) -> str:
    """Why a step did not do its work, plainly (`planned`: the step's arguments when the result carries none)."""
    what = action(result.tool, result.arguments or planned or {})
    error = result.error
    message = (error.message if error else "").strip().rstrip(".")
    reason = error.reason if error else ""
    if result.status == DENIED:
        why = message or "you don't have permission"
        return f"I couldn't {what}: {why}."
    if result.status == FAILED:
        if reason == "NOT_FOUND":
            return f"I couldn't {what}: {message or 'it was not found'}."
        return f"I couldn't {what}: {message or 'the step failed'}."
    if result.status == SKIPPED:
        if reason in ("CONFIRMATION_DECLINED", "CONFIRMATION_TIMEOUT"):
            return f"I didn't {what}, because it was not confirmed."
        return f"I didn't {what}" + (f": {message}." if message else ", because a step it needed did not succeed.")
    return f"I didn't get to {what}" + (f": {message}." if message else ".")


def render(inp: AnswerInput) -> str:
    """The whole templated answer: each step in plan order, refusals, the explanation and the question."""
    by_id = {r.step_id: r for r in inp.results}
    planned = {s.id: s.args for s in inp.plan.steps}
    ordered = [by_id[s.id] for s in inp.plan.steps if s.id in by_id]
    ordered += [r for r in inp.results if r.step_id not in {s.id for s in inp.plan.steps}]
    planned_only = [s for s in inp.plan.steps if s.id not in by_id]
    lines: list[str] = []
    for result in ordered:
        lines.append(done(result) if result.status == OK else not_done(result, planned.get(result.step_id)))
    for step in planned_only:
        lines.append(f"I didn't get to {action(step.tool, step.args)}.")
    for refusal in inp.plan.refusals:
        reason = refusal.reason.strip().rstrip(".") or "you may not use it"
        lines.append(f"I can't use {refusal.tool} for you: {reason}.")
    if inp.plan.explanation:
        lines.append(inp.plan.explanation.strip())
    if inp.plan.question:
        lines.append(inp.plan.question.strip())
    if not lines:
        return "I didn't do anything for that request."
    if any(r.status != OK for r in inp.results) and any(r.status == OK for r in inp.results):
        lines.append("Everything else went through as described.")
    return "\n".join(lines)
