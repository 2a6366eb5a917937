"""One sandbox Salesforce org: object metadata, records seeded from a tenant's fixtures, sharing and DML rules."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from . import soql
from .client import IDEMPOTENCY_FIELD
from .soql import FieldType, Relationship, SObjectType

F = FieldType
SEEDED_AT = "2026-11-01T00:00:00.000+0000"
_ID = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")

_OWNER = Relationship("Owner", "OwnerId", ("User",))
_ANY_OWNER = Relationship("Owner", "OwnerId", ("User",), polymorphic=True)  # User or Queue, as on Case and Task
_ACCOUNT = Relationship("Account", "AccountId", ("Account",))
_AUDIT = {"CreatedDate": F.DATETIME, "LastModifiedDate": F.DATETIME, "CreatedById": F.REFERENCE}

OBJECTS: dict[str, SObjectType] = {o.name: o for o in (
    SObjectType("User", "005", {
        "Id": F.ID, "Name": F.STRING, "FirstName": F.STRING, "LastName": F.STRING, "Email": F.STRING,
        "Username": F.STRING, "IsActive": F.BOOLEAN, "Title": F.STRING, "Department": F.STRING, **_AUDIT}),
    SObjectType("Account", "001", {
        "Id": F.ID, "Name": F.STRING, "Industry": F.STRING, "OwnerId": F.REFERENCE, **_AUDIT},
        {"Owner": _OWNER}),
    SObjectType("Opportunity", "006", {
        "Id": F.ID, "Name": F.STRING, "AccountId": F.REFERENCE, "StageName": F.STRING, "Amount": F.NUMBER,
        "CloseDate": F.DATE, "NextStep": F.STRING, "Probability": F.NUMBER, "IsClosed": F.BOOLEAN,
        "IsWon": F.BOOLEAN, "OwnerId": F.REFERENCE, **_AUDIT},
        {"Account": _ACCOUNT, "Owner": _OWNER}),
    SObjectType("Case", "500", {
        "Id": F.ID, "CaseNumber": F.STRING, "Subject": F.STRING, "Description": F.STRING, "Priority": F.STRING,
        "Status": F.STRING, "Origin": F.STRING, "IsClosed": F.BOOLEAN, "AccountId": F.REFERENCE,
        "OwnerId": F.REFERENCE, IDEMPOTENCY_FIELD: F.STRING, **_AUDIT},
        {"Account": _ACCOUNT, "Owner": _ANY_OWNER}),
    SObjectType("Task", "00T", {
        "Id": F.ID, "Subject": F.STRING, "Description": F.STRING, "WhatId": F.REFERENCE, "AccountId": F.REFERENCE,
        "ActivityDate": F.DATE, "Status": F.STRING, "Priority": F.STRING, "IsClosed": F.BOOLEAN,
        "OwnerId": F.REFERENCE, IDEMPOTENCY_FIELD: F.STRING, **_AUDIT},
        {"What": Relationship("What", "WhatId", ("Account", "Opportunity"), polymorphic=True),
         "Account": _ACCOUNT, "Owner": _ANY_OWNER}),
)}

# Fields a client may set on insert/update, with their maximum text lengths (None: not text).
WRITABLE: dict[str, dict[str, int | None]] = {
    "Account": {"Name": 255, "Industry": 255, "OwnerId": None},
    "Opportunity": {"Name": 120, "AccountId": None, "StageName": 255, "Amount": None, "CloseDate": None,
                    "NextStep": 255, "Probability": None, "OwnerId": None},
    "Case": {"Subject": 255, "Description": 32000, "Priority": 255, "Status": 255, "Origin": 255, "AccountId": None,
             "OwnerId": None, IDEMPOTENCY_FIELD: 255},
    "Task": {"Subject": 255, "Description": 32000, "WhatId": None, "ActivityDate": None, "Status": 255,
             "Priority": 255, "OwnerId": None, IDEMPOTENCY_FIELD: 255},
}
REQUIRED: dict[str, tuple[str, ...]] = {"Account": ("Name",), "Opportunity": ("Name", "StageName", "CloseDate"),
                                        "Case": (), "Task": ()}
EXTERNAL_IDS: dict[str, tuple[str, ...]] = {"Case": (IDEMPOTENCY_FIELD,), "Task": (IDEMPOTENCY_FIELD,)}
REFERENCE_TARGETS: dict[str, tuple[str, ...]] = {"OwnerId": ("User",), "AccountId": ("Account",),
                                                 "WhatId": ("Account", "Opportunity")}

# Restricted picklists (value -> defaults it implies). Stage probabilities are Salesforce's standard ones.
STAGE_PROBABILITY = {"Prospecting": 10.0, "Qualification": 10.0, "Needs Analysis": 20.0, "Value Proposition": 50.0,
                     "Id. Decision Makers": 60.0, "Perception Analysis": 70.0, "Proposal/Price Quote": 75.0,
                     "Negotiation/Review": 90.0, "Closed Won": 100.0, "Closed Lost": 0.0}
PICKLISTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("Case", "Priority"): ("High", "Medium", "Low"),
    ("Case", "Status"): ("New", "Working", "Escalated", "Closed"),
    ("Case", "Origin"): ("Phone", "Email", "Web"),
    ("Task", "Priority"): ("High", "Normal", "Low"),
    ("Task", "Status"): ("Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"),
}
DEFAULTS: dict[str, dict[str, Any]] = {"Case": {"Status": "New", "Priority": "Medium", "Origin": "Web"},
                                       "Task": {"Status": "Not Started", "Priority": "Normal"}}


@dataclass(frozen=True)
class Profile:
    """What a profile's record access reaches beyond the records a user owns."""

    sees_department: bool = False  # every record owned by a user of the same department (a director's team)
    sees_all: bool = False  # View All Data


# The org's profiles. A profile not listed here sees what its users own.
PROFILES: dict[str, Profile] = {
    "Sales Rep": Profile(),
    "Sales Director": Profile(sees_department=True),
    "System Administrator": Profile(sees_all=True),
}


class ApiError(Exception):
    """A REST API failure as Salesforce reports it: status, errorCode, message, fields."""

    def __init__(self, status: int, code: str, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields

    def body(self) -> list[dict[str, Any]]:
        error: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields:
            error["fields"] = list(self.fields)
        return [error]


def not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND", "The requested resource does not exist")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def _tag(tenant: str) -> str:
    return (re.sub(r"[^A-Za-z0-9]", "", tenant).upper() + "0000")[:4]


class Org:
    """A tenant's org: users, accounts, opportunities, cases and tasks, with sharing applied per user."""

    def __init__(self, tenant: str, fixture: dict[str, Any]) -> None:
        self.tenant = tenant
        self.org_id = f"00D{_tag(tenant)}00000001AAA"
        self.records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in OBJECTS}
        self.profiles: dict[str, str] = {}  # user id -> profile name
        self._sequence = 100000
        self._case_number = 1000
        data = fixture["salesforce"]
        self.stages: tuple[str, ...] = tuple(data.get("stages") or STAGE_PROBABILITY)
        users_by_email: dict[str, str] = {}
        for person in fixture["users"]:
            user_id = person.get("salesforce_user_id")
            if not user_id:
                continue
            users_by_email[person["email"].lower()] = user_id
            self.profiles[user_id[:15]] = person.get("salesforce_profile") or ""
            self.records["User"][user_id] = {
                "Id": user_id, "FirstName": person["first_name"], "LastName": person["last_name"],
                "Name": f"{person['first_name']} {person['last_name']}", "Email": person["email"],
                "Username": person["email"], "IsActive": True, "Title": person.get("title"),
                "Department": person.get("department"), **self._audit(user_id, SEEDED_AT)}
        accounts_by_name: dict[str, str] = {}
        for account in data.get("accounts", []):
            accounts_by_name[account["name"]] = account["id"]
            self.records["Account"][account["id"]] = {
                "Id": account["id"], "Name": account["name"], "Industry": account.get("industry"),
                "OwnerId": users_by_email[account["owner"].lower()], **self._audit(account["id"], SEEDED_AT)}
        for opp in data.get("opportunities", []):
            record = {"Id": opp["id"], "Name": opp["name"], "AccountId": accounts_by_name.get(opp.get("account", "")),
                      "StageName": opp["stage"], "Amount": _number(opp.get("amount")), "CloseDate": opp["close_date"],
                      "NextStep": opp.get("next_step"), "OwnerId": users_by_email[opp["owner"].lower()],
                      **self._audit(opp["id"], SEEDED_AT)}
            record.update(_stage_fields(opp["stage"]))
            self.records["Opportunity"][opp["id"]] = record
        for case in data.get("cases", []):
            self._case_number = max(self._case_number, int(case["case_number"]))
            self.records["Case"][case["id"]] = {
                "Id": case["id"], "CaseNumber": case["case_number"], "Subject": case["subject"],
                "Description": case.get("description"), "Priority": case.get("priority"),
                "Status": case.get("status", "New"), "Origin": case.get("origin"),
                "IsClosed": case.get("status") == "Closed", "AccountId": accounts_by_name.get(case.get("account", "")),
                "OwnerId": users_by_email[case["owner"].lower()], IDEMPOTENCY_FIELD: None,
                **self._audit(case["id"], SEEDED_AT)}
        for task in data.get("tasks", []):
            what = accounts_by_name.get(task.get("related_to", "")) or self._id_by_name("Opportunity",
                                                                                          task.get("related_to"))
            self.records["Task"][task["id"]] = {
                "Id": task["id"], "Subject": task["subject"], "Description": None, "WhatId": what,
                "AccountId": self._account_of(what), "ActivityDate": task.get("due_date"),
                "Status": task.get("status", "Not Started"), "Priority": task.get("priority", "Normal"),
                "IsClosed": task.get("status") == "Completed", "OwnerId": users_by_email[task["owner"].lower()],
                IDEMPOTENCY_FIELD: None, **self._audit(task["id"], SEEDED_AT)}

    # --- lookups ------------------------------------------------------------------------------------------------
    @staticmethod
    def _audit(created_by: str, at: str) -> dict[str, Any]:
        return {"CreatedDate": at, "LastModifiedDate": at, "CreatedById": created_by}

    def _id_by_name(self, sobject: str, name: str | None) -> str | None:
        return next((i for i, r in self.records[sobject].items() if r.get("Name") == name), None)

    def find(self, record_id: str) -> tuple[str, dict[str, Any]] | None:
        """Any record by its 15- or 18-character Id (the first 15 are case-sensitive and decisive)."""
        if not isinstance(record_id, str) or not _ID.match(record_id):
            return None
        prefix = record_id[:3]
        for name, sobject in OBJECTS.items():
            if sobject.key_prefix == prefix:
                for rid, record in self.records[name].items():
                    if rid[:15] == record_id[:15]:
                        return name, record
        return None

    def user_for(self, salesforce_user_id: str | None) -> dict[str, Any] | None:
        if not salesforce_user_id:
            return None
        found = self.find(salesforce_user_id)
        return found[1] if found and found[0] == "User" and found[1]["IsActive"] else None

    def _account_of(self, what_id: str | None) -> str | None:
        found = self.find(what_id) if what_id else None
        if found is None:
            return None
        return found[1]["Id"] if found[0] == "Account" else found[1].get("AccountId")

    # --- sharing ------------------------------------------------------------------------------------------------
    def can_access(self, user: dict[str, Any], sobject: str, record: dict[str, Any]) -> bool:
        """Read and edit access alike: own records; a director's department; everything for View All Data.
        Users are visible to every user of the org."""
        if sobject == "User":
            return True
        profile = PROFILES.get(self.profiles.get(user["Id"][:15], ""), Profile())
        owner_id = record.get("OwnerId") or ""
        if profile.sees_all or owner_id[:15] == user["Id"][:15]:
            return True
        if profile.sees_department:
            owner = self.find(owner_id)
            department = user.get("Department")
            return bool(owner and department and owner[1].get("Department") == department)
        return False

    def visible(self, user: dict[str, Any], sobject: str) -> list[dict[str, Any]]:
        return [r for r in self.records[sobject].values() if self.can_access(user, sobject, r)]

    def get(self, user: dict[str, Any], sobject: str, record_id: str) -> dict[str, Any]:
        found = self.find(record_id)
        if found is None or found[0] != sobject or not self.can_access(user, sobject, found[1]):
            raise not_found()
        return found[1]

    def by_external_id(self, sobject: str, field: str, value: str) -> list[dict[str, Any]]:
        if field not in EXTERNAL_IDS.get(sobject, ()):
            raise ApiError(404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: "
                                             f"{field}")
        return [r for r in self.records[sobject].values() if r.get(field) == value]

    # --- queries ------------------------------------------------------------------------------------------------
    def query(self, user: dict[str, Any], text: str) -> tuple[soql.Query, list[dict[str, Any]]]:
        """Parses and runs a query with the user's sharing; raises ApiError(400, MALFORMED_QUERY, ...) etc."""
        try:
            parsed = soql.parse(text, OBJECTS)
        except soql.SoqlError as err:
            raise ApiError(400, err.code, err.message) from None
        return parsed, soql.run(parsed, self.visible(user, parsed.sobject.name), self.find)

    # --- DML ----------------------------------------------------------------------------------------------------
    def create(self, user: dict[str, Any], sobject: str, fields: dict[str, Any]) -> dict[str, Any]:
        values = self._validated(user, sobject, fields, creating=True)
        missing = [f for f in REQUIRED[sobject] if values.get(f) in (None, "")]
        if missing:
            raise ApiError(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]",
                           tuple(missing))
        record_id = self._new_id(sobject)
        now = _now()
        record: dict[str, Any] = {f: None for f in OBJECTS[sobject].fields}
        record.update({**DEFAULTS.get(sobject, {}), "OwnerId": user["Id"], **values, "Id": record_id,
                       "CreatedDate": now, "LastModifiedDate": now, "CreatedById": user["Id"]})
        if sobject == "Case":
            self._case_number += 1
            record["CaseNumber"] = f"{self._case_number:08d}"
        self._derive(sobject, record, values)
        self.records[sobject][record_id] = record
        return record

    def update(self, user: dict[str, Any], sobject: str, record_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        record = self.get(user, sobject, record_id)
        values = self._validated(user, sobject, fields, creating=False)
        record.update(values)
        record["LastModifiedDate"] = _now()
        self._derive(sobject, record, values)
        return record

    def _derive(self, sobject: str, record: dict[str, Any], values: dict[str, Any]) -> None:
        if sobject == "Opportunity" and "StageName" in values:
            derived = _stage_fields(record["StageName"])
            if "Probability" in values:
                derived.pop("Probability")
            record.update(derived)
        elif sobject == "Case":
            record["IsClosed"] = record.get("Status") == "Closed"
        elif sobject == "Task":
            record["IsClosed"] = record.get("Status") == "Completed"
            record["AccountId"] = self._account_of(record.get("WhatId"))

    def _new_id(self, sobject: str) -> str:
        while True:
            self._sequence += 1
            record_id = f"{OBJECTS[sobject].key_prefix}{_tag(self.tenant)}{self._sequence:08d}AAA"
            if self.find(record_id) is None:
                return record_id

    def _validated(self, user: dict[str, Any], sobject: str, fields: dict[str, Any], *,
                   creating: bool) -> dict[str, Any]:
        """Checks names, writability, types, lengths, picklists and references, as the API does."""
        if not isinstance(fields, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "Unexpected parameter encountered during deserialization")
        writable = WRITABLE[sobject]
        values: dict[str, Any] = {}
        for name, value in fields.items():
            if name == "attributes":
                continue
            canonical = OBJECTS[sobject].field_named(name)
            if canonical is None:
                raise ApiError(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}")
            if canonical not in writable:
                verb = "create" if creating else "update"
                raise ApiError(400, "INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to {verb} fields: {canonical}. "
                               "Please check the security settings of this field and verify that it is read/write "
                               "for your profile or permission set.", (canonical,))
            values[canonical] = self._checked_value(user, sobject, canonical, value, writable[canonical])
        return values

    def _checked_value(self, user: dict[str, Any], sobject: str, name: str, value: Any, max_length: int | None) -> Any:
        kind = OBJECTS[sobject].fields[name]
        if value is None:
            if name in REQUIRED[sobject] or name == "StageName":
                raise ApiError(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{name}]", (name,))
            return None
        if kind is F.NUMBER:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ApiError(400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of double from "
                                                         f"{type(value).__name__} value {value}", (name,))
            return float(value)
        if kind is F.DATE:
            try:
                return date.fromisoformat(str(value)).isoformat()
            except ValueError:
                raise ApiError(400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of date from VALUE_STRING "
                                                         f"value {value} or request may be missing a required field",
                               (name,)) from None
        if not isinstance(value, str):
            raise ApiError(400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of string from "
                                                     f"{type(value).__name__} value {value}", (name,))
        if kind is F.REFERENCE:
            return self._checked_reference(user, name, value)
        if max_length is not None and len(value) > max_length:
            raise ApiError(400, "STRING_TOO_LONG", f"{name}: data value too large: {value[:40]}... "
                                                   f"(max length={max_length})", (name,))
        allowed = self.stages if name == "StageName" else PICKLISTS.get((sobject, name))
        if allowed is not None and value not in allowed:
            raise ApiError(400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                           f"{name}: bad value for restricted picklist field: {value}", (name,))
        return value

    def _checked_reference(self, user: dict[str, Any], name: str, value: str) -> str:
        if not _ID.match(value):
            raise ApiError(400, "MALFORMED_ID", f"{name}: id value of incorrect type: {value}", (name,))
        found = self.find(value)
        if found is None or found[0] not in REFERENCE_TARGETS[name]:
            raise ApiError(400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", (name,))
        if not self.can_access(user, found[0], found[1]):
            raise ApiError(400, "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY",
                           "insufficient access rights on cross-reference id", (name,))
        return str(found[1]["Id"])


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _stage_fields(stage: str) -> dict[str, Any]:
    return {"Probability": STAGE_PROBABILITY.get(stage, 50.0), "IsClosed": stage.startswith("Closed"),
            "IsWon": stage == "Closed Won"}
