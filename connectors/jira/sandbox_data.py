"""The Jira sandbox's per-tenant data (users, projects, workflow, issues, comments), its permissions and JQL search."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from . import adf, jql

# Jira's default priority scheme, highest first (ids as Jira Cloud assigns them).
PRIORITIES: tuple[str, ...] = ("Highest", "High", "Medium", "Low", "Lowest")
DEFAULT_PRIORITY = "Medium"
# Status category key -> (id, name, colour), as Jira Cloud defines them.
STATUS_CATEGORIES: dict[str, tuple[int, str, str]] = {
    "new": (2, "To Do", "blue-gray"),
    "indeterminate": (4, "In Progress", "yellow"),
    "done": (3, "Done", "green"),
}
_SEED_CREATED = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
_WORDS = re.compile(r"\w+")
_PROPERTY_FIELD = re.compile(r"^issue\.property\[([^\]]+)\](?:\.(.+))?$", re.IGNORECASE)
_TEXT_FIELDS = ("summary", "description", "comment", "text", "environment")
_USER_FIELDS = ("assignee", "reporter", "creator")


def jira_time(moment: datetime) -> str:
    """Jira's timestamp format, e.g. 2026-11-20T09:14:00.000+0000."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}" + moment.strftime("%z")


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def _terms(text: str) -> list[str]:
    return [_stem(w) for w in _WORDS.findall(text.lower())]


@dataclass
class User:
    """A Jira user: an Atlassian account of the tenant's directory."""

    account_id: str
    email: str
    display_name: str
    groups: frozenset[str]
    active: bool = True


@dataclass
class Project:
    """A project and the groups its permission scheme grants browse and create to."""

    id: str
    key: str
    name: str
    lead: str
    browse_groups: frozenset[str]
    create_groups: frozenset[str]


@dataclass
class Status:
    """A workflow status and its category (new, indeterminate, done)."""

    id: str
    name: str
    category: str
    order: int


@dataclass
class Comment:
    """A comment: ADF body, author, timestamps and entity properties."""

    id: str
    author: str
    body: dict[str, Any]
    created: datetime
    updated: datetime
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class Issue:
    """An issue with the fields the connector reads and writes."""

    id: str
    key: str
    number: int
    project: Project
    summary: str
    description: dict[str, Any] | None
    issue_type: str
    status: Status
    priority: str | None
    assignee: str | None
    reporter: str
    created: datetime
    updated: datetime
    comments: list[Comment] = field(default_factory=list)
    properties: dict[str, Any] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)

    def text(self, which: str) -> str:
        parts: list[str] = []
        if which in ("summary", "text"):
            parts.append(self.summary)
        if which in ("description", "text"):
            parts.append(adf.to_text(self.description))
        if which in ("comment", "text"):
            parts.extend(adf.to_text(c.body) for c in self.comments)
        return "\n".join(parts)


class JiraTenant:
    """One Jira Cloud site: its directory, projects, workflow and issues, rebuilt from a fixture."""

    def __init__(self, tenant_id: str, fixture: dict[str, Any]) -> None:
        jira = fixture["jira"]
        self.tenant = tenant_id
        self.cloud_id: str = jira["cloud_id"]
        self.site: str = jira["site"].rstrip("/")
        self.users: dict[str, User] = {}
        for person in fixture["users"]:
            account = person.get("jira_account_id")
            if not account:
                continue
            name = f"{person['first_name']} {person['last_name']}"
            self.users[account] = User(account, person["email"].lower(), name, frozenset(person["groups"]))
        self.by_email = {u.email: u for u in self.users.values()}
        self.statuses = [Status(str(10000 + n), name, self._category(n, name, jira["statuses"]), n)
                         for n, name in enumerate(jira["statuses"])]
        transition_ids = dict((name, tid) for tid, name in re.findall(r"(\d+) \(([^)]+)\)", jira["transitions"]))
        # Each status has one global transition into it, named after it (fixtures: "any status to any other").
        self.transitions = [(transition_ids.get(s.name, str(11 + 10 * s.order)), s) for s in self.statuses]
        self.issue_types = {name: str(10001 + n) for n, name in enumerate(jira["issue_types"])}
        self.projects: dict[str, Project] = {}
        for n, spec in enumerate(jira["projects"]):
            lead = self.by_email.get(spec["lead"].lower())
            self.projects[spec["key"]] = Project(str(10000 + n), spec["key"], spec["name"],
                                                 lead.account_id if lead else "", frozenset(spec["browse_groups"]),
                                                 frozenset(spec["create_groups"]))
        # Issue properties JQL may search (None: all). A real site indexes only what an app declares.
        self.indexed_properties: set[str] | None = None
        self.issues: dict[str, Issue] = {}
        self.by_id: dict[str, Issue] = {}
        self._next_issue_id = 10001
        self._next_comment_id = 10001
        for n, spec in enumerate(jira["issues"]):
            project_key, number = spec["key"].rsplit("-", 1)
            created = _SEED_CREATED + timedelta(hours=7 * n)
            reporter = self.by_email[spec["reporter"].lower()].account_id
            assignee = self.by_email[spec["assignee"].lower()].account_id if spec.get("assignee") else None
            description = adf.to_adf(spec["description"]) if spec.get("description") else None
            self._add(Issue(self._issue_id(), spec["key"], int(number), self.projects[project_key], spec["summary"],
                            description, spec["type"], self.status_named(spec["status"]) or self.statuses[0],
                            spec.get("priority"), assignee, reporter, created, created))

    @staticmethod
    def _category(n: int, name: str, names: list[str]) -> str:
        if name.lower() == "done" or n == len(names) - 1:
            return "done"
        return "new" if n == 0 else "indeterminate"

    def _issue_id(self) -> str:
        issue_id = str(self._next_issue_id)
        self._next_issue_id += 1
        return issue_id

    def _add(self, issue: Issue) -> None:
        self.issues[issue.key] = issue
        self.by_id[issue.id] = issue

    # --- lookups and permissions -------------------------------------------------------------------
    def status_named(self, name: str) -> Status | None:
        return next((s for s in self.statuses if s.name.lower() == name.lower() or s.id == name), None)

    def user_named(self, value: str) -> User | None:
        """A user by accountId, email or display name, as JQL user clauses accept them."""
        lowered = value.lower()
        return (self.users.get(value) or self.by_email.get(lowered)
                or next((u for u in self.users.values() if u.display_name.lower() == lowered), None))

    @staticmethod
    def can_browse(user: User, project: Project) -> bool:
        return bool(user.groups & project.browse_groups)

    @staticmethod
    def can_create(user: User, project: Project) -> bool:
        """Create, and also transition, assign and edit: the sandbox's permission scheme grants them together."""
        return bool(user.groups & project.create_groups)

    def assignable(self, user: User, project: Project) -> bool:
        """The Assignable User permission: whoever may browse the project."""
        return user.active and self.can_browse(user, project)

    def visible_issue(self, user: User, key_or_id: str) -> Issue | None:
        issue = self.issues.get(key_or_id.upper()) or self.by_id.get(key_or_id)
        if issue is None or not self.can_browse(user, issue.project):
            return None
        return issue

    def visible_project(self, user: User, key_or_id: str) -> Project | None:
        project = self.projects.get(key_or_id.upper()) or next(
            (p for p in self.projects.values() if p.id == key_or_id), None)
        if project is None or not self.can_browse(user, project):
            return None
        return project

    # --- writes ------------------------------------------------------------------------------------
    def create_issue(self, project: Project, reporter: User, fields: dict[str, Any],
                     properties: dict[str, Any]) -> Issue:
        number = 1 + max((i.number for i in self.issues.values() if i.project is project), default=0)
        now = datetime.now(UTC)
        issue = Issue(self._issue_id(), f"{project.key}-{number}", number, project, fields["summary"],
                      fields.get("description"), fields["issuetype"], self.statuses[0], fields.get("priority"),
                      fields.get("assignee"), reporter.account_id, now, now, properties=dict(properties),
                      labels=list(fields.get("labels", [])))
        self._add(issue)
        return issue

    def add_comment(self, issue: Issue, author: User, body: dict[str, Any], properties: dict[str, Any]) -> Comment:
        now = datetime.now(UTC)
        comment = Comment(str(self._next_comment_id), author.account_id, body, now, now, dict(properties))
        self._next_comment_id += 1
        issue.comments.append(comment)
        issue.updated = now
        return comment

    def comment_by_id(self, comment_id: str) -> tuple[Issue, Comment] | None:
        for issue in self.issues.values():
            for comment in issue.comments:
                if comment.id == comment_id:
                    return issue, comment
        return None

    # --- JQL -----------------------------------------------------------------------------------------
    def search(self, caller: User, query_text: str) -> list[Issue]:
        """The issues a bounded query matches that the caller may browse, in the query's order."""
        query = jql.parse(query_text)
        if query.where is None:
            raise jql.JqlError("Unbounded JQL queries are not allowed here. Please add a search restriction to "
                               "your query.")
        predicate = self._predicate(query.where, caller)
        found = [i for i in self.issues.values() if self.can_browse(caller, i.project) and predicate(i)]
        found.sort(key=lambda i: (i.created, int(i.id)), reverse=True)
        for sort in reversed(query.order_by):
            found.sort(key=_sort_key(self._sort_getter(sort.field), sort.descending), reverse=sort.descending)
        return found

    def _predicate(self, node: jql.Node, caller: User) -> Callable[[Issue], bool]:
        if isinstance(node, jql.BoolOp):
            parts = [self._predicate(item, caller) for item in node.items]
            if node.op == "and":
                return lambda issue: all(p(issue) for p in parts)
            return lambda issue: any(p(issue) for p in parts)
        return self._clause(node, caller)

    def _clause(self, clause: jql.Clause, caller: User) -> Callable[[Issue], bool]:
        name = clause.field.lower()
        if name in _TEXT_FIELDS:
            return self._text_clause(clause, name)
        prop = _PROPERTY_FIELD.match(clause.field)
        getter: Callable[[Issue], str | None]
        canonical: Callable[[str], str | None]
        if prop is not None:
            if self.indexed_properties is not None and prop.group(1) not in self.indexed_properties:
                raise jql.JqlError(f"Field '{clause.field}' does not exist or you do not have permission to view it.")
            getter, canonical = self._property_getter(prop.group(1), prop.group(2)), str
        elif name in ("project", "key", "issuekey", "id", "issue", "status", "statuscategory", "priority",
                      "issuetype", "type") or name in _USER_FIELDS:
            getter, canonical = self._value_field(name, clause, caller)
        else:
            raise jql.JqlError(f"Field '{clause.field}' does not exist or you do not have permission to view it.")
        if clause.operator == "~":
            raise jql.JqlError(f"The operator '~' is not supported by the '{clause.field}' field.")
        if clause.operator in ("is", "is not"):
            if clause.operator == "is":
                return lambda issue: getter(issue) is None
            return lambda issue: getter(issue) is not None
        wanted: set[str | None] = set()
        for value in clause.values:
            if value is jql.EMPTY:
                wanted.add(None)
            elif isinstance(value, jql.Func):
                if name not in _USER_FIELDS:
                    raise jql.JqlError(f"The function '{value.name}' is not supported by the '{clause.field}' field.")
                wanted.add(caller.account_id)
            else:
                wanted.add(canonical(str(value)))
        if clause.operator in ("=", "in"):
            return lambda issue: getter(issue) in wanted
        return lambda issue: getter(issue) is not None and getter(issue) not in wanted

    def _value_field(self, name: str, clause: jql.Clause,
                     caller: User) -> tuple[Callable[[Issue], str | None], Callable[[str], str | None]]:
        """(value of the field for an issue, canonical form of a query value) for the enumerable fields."""

        def missing(value: str) -> jql.JqlError:
            return jql.JqlError(f"The value '{value}' does not exist for the field '{clause.field}'.")

        if name == "project":
            def project_of(value: str) -> str:
                project = self.visible_project(caller, value) or next(
                    (p for p in self.projects.values()
                     if p.name.lower() == value.lower() and self.can_browse(caller, p)), None)
                if project is None:
                    raise missing(value)
                return project.key
            return (lambda issue: issue.project.key), project_of
        if name in ("key", "issuekey", "id", "issue"):
            def key_of(value: str) -> str:
                issue = self.visible_issue(caller, value)
                if issue is None:
                    raise jql.JqlError(f"An issue with key '{value}' does not exist for field '{clause.field}'.")
                return issue.key
            return (lambda issue: issue.key), key_of
        if name == "status":
            def status_of(value: str) -> str:
                status = self.status_named(value)
                if status is None:
                    raise missing(value)
                return status.id
            return (lambda issue: issue.status.id), status_of
        if name == "statuscategory":
            def category_of(value: str) -> str:
                for key, (cid, label, _) in STATUS_CATEGORIES.items():
                    if value.lower() in (key, label.lower(), str(cid)):
                        return key
                raise missing(value)
            return (lambda issue: issue.status.category), category_of
        if name == "priority":
            def priority_of(value: str) -> str:
                for n, label in enumerate(PRIORITIES):
                    if value.lower() in (label.lower(), str(n + 1)):
                        return label
                raise missing(value)
            return (lambda issue: issue.priority), priority_of
        if name in ("issuetype", "type"):
            def type_of(value: str) -> str:
                for label, type_id in self.issue_types.items():
                    if value.lower() in (label.lower(), type_id):
                        return label
                raise missing(value)
            return (lambda issue: issue.issue_type), type_of

        def user_of(value: str) -> str:
            user = self.user_named(value)
            if user is None:
                raise missing(value)
            return user.account_id
        if name == "assignee":
            return (lambda issue: issue.assignee), user_of
        return (lambda issue: issue.reporter), user_of

    @staticmethod
    def _property_getter(key: str, path: str | None) -> Callable[[Issue], str | None]:
        def get(issue: Issue) -> str | None:
            value: Any = issue.properties.get(key)
            for part in (path.split(".") if path else []):
                value = value.get(part) if isinstance(value, dict) else None
            if value is None:
                return None
            return str(value).lower() if isinstance(value, bool) else str(value)
        return get

    @staticmethod
    def _text_clause(clause: jql.Clause, name: str) -> Callable[[Issue], bool]:
        if clause.operator in ("is", "is not") and name == "description":
            empty = clause.operator == "is"
            return lambda issue: (issue.description is None) == empty
        if clause.operator != "~":
            raise jql.JqlError(f"The operator '{clause.operator.upper()}' is not supported by the "
                               f"'{clause.field}' field.")
        value = clause.values[0]
        if not isinstance(value, str):
            raise jql.JqlError(f"The field '{clause.field}' does not support searching for an empty value.")
        wanted = [t for t in re.findall(r"[\w*]+", value.lower()) if t.strip("*")]
        if not wanted:
            raise jql.JqlError(f"The value '{value}' for field '{clause.field}' is invalid: it holds no words.")

        def holds(issue: Issue) -> bool:
            words = set(_terms(issue.text(name)))
            for term in wanted:
                if term.endswith("*"):
                    stem = term.rstrip("*")
                    if not any(w.startswith(stem) for w in words):
                        return False
                elif _stem(term) not in words:
                    return False
            return True
        return holds

    def _sort_getter(self, name: str) -> Callable[[Issue], Any]:
        lowered = name.lower()
        getters: dict[str, Callable[[Issue], Any]] = {
            "key": lambda i: (i.project.key, i.number), "issuekey": lambda i: (i.project.key, i.number),
            "id": lambda i: int(i.id), "created": lambda i: i.created, "updated": lambda i: i.updated,
            "summary": lambda i: i.summary.lower(), "status": lambda i: i.status.order,
            "priority": lambda i: len(PRIORITIES) - PRIORITIES.index(i.priority) if i.priority in PRIORITIES else None,
            "project": lambda i: i.project.key, "issuetype": lambda i: i.issue_type, "type": lambda i: i.issue_type,
            "assignee": lambda i: self.users[i.assignee].display_name.lower() if i.assignee else None,
            "reporter": lambda i: self.users[i.reporter].display_name.lower(),
        }
        if lowered in getters:
            return getters[lowered]
        if lowered in _TEXT_FIELDS:
            raise jql.JqlError(f"Field '{name}' does not support sorting.")
        raise jql.JqlError(f"Field '{name}' does not exist or you do not have permission to view it.")

    # --- renderings ----------------------------------------------------------------------------------
    def user_json(self, account_id: str, api: str) -> dict[str, Any]:
        user = self.users[account_id]
        avatar = f"https://avatar-management--avatars.us-west-2.prod.public.atl-paas.net/{account_id}/48"
        return {"self": f"{api}/user?accountId={account_id}", "accountId": account_id, "accountType": "atlassian",
                "emailAddress": user.email, "avatarUrls": {size: avatar for size in ("48x48", "24x24", "16x16",
                                                                                     "32x32")},
                "displayName": user.display_name, "active": user.active, "timeZone": "Etc/UTC"}

    def status_json(self, status: Status, api: str) -> dict[str, Any]:
        cid, label, colour = STATUS_CATEGORIES[status.category]
        return {"self": f"{api}/status/{status.id}", "description": "",
                "iconUrl": f"{self.site}/images/icons/statuses/generic.png", "name": status.name, "id": status.id,
                "statusCategory": {"self": f"{api}/statuscategory/{cid}", "id": cid, "key": status.category,
                                   "colorName": colour, "name": label}}

    def project_json(self, project: Project, api: str) -> dict[str, Any]:
        return {"self": f"{api}/project/{project.id}", "id": project.id, "key": project.key, "name": project.name,
                "projectTypeKey": "software", "simplified": False,
                "avatarUrls": {"48x48": f"{self.site}/rest/api/3/universal_avatar/view/type/project/avatar/10400"}}

    def comment_json(self, issue: Issue, comment: Comment, api: str, *, properties: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "self": f"{api}/issue/{issue.id}/comment/{comment.id}", "id": comment.id,
            "author": self.user_json(comment.author, api), "body": comment.body,
            "updateAuthor": self.user_json(comment.author, api), "created": jira_time(comment.created),
            "updated": jira_time(comment.updated), "jsdPublic": True,
        }
        if properties:
            out["properties"] = [{"key": k, "value": v} for k, v in comment.properties.items()]
        return out

    def issue_fields(self, issue: Issue, api: str) -> dict[str, Any]:
        """Every field of the issue, keyed by field id, in Jira's value shapes."""
        done = issue.status.category == "done"
        type_id = self.issue_types.get(issue.issue_type, "10001")
        priority = None
        if issue.priority:
            pid = str(PRIORITIES.index(issue.priority) + 1) if issue.priority in PRIORITIES else "3"
            priority = {"self": f"{api}/priority/{pid}", "iconUrl": f"{self.site}/images/icons/priorities/"
                        f"{issue.priority.lower()}.svg", "name": issue.priority, "id": pid}
        return {
            "summary": issue.summary,
            "description": issue.description,
            "issuetype": {"self": f"{api}/issuetype/{type_id}", "id": type_id, "description": "",
                          "iconUrl": f"{self.site}/rest/api/2/universal_avatar/view/type/issuetype/avatar/10318",
                          "name": issue.issue_type, "subtask": False, "avatarId": 10318, "hierarchyLevel": 0},
            "project": self.project_json(issue.project, api),
            "status": self.status_json(issue.status, api),
            "statuscategorychangedate": jira_time(issue.updated),
            "priority": priority,
            "assignee": self.user_json(issue.assignee, api) if issue.assignee else None,
            "reporter": self.user_json(issue.reporter, api),
            "creator": self.user_json(issue.reporter, api),
            "created": jira_time(issue.created),
            "updated": jira_time(issue.updated),
            "resolution": ({"self": f"{api}/resolution/10000", "id": "10000", "name": "Done",
                            "description": "Work has been completed on this issue."} if done else None),
            "resolutiondate": jira_time(issue.updated) if done else None,
            "labels": list(issue.labels),
            "comment": {"comments": [self.comment_json(issue, c, api) for c in issue.comments],
                        "self": f"{api}/issue/{issue.id}/comment", "maxResults": len(issue.comments),
                        "total": len(issue.comments), "startAt": 0},
        }

    def issue_json(self, issue: Issue, api: str, wanted: Iterable[str] | None) -> dict[str, Any]:
        """The issue as GET issue and search answer it; `wanted` None means every field."""
        fields = self.issue_fields(issue, api)
        if wanted is not None:
            names = set(wanted)
            if not names - {"id"}:
                return {"id": issue.id}
            fields = {k: v for k, v in fields.items() if k in names}
        return {"expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
                "id": issue.id, "self": f"{api}/issue/{issue.id}", "key": issue.key, "fields": fields}


def _sort_key(getter: Callable[[Issue], Any], descending: bool) -> Callable[[Issue], tuple[bool, Any]]:
    """A sort key that puts issues without a value last in either direction, as Jira does."""
    def key(issue: Issue) -> tuple[bool, Any]:
        value = getter(issue)
        present = value is not None
        return (present if descending else not present), (value if present else "")
    return key


def selected_fields(specs: Iterable[str], default: set[str] | None) -> set[str] | None:
    """Jira's `fields` parameter: names, `*all`, `*navigable`, `-name` exclusions; None means every field."""
    names = [n.strip() for spec in specs for n in spec.split(",") if n.strip()]
    include = [n for n in names if not n.startswith("-")]
    exclude = {n[1:] for n in names if n.startswith("-")}
    every = _ALL_FIELDS
    chosen: set[str] | None
    if not include:
        chosen = None if default is None else set(default)
    elif "*all" in include:
        chosen = None
    elif "*navigable" in include:
        chosen = set(every - {"comment"}) | {n for n in include if not n.startswith("*")}
    else:
        chosen = set(include)
    if exclude:
        chosen = (set(every) if chosen is None else chosen) - exclude
    return chosen


_ALL_FIELDS = frozenset({"summary", "description", "issuetype", "project", "status", "statuscategorychangedate",
                         "priority", "assignee", "reporter", "creator", "created", "updated", "resolution",
                         "resolutiondate", "labels", "comment"})
