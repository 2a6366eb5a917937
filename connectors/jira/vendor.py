"""The Jira connector's actions: the catalog's jira.* tools on the REST client, results shaped by the manifest."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from connectors.common.http import (
    DEFAULT_TIMEOUT_S,
    AmbiguousRecord,
    VendorDenied,
    VendorSession,
    VendorValidationError,
)
from connectors.common.matching import words_match
from connectors.common.service import ActionResult, CallContext

from . import adf
from .client import GATEWAY_BASE, JiraClient
from .jql import quote, split_order_by
from .manifest import ACTIONS, CONNECTOR, VERSION

# The issue (and comment) entity property that records the idempotency key of the call that created it.
IDEMPOTENCY_PROPERTY = "agentmesh.idempotency"
# Kept back from the call's deadline so a vendor timeout is answered as UNAVAILABLE before the caller gives up.
DEADLINE_RESERVE_S = 0.1
DEFAULT_ORDER = "ORDER BY created DESC"
DETAIL_FIELDS = ("summary", "status", "priority", "issuetype", "assignee", "reporter", "project", "description",
                 "created", "updated")
SEARCH_FIELDS = ("summary", "status", "priority", "issuetype", "assignee")
_WORDS = re.compile(r"\w+")

Action = Callable[[JiraClient, CallContext], Awaitable[ActionResult]]


def _person(user: Any) -> dict[str, str] | None:
    """A Jira user object as the manifest's person: display name beside the email."""
    if not isinstance(user, dict):
        return None
    return {"name": str(user.get("displayName") or user.get("accountId") or ""),
            "email": str(user.get("emailAddress") or "")}


def _iso(value: Any) -> str:
    """Jira's 2026-11-20T09:14:00.000+0000 as RFC 3339 (2026-11-20T09:14:00.000+00:00)."""
    try:
        return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%S.%f%z").isoformat(timespec="milliseconds")
    except ValueError:
        return str(value)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _name_of(value: Any) -> str | None:
    return str(value["name"]) if isinstance(value, dict) and value.get("name") is not None else None


def _brief(issue: dict[str, Any]) -> dict[str, Any]:
    """The fields every issue in a result carries."""
    fields = issue.get("fields") or {}
    return {
        "key": issue["key"],
        "summary": str(fields.get("summary") or ""),
        "status": _name_of(fields.get("status")) or "",
        "priority": _name_of(fields.get("priority")),
        "issue_type": _name_of(fields.get("issuetype")) or "",
        "assignee": _person(fields.get("assignee")),
    }


def _key_in(value: Any) -> str | None:
    return str(value.get("key")) if isinstance(value, dict) and value.get("key") is not None else None


class JiraVendor:
    """Runs the jira.* actions as the user whose token arrives with each call."""

    manifest: dict[str, Any] = {"connector": CONNECTOR, "version": VERSION, "display_name": "Jira Cloud",
                                "actions": ACTIONS}

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.session = VendorSession(timeout_s)
        self._sites: dict[str, str] = {}  # gateway base URL -> the site URL that browse links use
        self._actions: dict[str, Action] = {
            "create_issue": self.create_issue, "get_issue": self.get_issue, "search_issues": self.search_issues,
            "add_comment": self.add_comment, "transition_issue": self.transition_issue,
            "assign_issue": self.assign_issue,
        }

    async def invoke(self, ctx: CallContext) -> ActionResult:
        return await self._actions[ctx.action](self._client(ctx), ctx)

    async def close(self) -> None:
        await self.session.close()

    def _client(self, ctx: CallContext) -> JiraClient:
        base = ctx.instance.base_url or (GATEWAY_BASE.format(cloud_id=ctx.instance.cloud_id)
                                         if ctx.instance.cloud_id else "")
        if not base:
            raise VendorValidationError("the tenant's Jira registration has neither a base URL nor a cloud id",
                                        field_errors={"instance.base_url": "the OAuth gateway URL "
                                                                           ".../ex/jira/{cloud_id} is required"})
        if (ctx.credential.scheme or "Bearer") != "Bearer":
            raise VendorValidationError("Jira's OAuth gateway takes Bearer tokens only",
                                        field_errors={"credential.scheme": "must be Bearer"})
        deadline = time.monotonic() + max(ctx.timeout_s - DEADLINE_RESERVE_S, 0.0)
        return JiraClient(self.session, base, ctx.credential.token, deadline)

    @staticmethod
    def _email(ctx: CallContext, value: str) -> str:
        if value.lower() == "me" and ctx.principal is not None:
            return ctx.principal.user
        return value

    async def _site(self, client: JiraClient) -> str:
        site = self._sites.get(client.base_url)
        if site is None:
            site = str((await client.server_info()).get("baseUrl", "")).rstrip("/")
            self._sites[client.base_url] = site
        return site

    async def _detail(self, client: JiraClient, issue: dict[str, Any]) -> dict[str, Any]:
        fields = issue.get("fields") or {}
        project = fields.get("project") or {}
        description = fields.get("description")
        return {
            **_brief(issue),
            "id": str(issue["id"]),
            "project": {"key": str(project.get("key", "")), "name": str(project.get("name", ""))},
            "reporter": _person(fields.get("reporter")),
            "description": adf.to_text(description) if description else None,
            "created": _iso(fields.get("created")),
            "updated": _iso(fields.get("updated")),
            "url": f"{await self._site(client)}/browse/{issue['key']}",
        }

    # --- actions ------------------------------------------------------------------------------------
    async def create_issue(self, client: JiraClient, ctx: CallContext) -> ActionResult:
        args = ctx.arguments
        replayed = True
        try:
            found, _ = await client.search(
                f"issue.property[{IDEMPOTENCY_PROPERTY}].key = {quote(ctx.idempotency_key)}", ("summary",), 1)
        except VendorValidationError as err:
            # Jira searches only indexed properties; without the index no create could be made idempotent.
            raise VendorValidationError(
                f"this Jira site does not index the {IDEMPOTENCY_PROPERTY} issue property, which idempotent "
                f"creates need ({err.message})", err.status,
                field_errors={"instance": f"index the {IDEMPOTENCY_PROPERTY} issue property (key) for JQL, "
                                          "a one-time setup of the site"}) from err
        if found:
            key = found[0]["key"]
        else:
            replayed = False
            fields: dict[str, Any] = {"project": {"key": args["project"]}, "summary": args["summary"],
                                      "issuetype": {"name": args["issue_type"]}}
            if args.get("description"):
                fields["description"] = adf.to_adf(args["description"])
            if args.get("priority"):
                fields["priority"] = {"name": args["priority"]}
            if args.get("assignee"):
                user = await client.find_user(self._email(ctx, args["assignee"]))
                fields["assignee"] = {"accountId": user["accountId"]}
            created = await client.create_issue(fields, {IDEMPOTENCY_PROPERTY: {"key": ctx.idempotency_key}})
            key = created["key"]
        detail = await self._detail(client, await client.get_issue(key, DETAIL_FIELDS))
        result = {name: detail[name] for name in ("key", "id", "summary", "issue_type", "status", "priority",
                                                  "project", "assignee", "reporter", "url")}
        assigned = f"; assigned to {result['assignee']['name']}" if result["assignee"] else "; unassigned"
        return ActionResult(result, f"Created {key} ({result['issue_type']}) in {result['project']['name']}: "
                                    f"{_one_line(result['summary'])}{assigned}.", replayed=replayed)

    async def get_issue(self, client: JiraClient, ctx: CallContext) -> ActionResult:
        detail = await self._detail(client, await client.get_issue(ctx.arguments["key"], DETAIL_FIELDS))
        who = f"assigned to {detail['assignee']['name']}" if detail["assignee"] else "unassigned"
        priority = f", {detail['priority']}" if detail["priority"] else ""
        return ActionResult(detail, f"{detail['key']} ({detail['issue_type']}, {detail['status']}{priority}): "
                                    f"{_one_line(detail['summary'])}; {who}.")

    async def search_issues(self, client: JiraClient, ctx: CallContext) -> ActionResult:
        args = ctx.arguments
        parts: list[str] = []
        order = ""
        if args.get("jql"):
            where, order = split_order_by(args["jql"])
            if where:
                parts.append(f"({where})")
        if args.get("project"):
            parts.append(f"project = {quote(args['project'])}")
        if args.get("assignee"):
            email = self._email(ctx, args["assignee"])
            if ctx.principal is not None and email.lower() == ctx.principal.user.lower():
                parts.append("assignee = currentUser()")
            else:
                parts.append(f"assignee = {quote((await client.find_user(email))['accountId'])}")
        if args.get("status"):
            parts.append(f"status = {quote(args['status'])}")
        if args.get("text"):
            words = _WORDS.findall(args["text"])
            if not words:
                raise VendorValidationError("the text to search for holds no words",
                                            field_errors={"arguments.text": "give at least one word"})
            parts.append(f"text ~ {quote(' '.join(words))}")
        if not args.get("status") and not args.get("jql"):
            parts.append("statusCategory != Done")
        query = f"{' AND '.join(parts)} {order or DEFAULT_ORDER}".strip()
        try:
            found, more = await client.search(query, SEARCH_FIELDS, args["limit"])
            total = await client.approximate_count(query) if more else len(found)
        except VendorValidationError as err:
            raise VendorValidationError(f"{err.message} (the JQL run: {query})", err.status,
                                        field_errors={_search_argument(err.message, args): err.message}) from err
        issues = [_brief(issue) for issue in found]
        if not issues:
            return ActionResult({"issues": [], "total": 0, "jql": query}, "No Jira issues match.")
        shown = ", ".join(i["key"] for i in issues[:10]) + (", ..." if len(issues) > 10 else "")
        return ActionResult({"issues": issues, "total": max(total, len(issues)), "jql": query},
                            f"{max(total, len(issues))} Jira issue(s) match, {len(issues)} listed: {shown}.")

    async def add_comment(self, client: JiraClient, ctx: CallContext) -> ActionResult:
        key = ctx.arguments["key"]
        issue = await client.get_issue(key, ("summary",))
        summary = str((issue.get("fields") or {}).get("summary") or "")
        comment = await self._comment_with_key(client, key, ctx.idempotency_key)
        replayed = comment is not None
        if comment is None:
            comment = await client.add_comment(key, adf.to_adf(ctx.arguments["comment"]),
                                               {IDEMPOTENCY_PROPERTY: {"key": ctx.idempotency_key}})
        author = _person(comment.get("author")) or {"name": "", "email": ""}
        result = {"key": issue["key"], "summary": summary,
                  "comment": {"id": str(comment["id"]), "author": author, "text": adf.to_text(comment.get("body")),
                              "created": _iso(comment.get("created"))}}
        return ActionResult(result, f"Commented on {issue['key']} ({_one_line(summary)}) as {author['name']}.",
                            replayed=replayed)

    @staticmethod
    async def _comment_with_key(client: JiraClient, key: str, idempotency_key: str) -> dict[str, Any] | None:
        """The caller's comment on the issue that an earlier call with this idempotency key created, if any."""
        comments, caller = await client.comments(key)
        mine = [str(c["id"]) for c in comments
                if not caller or (c.get("author") or {}).get("accountId") == caller]
        if not mine:
            return None
        for comment in await client.comments_with_properties(mine):
            for prop in comment.get("properties") or []:
                if prop.get("key") == IDEMPOTENCY_PROPERTY and _key_in(prop.get("value")) == idempotency_key:
                    return dict(comment)
        return None

    async def transition_issue(self, client: JiraClient, ctx: CallContext) -> ActionResult:
        key, wanted = ctx.arguments["key"], ctx.arguments["status"]
        issue = await client.get_issue(key, ("summary", "status"))
        summary = str((issue.get("fields") or {}).get("summary") or "")
        current = _name_of((issue.get("fields") or {}).get("status")) or ""
        result = {"key": issue["key"], "summary": summary, "previous_status": current, "status": current}
        if current.lower() == wanted.lower():
            return ActionResult(result, f"{issue['key']} is already in {current}; nothing changed.")
        options = await client.transitions(key)
        if not options:
            raise VendorDenied(f"Jira offers you no transitions on {issue['key']}: you may not move it")
        by_name = {str(_name_of(t.get("to"))): t for t in options if _name_of(t.get("to"))}
        names = sorted({*by_name, current})
        matched = ([n for n in names if n.lower() == wanted.lower()]
                   or [n for n in names if words_match(wanted, n)])
        if not matched:
            raise VendorValidationError(
                f"{issue['key']} cannot move to {wanted!r}; it can move to {', '.join(sorted(by_name))}",
                field_errors={"arguments.status": f"not a status {issue['key']} can move to; choose one of "
                                                  f"{', '.join(sorted(by_name))}"})
        if len(matched) > 1:
            raise AmbiguousRecord(f"{wanted!r} matches several statuses: {', '.join(matched)}",
                                  metadata={"candidates": ", ".join(matched)})
        if matched[0] == current:
            return ActionResult(result, f"{issue['key']} is already in {current}; nothing changed.")
        chosen = by_name[matched[0]]
        await client.transition(key, str(chosen["id"]))
        result["status"] = str(_name_of(chosen.get("to")))
        return ActionResult(result, f"Moved {issue['key']} ({_one_line(summary)}) from {current} to "
                                    f"{result['status']}.")

    async def assign_issue(self, client: JiraClient, ctx: CallContext) -> ActionResult:
        key = ctx.arguments["key"]
        issue = await client.get_issue(key, ("summary", "assignee"))
        fields = issue.get("fields") or {}
        previous = _person(fields.get("assignee"))
        user = await client.find_user(self._email(ctx, ctx.arguments["assignee"]))
        await client.assign(key, str(user["accountId"]))
        assignee = _person(user) or {"name": "", "email": ""}
        if not assignee["email"]:
            assignee["email"] = self._email(ctx, ctx.arguments["assignee"])
        was = f"was {previous['name']}" if previous else "was unassigned"
        return ActionResult({"key": issue["key"], "summary": str(fields.get("summary") or ""), "assignee": assignee,
                             "previous_assignee": previous},
                            f"Assigned {issue['key']} to {assignee['name']} ({was}).")


def _search_argument(message: str, arguments: dict[str, Any]) -> str:
    """The argument a refused search is about, from the field Jira's message names."""
    for name in ("project", "status", "assignee"):
        if arguments.get(name) and f"field '{name}'" in message:
            return f"arguments.{name}"
    return "arguments.jql" if arguments.get("jql") else "arguments"
