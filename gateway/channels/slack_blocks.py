"""Block Kit for the Slack surface: the progress message, the confirmation request and the final answer."""

from __future__ import annotations

import json
from typing import Any

from gateway.channels.progress import Approval, Progress

APPROVE, DECLINE = "agentmesh_approve", "agentmesh_decline"
ANSWER_BLOCK = "agentmesh_answer"  # the block id that marks a final answer message
ICONS = {"pending": ":white_circle:", "running": ":hourglass_flowing_sand:", "ok": ":white_check_mark:",
         "denied": ":no_entry:", "failed": ":x:", "skipped": ":fast_forward:", "awaiting": ":raised_hand:"}
OUTCOME_TEXT = {"answered": "Done", "denied": "Not allowed", "no_action": "Nothing done", "failed": "Failed"}
SYSTEMS = {"servicenow": "ServiceNow", "jira": "Jira", "salesforce": "Salesforce", "okta": "Okta"}
_MAX_TEXT = 2900  # a section's text is capped at 3000 characters


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:_MAX_TEXT] or " "}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:_MAX_TEXT]}]}


def step_lines(progress: Progress) -> str:
    lines = []
    for step in progress.steps:
        detail = step.summary or step.error
        lines.append(f"{ICONS.get(step.status, ':grey_question:')} {step.label}"
                     + (f" — {detail}" if detail and step.status != "running" else ""))
    return "\n".join(lines)


def progress_blocks(progress: Progress) -> tuple[str, list[dict[str, Any]]]:
    """The one progress message: the request, then the plan with each step's status."""
    title = "Working on it…" if not progress.outcome else OUTCOME_TEXT.get(progress.outcome, "Finished")
    blocks = [_section(f"*{title}*  _{progress.request[:200]}_")]
    if progress.steps:
        blocks.append(_section(step_lines(progress)))
    elif not progress.outcome:
        blocks.append(_context("Planning…"))
    if progress.note:
        blocks.append(_context(progress.note))
    return f"{title}: {progress.request[:100]}", blocks


def approval_blocks(approval: Approval, value: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
    """The confirmation request: what will happen, and Approve / Decline buttons carrying the run and step."""
    payload = json.dumps(value, separators=(",", ":"))
    arguments = ", ".join(f"{k}: {v}" for k, v in approval.arguments.items())
    blocks = [
        _section(f":raised_hand: *Please confirm:* {approval.prompt}"),
        _context(f"`{approval.tool}`" + (f" — {arguments}" if arguments else "")),
        {"type": "actions", "block_id": "agentmesh_confirm", "elements": [
            {"type": "button", "action_id": APPROVE, "style": "primary", "value": payload,
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": DECLINE, "style": "danger", "value": payload,
             "text": {"type": "plain_text", "text": "Decline"}},
        ]},
    ]
    return f"Please confirm: {approval.prompt}", blocks


def answered_blocks(approval_prompt: str, approved: bool, user_id: str) -> tuple[str, list[dict[str, Any]]]:
    """The confirmation request once answered (the buttons are gone)."""
    verdict = (f":white_check_mark: Approved by <@{user_id}>" if approved
               else f":no_entry_sign: Declined by <@{user_id}>")
    return verdict, [_section(f"{approval_prompt}\n{verdict}")]


def answer_blocks(progress: Progress) -> tuple[str, list[dict[str, Any]]]:
    """The final answer: the text, the accounts to link, and how the run ended."""
    text = progress.answer or progress.error or "Finished."
    blocks: list[dict[str, Any]] = [_section(text)]
    for connector, url in progress.links.items():
        name = SYSTEMS.get(connector, connector)
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": f":link: Connect your {name} account so I can act there."},
                       "accessory": {"type": "button", "action_id": f"agentmesh_link_{connector}", "url": url,
                                     "text": {"type": "plain_text", "text": f"Link {name}"}}})
    done = sum(1 for s in progress.steps if s.status == "ok")
    facts = [OUTCOME_TEXT.get(progress.outcome, progress.outcome or "Finished")]
    if progress.steps:
        facts.append(f"{done}/{len(progress.steps)} steps done")
    if progress.duration_s:
        facts.append(f"{progress.duration_s:.1f} s")
    blocks.append({**_context(" · ".join(facts)), "block_id": ANSWER_BLOCK})
    return text[:3000], blocks
