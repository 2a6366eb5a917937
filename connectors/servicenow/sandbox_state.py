"""ServiceNow sandbox state: the tables a tenant's instance holds, seeded from the fixtures, and its ACLs and rules."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

Record = dict[str, str]


@dataclass(frozen=True)
class Column:
    """A column: its type, the table a reference points at, and a choice list (value → label)."""

    kind: str = "string"  # string | reference | choice | journal | glide_date_time | integer | boolean
    ref: str = ""
    choices: tuple[tuple[str, str], ...] = ()

    def label(self, value: str) -> str:
        return dict(self.choices).get(value, value)


def _ref(table: str) -> Column:
    return Column("reference", ref=table)


def _choice(*pairs: tuple[str, str]) -> Column:
    return Column("choice", choices=pairs)


_S, _DT, _INT, _BOOL, _JOURNAL = Column(), Column("glide_date_time"), Column("integer"), Column("boolean"), \
    Column("journal")
_IMPACT = _choice(("1", "1 - High"), ("2", "2 - Medium"), ("3", "3 - Low"))
_APPROVAL = _choice(("not requested", "Not Yet Requested"), ("requested", "Requested"), ("approved", "Approved"),
                    ("rejected", "Rejected"), ("cancelled", "Cancelled"), ("not_required", "No Longer Required"),
                    ("duplicate", "Duplicate"))
_SYS: dict[str, Column] = {"sys_id": _S, "sys_created_on": _DT, "sys_created_by": _S, "sys_updated_on": _DT,
                           "sys_updated_by": _S, "sys_mod_count": _INT}

INCIDENT_STATES = (("1", "New"), ("2", "In Progress"), ("3", "On Hold"), ("6", "Resolved"), ("7", "Closed"),
                   ("8", "Canceled"))
RITM_STAGES = (("waiting_for_approval", "Waiting for Approval"), ("request_approved", "Request Approved"),
               ("fulfillment", "Fulfillment"), ("delivery", "Delivery"), ("complete", "Completed"),
               ("request_cancelled", "Request Cancelled"))

# The columns of every table the sandbox serves, in the order the Table API returns them.
SCHEMA: dict[str, dict[str, Column]] = {
    "sys_user": {
        **_SYS, "user_name": _S, "email": _S, "first_name": _S, "last_name": _S, "name": _S, "title": _S,
        "manager": _ref("sys_user"), "active": _BOOL, "locked_out": _BOOL,
    },
    "incident": {
        **_SYS, "number": _S, "short_description": _S, "description": _S, "caller_id": _ref("sys_user"),
        "opened_by": _ref("sys_user"), "opened_at": _DT, "assigned_to": _ref("sys_user"),
        "state": _choice(*INCIDENT_STATES), "urgency": _IMPACT, "impact": _IMPACT,
        "priority": _choice(("1", "1 - Critical"), ("2", "2 - High"), ("3", "3 - Moderate"), ("4", "4 - Low"),
                            ("5", "5 - Planning")),
        "category": _choice(("inquiry", "Inquiry / Help"), ("software", "Software"), ("hardware", "Hardware"),
                            ("network", "Network"), ("database", "Database")),
        "active": _BOOL, "resolved_at": _DT, "resolved_by": _ref("sys_user"), "closed_at": _DT,
        "closed_by": _ref("sys_user"), "close_code": _S, "close_notes": _S, "correlation_id": _S,
        "correlation_display": _S, "watch_list": _S, "comments": _JOURNAL, "work_notes": _JOURNAL,
    },
    "sys_journal_field": {
        "sys_id": _S, "sys_created_on": _DT, "sys_created_by": _S, "element": _S, "element_id": _S, "name": _S,
        "value": _S,
    },
    "sc_cat_item": {**_SYS, "name": _S, "short_description": _S, "active": _BOOL, "price": _S},
    "item_option_new": {**_SYS, "name": _S, "question_text": _S, "cat_item": _ref("sc_cat_item"), "type": _S,
                        "active": _BOOL},
    "sc_request": {
        **_SYS, "number": _S, "requested_for": _ref("sys_user"), "opened_by": _ref("sys_user"), "opened_at": _DT,
        "request_state": _choice(("requested", "Pending Approval"), ("in_process", "Approved"),
                                 ("closed_complete", "Closed Complete"), ("closed_rejected", "Closed Rejected")),
        "approval": _APPROVAL, "stage": _S, "active": _BOOL, "price": _S,
    },
    "sc_req_item": {
        **_SYS, "number": _S, "request": _ref("sc_request"), "cat_item": _ref("sc_cat_item"),
        "short_description": _S, "requested_for": _ref("sys_user"), "opened_by": _ref("sys_user"),
        "opened_at": _DT, "quantity": _INT,
        "state": _choice(("-5", "Pending"), ("1", "Open"), ("2", "Work in Progress"), ("3", "Closed Complete"),
                         ("4", "Closed Incomplete"), ("7", "Closed Skipped")),
        "stage": _choice(*RITM_STAGES), "approval": _APPROVAL, "active": _BOOL,
    },
    "sysapproval_approver": {
        **_SYS, "approver": _ref("sys_user"), "state": _APPROVAL, "sysapproval": _ref("task"),
        "document_id": _S, "source_table": _S, "comments": _JOURNAL,
    },
    "sc_item_option": {**_SYS, "item_option_new": _ref("item_option_new"), "value": _S, "order": _INT},
    "sc_item_option_mtom": {**_SYS, "request_item": _ref("sc_req_item"), "sc_item_option": _ref("sc_item_option")},
}

# What a reference to a record of each table displays as.
DISPLAY_FIELD = {"sys_user": "name", "incident": "number", "sc_request": "number", "sc_req_item": "number",
                 "task": "number", "sc_cat_item": "name", "item_option_new": "question_text",
                 "sc_item_option": "value"}

# The variables every catalog item carries (the customer's one-time setup: an "agentmesh" variable set).
ITEM_VARIABLES = (("justification", "Business justification"), ("agentmesh_idempotency_key", "agentmesh reference"))

_STATE_BY_NAME = {label: value for value, label in INCIDENT_STATES}
_STAGE_BY_LABEL = {label: value for value, label in RITM_STAGES}
_RITM_STATE_BY_LABEL = {label: value for value, label in SCHEMA["sc_req_item"]["state"].choices}
_ITIL_WRITABLE = {"assigned_to", "work_notes"}
_INCIDENT_WRITABLE = {"short_description", "description", "caller_id", "assigned_to", "state", "urgency", "impact",
                      "category", "close_code", "close_notes", "correlation_id", "correlation_display",
                      "watch_list", "comments", "work_notes"}
_SEEDED_AT = "2026-11-01 08:00:00"


def now() -> str:
    """The instance clock, as the Table API writes date-times (UTC, `YYYY-MM-DD HH:MM:SS`)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())


def _stable_id(*parts: str) -> str:
    return hashlib.md5(":".join(parts).encode(), usedforsecurity=False).hexdigest()


class Denied(Exception):
    """A write the instance refuses (ACL, data policy) → 403 with this detail."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(detail)
        self.message = message
        self.detail = detail


@dataclass
class TenantState:
    """One instance: its tables (table → sys_id → record, every value a string) and each user's roles."""

    tenant: str
    tables: dict[str, dict[str, Record]] = field(default_factory=lambda: {name: {} for name in SCHEMA})
    roles: dict[str, set[str]] = field(default_factory=dict)
    item_approval: dict[str, str] = field(default_factory=dict)  # cat_item sys_id → "manager"

    # --- seeding --------------------------------------------------------------------------------
    @classmethod
    def from_fixture(cls, data: dict[str, Any]) -> TenantState:
        state = cls(data["tenant"]["id"])
        people = data["users"]
        ids = {p["email"].lower(): p["servicenow_sys_id"] for p in people}
        for p in people:
            uid = p["servicenow_sys_id"]
            state.roles[uid] = set(p.get("servicenow_roles") or ())
            state._insert("sys_user", {
                "sys_id": uid, "user_name": p["email"].split("@")[0], "email": p["email"],
                "first_name": p["first_name"], "last_name": p["last_name"],
                "name": f"{p['first_name']} {p['last_name']}", "title": p.get("title") or "",
                "manager": ids.get((p.get("manager") or "").lower(), ""), "active": "true", "locked_out": "false",
            }, at=_SEEDED_AT, by="system")
        sn = data.get("servicenow", {})
        for item in sn.get("catalog_items", []):
            state._seed_item(item)
        for inc in sn.get("incidents", []):
            state._seed_incident(inc, ids)
        for index, ritm in enumerate(sn.get("requested_items", [])):
            state._seed_requested_item(ritm, ids, index)
        return state

    def _seed_item(self, item: dict[str, Any]) -> None:
        sid = item["sys_id"]
        self._insert("sc_cat_item", {"sys_id": sid, "name": item["name"], "short_description": item["name"],
                                     "active": "true", "price": "0"}, at=_SEEDED_AT, by="admin")
        if item.get("approval"):
            self.item_approval[sid] = item["approval"]
        for name, question in ITEM_VARIABLES:
            self._insert("item_option_new", {"sys_id": _stable_id(self.tenant, sid, name), "name": name,
                                             "question_text": question, "cat_item": sid, "type": "6",
                                             "active": "true"}, at=_SEEDED_AT, by="admin")

    def _seed_incident(self, inc: dict[str, Any], ids: dict[str, str]) -> None:
        caller = ids.get(inc["caller"].lower(), "")
        state = _STATE_BY_NAME[inc["state"]]
        urgency = str(inc.get("urgency", 3))
        record = {
            "sys_id": _stable_id(self.tenant, "incident", inc["number"]), "number": inc["number"],
            "short_description": inc["short_description"], "description": inc.get("description") or "",
            "caller_id": caller, "opened_by": caller, "opened_at": inc["opened_at"],
            "assigned_to": ids.get((inc.get("assigned_to") or "").lower(), ""), "state": state, "urgency": urgency,
            "impact": "2", "priority": _priority("2", urgency), "category": inc.get("category") or "",
            "active": "false" if state in ("7", "8") else "true",
        }
        if state in ("6", "7"):
            record.update(resolved_at=inc["opened_at"], resolved_by=record["assigned_to"],
                          close_code="Solved (Permanently)", close_notes="Resolved by IT.")
        self._insert("incident", record, at=inc["opened_at"], by="system")

    def _seed_requested_item(self, ritm: dict[str, Any], ids: dict[str, str], index: int) -> None:
        item = next(r for r in self.tables["sc_cat_item"].values() if r["name"] == ritm["item"])
        who = ids[ritm["requested_for"].lower()]
        opened = f"2026-11-2{index % 10} 10:00:00"
        request = self._insert("sc_request", {
            "number": self.next_number("sc_request", "REQ"), "requested_for": who, "opened_by": who,
            "opened_at": opened, "request_state": "requested" if ritm["approval"] == "requested" else "in_process",
            "approval": ritm["approval"], "stage": "requested", "active": "true", "price": "0",
        }, at=opened, by="system", sys_id=_stable_id(self.tenant, "sc_request", ritm["number"]))
        record = self._insert("sc_req_item", {
            "number": ritm["number"], "request": request["sys_id"], "cat_item": item["sys_id"],
            "short_description": item["name"], "requested_for": who, "opened_by": who, "opened_at": opened,
            "quantity": "1", "state": _RITM_STATE_BY_LABEL.get(ritm["state"], "1"),
            "stage": _STAGE_BY_LABEL.get(ritm["stage"], ritm["stage"]), "approval": ritm["approval"],
            "active": "true",
        }, at=opened, by="system", sys_id=_stable_id(self.tenant, "sc_req_item", ritm["number"]))
        if ritm.get("approver"):
            self._insert("sysapproval_approver", {
                "approver": ids[ritm["approver"].lower()], "state": ritm["approval"],
                "sysapproval": record["sys_id"], "document_id": record["sys_id"], "source_table": "sc_req_item",
            }, at=opened, by="system", sys_id=_stable_id(self.tenant, "sysapproval_approver", ritm["number"]))

    # --- records --------------------------------------------------------------------------------
    def _insert(self, table: str, values: Record, *, at: str, by: str, sys_id: str = "") -> Record:
        record = {name: "" for name, col in SCHEMA[table].items() if col.kind != "journal"}
        record.update({k: v for k, v in values.items() if k in record})
        record.update(sys_id=sys_id or values.get("sys_id") or uuid.uuid4().hex, sys_created_on=at,
                      sys_created_by=by)
        if "sys_updated_on" in record:
            record.update(sys_updated_on=at, sys_updated_by=by, sys_mod_count="0")
        self.tables[table][record["sys_id"]] = record
        return record

    def next_number(self, table: str, prefix: str) -> str:
        used = [int(r["number"][len(prefix):]) for r in self.tables[table].values()
                if r.get("number", "").startswith(prefix) and r["number"][len(prefix):].isdigit()]
        return f"{prefix}{max(used, default=10000) + 1:07d}"

    def user(self, uid: str) -> Record | None:
        return self.tables["sys_user"].get(uid)

    def journal(self, table: str, sys_id: str) -> list[Record]:
        return sorted((j for j in self.tables["sys_journal_field"].values()
                       if j["name"] == table and j["element_id"] == sys_id),
                      key=lambda j: (j["sys_created_on"], j["sys_id"]))

    def _add_journal(self, table: str, sys_id: str, element: str, text: str, uid: str) -> Record:
        return self._insert("sys_journal_field", {"element": element, "element_id": sys_id, "name": table,
                                                  "value": text}, at=now(), by=self._user_name(uid))

    def _user_name(self, uid: str) -> str:
        person = self.user(uid)
        return person["user_name"] if person else "guest"

    def _touch(self, record: Record, uid: str) -> None:
        record.update(sys_updated_on=now(), sys_updated_by=self._user_name(uid),
                      sys_mod_count=str(int(record.get("sys_mod_count") or 0) + 1))

    # --- ACLs: derived from roles and ownership, never from lists of people -------------------------
    def is_itil(self, uid: str) -> bool:
        return bool(self.roles.get(uid, set()) & {"itil", "admin"})

    def can_read(self, table: str, record: Record, uid: str) -> bool:
        if table in ("sys_user", "sc_cat_item", "item_option_new"):
            return True
        if table == "incident":
            return (self.is_itil(uid) or uid in (record["caller_id"], record["opened_by"])
                    or uid in record["watch_list"].split(","))
        if table in ("sc_req_item", "task"):
            return (self.is_itil(uid) or uid in (record["requested_for"], record["opened_by"])
                    or any(a["approver"] == uid for a in self._approvals_of(record["sys_id"])))
        if table == "sc_request":
            return (self.is_itil(uid) or uid in (record["requested_for"], record["opened_by"])
                    or any(self.can_read("sc_req_item", r, uid) for r in self.tables["sc_req_item"].values()
                           if r["request"] == record["sys_id"]))
        if table == "sysapproval_approver":
            task = self.tables["sc_req_item"].get(record["sysapproval"])
            return record["approver"] == uid or self.is_itil(uid) or (
                task is not None and self.can_read("sc_req_item", task, uid))
        if table == "sys_journal_field":
            parent = self.tables.get(record["name"], {}).get(record["element_id"])
            return parent is not None and self.can_read(record["name"], parent, uid)
        if table == "sc_item_option_mtom":
            ritm = self.tables["sc_req_item"].get(record["request_item"])
            return ritm is not None and self.can_read("sc_req_item", ritm, uid)
        if table == "sc_item_option":
            return any(self.can_read("sc_item_option_mtom", m, uid)
                       for m in self.tables["sc_item_option_mtom"].values()
                       if m["sc_item_option"] == record["sys_id"])
        return "admin" in self.roles.get(uid, set())

    def _approvals_of(self, task_id: str) -> list[Record]:
        return [a for a in self.tables["sysapproval_approver"].values() if a["sysapproval"] == task_id]

    # --- incidents ------------------------------------------------------------------------------------
    def create_incident(self, body: dict[str, Any], uid: str) -> Record:
        fields = {k: _text(v) for k, v in body.items() if k in _INCIDENT_WRITABLE}
        if not self.is_itil(uid):
            fields = {k: v for k, v in fields.items() if k not in _ITIL_WRITABLE}
        values = {k: v for k, v in fields.items() if k not in _JOURNALS}
        values.setdefault("caller_id", uid)
        values.setdefault("urgency", "3")
        values.setdefault("impact", "3")
        values.setdefault("state", "1")
        stamp = now()
        record = self._insert("incident", {**values, "number": self.next_number("incident", "INC"),
                                           "opened_by": uid, "opened_at": stamp,
                                           "priority": _priority(values["impact"], values["urgency"]),
                                           "active": "true"}, at=stamp, by=self._user_name(uid))
        self._journal_from(fields, "incident", record["sys_id"], uid)
        return record

    def update_incident(self, record: Record, body: dict[str, Any], uid: str) -> tuple[Record, list[Record]]:
        """Applies a PATCH as `uid`; fields the user may not write are skipped, as the Table API does."""
        fields = {k: _text(v) for k, v in body.items() if k in _INCIDENT_WRITABLE}
        owner = uid == record["caller_id"]
        if set(fields) - {"comments"} and not (owner or self.is_itil(uid)):
            raise Denied("User Not Authorized", "Failed API level ACL Validation")
        if not self.is_itil(uid):
            fields = {k: v for k, v in fields.items() if k not in _ITIL_WRITABLE}
        values = {k: v for k, v in fields.items() if k not in _JOURNALS}
        merged = {**record, **values}
        if merged["state"] in ("6", "7") and {"state", "close_code", "close_notes"} & set(values):
            missing = [label for name, label in (("close_code", "Resolution code"), ("close_notes",
                                                                                      "Resolution notes"))
                       if not merged[name]]
            if missing:
                raise Denied("Operation Failed",
                             "Data Policy Exception: \n\tThe following fields are mandatory: " + ", ".join(missing))
        previous_state = record["state"]
        record.update(values)
        if "urgency" in values or "impact" in values:
            record["priority"] = _priority(record["impact"], record["urgency"])
        if record["state"] != previous_state:
            self._state_changed(record, previous_state, uid)
        self._touch(record, uid)
        return record, self._journal_from(fields, "incident", record["sys_id"], uid)

    def _state_changed(self, record: Record, previous: str, uid: str) -> None:
        state = record["state"]
        if state in ("6", "7") and previous not in ("6", "7"):
            record.update(resolved_at=now(), resolved_by=uid)
        if state == "7":
            record.update(closed_at=now(), closed_by=uid)
        if state in ("1", "2", "3"):
            record.update(resolved_at="", resolved_by="", closed_at="", closed_by="")
        record["active"] = "false" if state in ("7", "8") else "true"

    def _journal_from(self, body: dict[str, Any], table: str, sys_id: str, uid: str) -> list[Record]:
        return [self._add_journal(table, sys_id, element, _text(body[element]), uid)
                for element in _JOURNALS if _text(body.get(element, ""))]

    # --- approvals --------------------------------------------------------------------------------------
    def decide(self, approval: Record, body: dict[str, Any], uid: str) -> tuple[Record, list[Record]]:
        """A PATCH of an approval: only its approver may, and a decision moves the requested item along."""
        if approval["approver"] != uid:
            raise Denied("User Not Authorized", "Failed API level ACL Validation")
        state = _text(body.get("state", approval["state"]))
        if state not in dict(_APPROVAL.choices):
            raise Denied("Operation Failed", f"Invalid approval state {state!r}")
        previous = approval["state"]
        approval["state"] = state
        self._touch(approval, uid)
        created = self._journal_from(body, "sysapproval_approver", approval["sys_id"], uid)
        ritm = self.tables["sc_req_item"].get(approval["sysapproval"])
        if ritm is not None and state != previous and state in ("approved", "rejected"):
            self._approval_decided(ritm, state, uid)
        return approval, created

    def _approval_decided(self, ritm: Record, state: str, uid: str) -> None:
        request = self.tables["sc_request"].get(ritm["request"])
        if state == "approved":
            if all(a["state"] == "approved" for a in self._approvals_of(ritm["sys_id"])):
                ritm.update(approval="approved", stage="fulfillment")
                if request is not None:
                    request.update(approval="approved", request_state="in_process")
        else:
            ritm.update(approval="rejected", stage="request_cancelled", state="4", active="false")
            if request is not None:
                request.update(approval="rejected", request_state="closed_rejected", active="false")
        self._touch(ritm, uid)

    # --- catalog ------------------------------------------------------------------------------------------
    def order(self, item: Record, quantity: int, variables: dict[str, Any], requested_for: str,
              uid: str) -> tuple[Record, Record]:
        """Orders an item now: a request (REQ), its requested item (RITM), its variables and its approvals."""
        stamp, by = now(), self._user_name(uid)
        approver = ""
        if self.item_approval.get(item["sys_id"]) == "manager":
            person = self.user(requested_for)
            approver = person["manager"] if person else ""
        approval = "requested" if approver else "approved"
        request = self._insert("sc_request", {
            "number": self.next_number("sc_request", "REQ"), "requested_for": requested_for, "opened_by": uid,
            "opened_at": stamp, "request_state": "requested" if approver else "in_process", "approval": approval,
            "stage": "requested", "active": "true", "price": "0",
        }, at=stamp, by=by)
        ritm = self._insert("sc_req_item", {
            "number": self.next_number("sc_req_item", "RITM"), "request": request["sys_id"],
            "cat_item": item["sys_id"], "short_description": item["name"], "requested_for": requested_for,
            "opened_by": uid, "opened_at": stamp, "quantity": str(quantity), "state": "1",
            "stage": "waiting_for_approval" if approver else "fulfillment", "approval": approval, "active": "true",
        }, at=stamp, by=by)
        questions = {q["name"]: q for q in self.tables["item_option_new"].values()
                     if q["cat_item"] == item["sys_id"] and q["active"] == "true"}
        for name, value in variables.items():
            if name in questions and _text(value):
                option = self._insert("sc_item_option", {"item_option_new": questions[name]["sys_id"],
                                                         "value": _text(value), "order": "0"}, at=stamp, by=by)
                self._insert("sc_item_option_mtom", {"request_item": ritm["sys_id"],
                                                     "sc_item_option": option["sys_id"]}, at=stamp, by=by)
        if approver:
            self._insert("sysapproval_approver", {"approver": approver, "state": "requested",
                                                  "sysapproval": ritm["sys_id"], "document_id": ritm["sys_id"],
                                                  "source_table": "sc_req_item"}, at=stamp, by=by)
        return request, ritm


_JOURNALS = ("comments", "work_notes")


def _text(value: Any) -> str:
    """The Table API stores every value as a string (true/false lowercase)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def _priority(impact: str, urgency: str) -> str:
    try:
        return str(min(max(int(impact) + int(urgency) - 1, 1), 5))
    except ValueError:
        return "5"
