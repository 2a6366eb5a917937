"""Okta connector manifest: the catalog's okta.* actions with their schemas, side effects, scopes and examples."""

from __future__ import annotations

from typing import Any

from connectors.common.manifest import JSON_SCHEMA_DIALECT, PERSON, PERSON_OR_NULL, person_argument

CONNECTOR = "okta"
VERSION = "1.0.0"

_USER_STATUS: dict[str, Any] = {
    "type": "string",
    "enum": ["ACTIVE", "DEPROVISIONED", "LOCKED_OUT", "PASSWORD_EXPIRED", "PROVISIONED", "RECOVERY", "STAGED",
             "SUSPENDED"],
    "description": "The Okta account status.",
}

_GROUP_ARGUMENT: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "description": ("The Okta group, by name or id (00g...). A name matches when every word given occurs in the "
                    "group's name, ignoring case and order; several matches are an error that lists them."),
}

_GROUP: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "Okta group id (00g...)."},
        "name": {"type": "string"},
    },
    "required": ["id", "name"],
    "additionalProperties": False,
}


def _user_only(role: str) -> dict[str, Any]:
    """Arguments schema of the actions whose only argument is `user`, defaulting to the requester."""
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "type": "object",
        "properties": {"user": person_argument(role, default="me")},
        "required": [],
        "additionalProperties": False,
    }


def _result(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _membership_arguments(role: str) -> dict[str, Any]:
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "type": "object",
        "properties": {"group": _GROUP_ARGUMENT, "user": person_argument(role, default="me")},
        "required": ["group"],
        "additionalProperties": False,
    }


def _membership_result(member: bool) -> dict[str, Any]:
    return _result(
        {
            "user": PERSON,
            "group": _GROUP,
            "member": {"type": "boolean", "const": member, "description": "Membership after the call."},
            "changed": {"type": "boolean",
                        "description": "False when the membership was already as asked (nothing changed)."},
        },
        ["user", "group", "member"],
    )


ACTIONS: list[dict[str, Any]] = [
    {
        "name": "get_user",
        "description": ("Looks up a person's Okta profile. Returns their email, name, account status, title, "
                        "department and manager (name and email)."),
        "effect": "READ",
        "scopes": ["okta.users.read"],
        "arguments_schema": _user_only("The person to look up."),
        "result_schema": _result(
            {
                "id": {"type": "string", "description": "Okta user id (00u...)."},
                "email": {"type": "string", "format": "email"},
                "name": {"type": "string"},
                "status": _USER_STATUS,
                "title": {"type": ["string", "null"]},
                "department": {"type": ["string", "null"]},
                "manager": {**PERSON_OR_NULL, "description": "The person's manager; null when none is set."},
            },
            ["id", "email", "name", "status", "title", "department", "manager"],
        ),
        "examples": [
            "who do I report to these days?",
            "what's my job title in Okta",
            "which manager does Priya Raman report to?",
            "is marcus.lee@example.com's Okta account active?",
            "pull up the directory profile for Dana Kim",
            "which department is Tom in",
        ],
    },
    {
        "name": "list_groups",
        "description": "Lists the Okta groups a person belongs to. Returns each group's id and name, and the count.",
        "effect": "READ",
        "scopes": ["okta.users.read", "okta.groups.read"],
        "arguments_schema": _user_only("The person whose groups to list."),
        "result_schema": _result(
            {
                "user": PERSON,
                "groups": {
                    "type": "array",
                    "items": {
                        **_GROUP,
                        "properties": {**_GROUP["properties"], "description": {"type": ["string", "null"]}},
                    },
                },
                "total": {"type": "integer", "minimum": 0},
            },
            ["user", "groups", "total"],
        ),
        "examples": [
            "which Okta groups does Lena belong to?",
            "am I in the VPN group?",
            "list my group memberships",
            "what access groups is jordan.ross@example.com part of",
            "show me every group I'm a member of in Okta",
        ],
    },
    {
        "name": "list_apps",
        "description": ("Lists the applications assigned to a person in Okta (their dashboard tiles). Returns each "
                        "app's label and sign-in link, and the count."),
        "effect": "READ",
        "scopes": ["okta.users.read", "okta.apps.read"],
        "arguments_schema": _user_only("The person whose apps to list."),
        "result_schema": _result(
            {
                "user": PERSON,
                "apps": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string", "description": "Okta app instance id (0oa...)."},
                            "label": {"type": "string", "description": "The app's name as the user sees it."},
                            "url": {"type": "string", "description": "The app's sign-in link."},
                        },
                        "required": ["id", "label", "url"],
                        "additionalProperties": False,
                    },
                },
                "total": {"type": "integer", "minimum": 0},
            },
            ["user", "apps", "total"],
        ),
        "examples": [
            "what apps show up on my Okta dashboard?",
            "do I have a Figma tile in Okta?",
            "list the applications assigned to Sam Patel",
            "which SSO apps can Marcus get into",
            "show me my okta app links",
        ],
    },
    {
        "name": "reset_password",
        "description": ("Starts an Okta password reset: Okta emails the person a reset link and the account goes to "
                        "RECOVERY until they set a new password. Returns the person, the new status and where the "
                        "link was sent."),
        "effect": "WRITE",
        "scopes": ["okta.users.read", "okta.users.manage"],
        "arguments_schema": _user_only("The person whose password to reset."),
        "result_schema": _result(
            {
                "user": PERSON,
                "status": _USER_STATUS,
                "email_sent_to": {"type": "string", "format": "email",
                                  "description": "Where Okta sent the reset link (the person's primary email)."},
            },
            ["user", "status", "email_sent_to"],
        ),
        "examples": [
            "I forgot my password, can you send me a reset link?",
            "send a password reset email to priya.raman@example.com",
            "my password expired and I can't sign in, help me set a new one",
            "can you trigger an Okta password reset for Tom Becker?",
            "need to change my okta password, I think it leaked",
        ],
    },
    {
        "name": "unlock_user",
        "description": ("Unlocks a person's Okta account that is LOCKED_OUT after too many failed sign-ins, so they "
                        "can sign in with their current password. Returns the status before and after."),
        "effect": "WRITE",
        "scopes": ["okta.users.read", "okta.users.manage"],
        "arguments_schema": _user_only("The person whose account to unlock."),
        "result_schema": _result(
            {"user": PERSON, "previous_status": _USER_STATUS, "status": _USER_STATUS},
            ["user", "previous_status", "status"],
        ),
        "examples": [
            "Okta says my account is locked after too many attempts",
            "please unlock Dana Kim's Okta account",
            "typed the wrong password too often and now I'm stuck, can you unlock me?",
            "unlock jordan.ross@example.com, she can't get into Okta",
            "my account got locked this morning, can you fix it",
        ],
    },
    {
        "name": "reset_factors",
        "description": ("Removes all of a person's enrolled MFA factors (Okta Verify, SMS, security keys...) so they "
                        "enroll again at their next sign-in. Returns the person and their account status."),
        "effect": "WRITE",
        "scopes": ["okta.users.read", "okta.users.manage"],
        "arguments_schema": _user_only("The person whose MFA factors to reset."),
        "result_schema": _result({"user": PERSON, "status": _USER_STATUS}, ["user", "status"]),
        "examples": [
            "I got a new phone and Okta Verify doesn't work anymore",
            "clear the MFA enrollments for Sam Patel so he can re-enroll",
            "lost my yubikey, please reset my second factor",
            "reset all authenticators for marcus.lee@example.com",
            "can you wipe my 2FA so I can set it up again on my new iPhone?",
        ],
    },
    {
        "name": "add_user_to_group",
        "description": ("Adds a person to an Okta group (and so to the apps the group grants). Returns the person, "
                        "the group and whether anything changed."),
        "effect": "WRITE",
        "scopes": ["okta.users.read", "okta.groups.read", "okta.groups.manage"],
        "arguments_schema": _membership_arguments("The person to add."),
        "result_schema": _membership_result(True),
        "examples": [
            "put me in the Data-Analysts group",
            "please add Priya Raman to Design-Team",
            "grant lena.fischer@example.com membership in the Finance-Readers group",
            "I need to be added to the Figma-Editors Okta group",
            "can you add Tom to VPN-Users",
        ],
    },
    {
        "name": "remove_user_from_group",
        "description": ("Removes a person from an Okta group (and from the apps only that group granted). Returns "
                        "the person, the group and whether anything changed."),
        "effect": "WRITE",
        "scopes": ["okta.users.read", "okta.groups.read", "okta.groups.manage"],
        "arguments_schema": _membership_arguments("The person to remove."),
        "result_schema": _membership_result(False),
        "examples": [
            "take me out of the Contractors group",
            "remove Dana Kim from Finance-Readers, she changed teams",
            "drop marcus.lee@example.com from the Beta-Testers group",
            "I no longer need the Design-Team group, please remove me",
            "revoke Sam's membership in Data-Analysts",
        ],
    },
]
