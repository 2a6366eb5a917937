"""Salesforce connector manifest: the catalog's salesforce.* actions with schemas, side effects, scopes and examples."""

from __future__ import annotations

from typing import Any

from connectors.common.manifest import JSON_SCHEMA_DIALECT, PERSON, person_argument

CONNECTOR = "salesforce"
VERSION = "1.0.0"

_SCOPES = ["api"]

_RECORD_ID: dict[str, Any] = {"type": "string", "pattern": "^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$",
                              "description": "Salesforce record Id (15 or 18 characters)."}

_WORDS_MATCH = ("matches when every word given occurs in the record's name, ignoring case and order; several "
                "matches are an error that lists them")

_ACCOUNT_ARGUMENT: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "description": f"The account, by name or Id; a name {_WORDS_MATCH}.",
}

_OPPORTUNITY_ARGUMENT: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "description": f"The opportunity, by name or Id (006...); a name {_WORDS_MATCH}.",
}

_STAGE: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 80,
    "description": ("Stage name as the org defines it, e.g. Prospecting, Qualification, Needs Analysis, "
                    "Proposal/Price Quote, Negotiation/Review, Closed Won, Closed Lost."),
}

_DATE: dict[str, Any] = {"type": "string", "format": "date"}

_AMOUNT: dict[str, Any] = {"type": "number", "minimum": 0}

_PRIORITY: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 40,
                             "description": "Priority as the org defines it, usually High, Medium or Low."}

_OPPORTUNITY_PROPERTIES: dict[str, Any] = {
    "id": _RECORD_ID,
    "name": {"type": "string"},
    "account": {"type": ["string", "null"], "description": "The account's name."},
    "amount": {"type": ["number", "null"], "description": "In the account currency."},
    "stage": {"type": "string"},
    "close_date": {**_DATE, "description": "Expected close date (ISO 8601)."},
    "owner": PERSON,
}

_OPPORTUNITY_DETAIL_PROPERTIES: dict[str, Any] = {
    **_OPPORTUNITY_PROPERTIES,
    "next_step": {"type": ["string", "null"]},
    "probability": {"type": ["number", "null"], "minimum": 0, "maximum": 100, "description": "Percent."},
    "is_closed": {"type": "boolean"},
    "is_won": {"type": "boolean"},
    "url": {"type": "string", "description": "Link to the opportunity in Salesforce."},
}

_OPPORTUNITY_DETAIL_REQUIRED = [*_OPPORTUNITY_PROPERTIES, "next_step", "probability", "is_closed", "is_won"]


def _object(properties: dict[str, Any], required: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
        **extra,
    }


def _items(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "array",
        "items": {"type": "object", "properties": properties, "required": required, "additionalProperties": False},
    }


ACTIONS: list[dict[str, Any]] = [
    {
        "name": "find_account",
        "description": ("Finds Salesforce accounts whose name contains every word given. Returns each account's "
                        "id, name, industry and owner (name and email), and how many match."),
        "effect": "READ",
        "scopes": _SCOPES,
        "arguments_schema": _object(
            {"name": {"type": "string", "minLength": 1, "maxLength": 255,
                      "description": "Words of the account's name, in any order and case."}},
            ["name"],
        ),
        "result_schema": _object(
            {
                "accounts": _items(
                    {"id": _RECORD_ID, "name": {"type": "string"}, "industry": {"type": ["string", "null"]},
                     "owner": PERSON},
                    ["id", "name", "industry", "owner"],
                ),
                "total": {"type": "integer", "minimum": 0},
            },
            ["accounts", "total"],
        ),
        "examples": [
            "look up the Hooli account",
            "who owns the Globochem account in Salesforce?",
            "find accounts named Vandelay",
            "what industry is Soylent Corp in",
            "is Pied Piper an account in Salesforce?",
        ],
    },
    {
        "name": "list_opportunities",
        "description": ("Lists an owner's opportunities, open ones only unless include_closed, optionally filtered "
                        "by stage, minimum amount, account and closing date; soonest close date first. Returns each "
                        "one's name, account, amount, stage, close date and owner, and how many match."),
        "effect": "READ",
        "scopes": _SCOPES,
        "arguments_schema": _object(
            {
                "owner": person_argument("Whose opportunities to list.", default="me"),
                "stage": {**_STAGE, "description": f"Only this stage. {_STAGE['description']}"},
                "min_amount": {**_AMOUNT, "description": "Only amounts of at least this, in the account currency."},
                "account": {**_ACCOUNT_ARGUMENT, "description": f"Only this account's, by name or Id; a name "
                                                                f"{_WORDS_MATCH}."},
                "closing_before": {**_DATE, "description": "Only those closing before this ISO date."},
                "include_closed": {"type": "boolean", "default": False,
                                   "description": "Also list Closed Won and Closed Lost opportunities."},
            },
            [],
        ),
        "result_schema": _object(
            {
                "opportunities": _items(_OPPORTUNITY_PROPERTIES, list(_OPPORTUNITY_PROPERTIES)),
                "total": {"type": "integer", "minimum": 0},
            },
            ["opportunities", "total"],
        ),
        "examples": [
            "what deals do I have closing before the end of the quarter?",
            "show my pipeline over 50k",
            "list Priya's opportunities in Negotiation/Review",
            "which Hooli opportunities are still open",
            "show all my deals including the closed and lost ones",
        ],
    },
    {
        "name": "get_opportunity",
        "description": ("Looks up one opportunity by name or Id. Returns its account, amount, stage, close date, "
                        "next step, probability, whether it is closed or won, its owner (name and email) and link."),
        "effect": "READ",
        "scopes": _SCOPES,
        "arguments_schema": _object({"opportunity": _OPPORTUNITY_ARGUMENT}, ["opportunity"]),
        "result_schema": _object(_OPPORTUNITY_DETAIL_PROPERTIES, _OPPORTUNITY_DETAIL_REQUIRED),
        "examples": [
            "what's the amount on the Hooli platform renewal?",
            "when is the Vandelay expansion expected to close?",
            "give me the details of opportunity 006XX0000012345AAA",
            "what stage is the Globochem pilot at",
            "what's the next step on the Soylent upsell",
        ],
    },
    {
        "name": "update_opportunity",
        "description": ("Changes an opportunity's stage, amount, close date or next step. Returns the opportunity "
                        "as updated and what changed (old and new values)."),
        "effect": "WRITE",
        "scopes": _SCOPES,
        "arguments_schema": _object(
            {
                "opportunity": _OPPORTUNITY_ARGUMENT,
                "stage": {**_STAGE, "description": f"The new stage. {_STAGE['description']}"},
                "amount": {**_AMOUNT, "description": "The new amount, in the account currency."},
                "close_date": {**_DATE, "description": "The new expected close date (ISO 8601)."},
                "next_step": {"type": "string", "minLength": 1, "maxLength": 255, "description": "The next step."},
            },
            ["opportunity"],
            anyOf=[{"required": [key]} for key in ("stage", "amount", "close_date", "next_step")],
        ),
        "result_schema": _object(
            {
                **_OPPORTUNITY_DETAIL_PROPERTIES,
                "changes": {
                    "type": "array",
                    "description": "What the call changed, field by field.",
                    "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"}, "from": {}, "to": {}},
                        "required": ["field", "from", "to"],
                        "additionalProperties": False,
                    },
                },
            },
            [*_OPPORTUNITY_DETAIL_REQUIRED, "changes"],
        ),
        "examples": [
            "move the Hooli renewal to Negotiation/Review",
            "update the Vandelay deal amount to 85,000",
            "set the next step on the Globochem pilot to 'send security questionnaire'",
            "the Soylent upsell slipped, change the close date to 2027-04-15",
            "we lost the Pied Piper deal, mark it Closed Lost",
        ],
    },
    {
        "name": "create_case",
        "description": ("Opens a customer support case on an account. Returns the case number, subject, status, "
                        "priority, account and owner (name and email)."),
        "effect": "WRITE",
        "scopes": _SCOPES,
        "arguments_schema": _object(
            {
                "account": _ACCOUNT_ARGUMENT,
                "subject": {"type": "string", "minLength": 1, "maxLength": 160,
                            "description": "One-line summary of the customer's issue."},
                "description": {"type": "string", "maxLength": 4000, "description": "Details of the issue."},
                "priority": _PRIORITY,
            },
            ["account", "subject"],
        ),
        "result_schema": _object(
            {
                "id": _RECORD_ID,
                "case_number": {"type": "string", "pattern": r"^\d+$"},
                "subject": {"type": "string"},
                "status": {"type": "string"},
                "priority": {"type": ["string", "null"]},
                "account": {"type": "string", "description": "The account's name."},
                "account_id": _RECORD_ID,
                "owner": PERSON,
                "url": {"type": "string", "description": "Link to the case in Salesforce."},
            },
            ["id", "case_number", "subject", "status", "priority", "account", "account_id", "owner"],
        ),
        "examples": [
            "open a case for Hooli: their SSO integration stopped syncing users",
            "create a high priority case on Vandelay, the shipment arrived damaged",
            "log a support case for Globochem about missing API credentials",
            "new case for Soylent Corp: they want a copy of last year's contract",
            "raise a case against Pied Piper, portal login fails for all their admins",
        ],
    },
    {
        "name": "create_task",
        "description": ("Creates a to-do for the requester on an account or an opportunity. Returns the task's "
                        "subject, status, due date, the record it relates to (type and name) and owner."),
        "effect": "WRITE",
        "scopes": _SCOPES,
        "arguments_schema": _object(
            {
                "subject": {"type": "string", "minLength": 1, "maxLength": 160, "description": "What to do."},
                "related_to": {"type": "string", "minLength": 1, "maxLength": 255,
                               "description": (f"The account or opportunity the task is about, by name or Id; a "
                                               f"name {_WORDS_MATCH}.")},
                "due_date": {**_DATE, "description": "When it is due (ISO 8601)."},
            },
            ["subject", "related_to"],
        ),
        "result_schema": _object(
            {
                "id": _RECORD_ID,
                "subject": {"type": "string"},
                "status": {"type": "string"},
                "due_date": {"type": ["string", "null"], "format": "date"},
                "related_to": {
                    "type": "object",
                    "properties": {"id": _RECORD_ID, "name": {"type": "string"},
                                   "type": {"type": "string", "enum": ["Account", "Opportunity"]}},
                    "required": ["id", "name", "type"],
                    "additionalProperties": False,
                },
                "owner": PERSON,
            },
            ["id", "subject", "status", "due_date", "related_to", "owner"],
        ),
        "examples": [
            "remind me to call Hooli next Tuesday",
            "create a task on the Vandelay renewal to send the revised quote by 2027-03-01",
            "add a follow-up task for the Globochem account: schedule a QBR",
            "put a to-do on the Soylent upsell to check in with procurement by Friday",
            "task for Pied Piper: send the onboarding deck",
        ],
    },
    {
        "name": "query",
        "description": ("Runs a read-only SOQL SELECT query as the requester, for questions the other salesforce "
                        "tools cannot answer. Returns the records (field names as in the query) and how many match."),
        "effect": "READ",
        "scopes": _SCOPES,
        "arguments_schema": _object(
            {"soql": {"type": "string", "minLength": 1, "maxLength": 4000,
                      "pattern": r"^\s*[Ss][Ee][Ll][Ee][Cc][Tt]\s",
                      "description": "A SOQL SELECT statement, e.g. SELECT Name, Amount FROM Opportunity LIMIT 5."}},
            ["soql"],
        ),
        "result_schema": _object(
            {
                "records": {"type": "array", "items": {"type": "object"},
                            "description": "The rows, keyed by field name (relationship fields nested)."},
                "total": {"type": "integer", "minimum": 0,
                          "description": "How many rows match (totalSize); may exceed the number returned."},
            },
            ["records", "total"],
        ),
        "examples": [
            "run SOQL: SELECT Name, Amount FROM Opportunity WHERE CloseDate = THIS_MONTH",
            "how many open cases do we have per account?",
            "count my opportunities by stage",
            "which Healthcare accounts have no open opportunities?",
            "query Salesforce for the contacts at Hooli with their emails",
        ],
    },
]
