"""The Okta connector's actions: the catalog's okta.* tools on the Okta Management API, as the calling user."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from agentmesh.connector.v1 import connector_pb2
from connectors.common.http import VendorError, VendorNotFound, VendorSession, VendorValidationError
from connectors.common.service import ActionResult, CallContext
from mesh.errors import Reason

from .client import DEFAULT_PAGE_SIZE, OktaClient, scim_string
from .idempotency import Attempt, KeyRecords
from .manifest import ACTIONS, CONNECTOR, VERSION

# The self-service actions a tenant may run with its service credential, and only on the requester.
SELF_SERVICE_ACTIONS = frozenset({"reset_password", "unlock_user"})
SCHEMES = ("Bearer", "SSWS")
# Part of a call's deadline held back so that a slow Okta is answered as UNAVAILABLE before the caller gives up.
DEADLINE_RESERVE_S = 0.25
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

Read = Callable[[CallContext, OktaClient], Awaitable[ActionResult]]
Write = Callable[[CallContext, OktaClient, Attempt], Awaitable[ActionResult]]


class ServiceCredentialRefused(VendorError):
    """The tenant's service credential arrived for something other than a self-service action on oneself."""

    reason = Reason.POLICY_DENIED


def manifest() -> dict[str, Any]:
    """The connector manifest served by Describe."""
    return {"connector": CONNECTOR, "version": VERSION, "display_name": "Okta", "actions": ACTIONS}


def _name(user: dict[str, Any]) -> str:
    profile = user.get("profile", {})
    full = f"{profile.get('firstName') or ''} {profile.get('lastName') or ''}".strip()
    return str(profile.get("displayName") or full or profile.get("login") or user.get("id", ""))


def _person(user: dict[str, Any]) -> dict[str, str]:
    return {"name": _name(user), "email": str(user["profile"]["email"])}


def _who(person: dict[str, str]) -> str:
    return f"{person['name']} <{person['email']}>"


class OktaVendor:
    """Runs okta.* actions with the credential that arrives with each call."""

    def __init__(self, session: VendorSession | None = None, *, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        self.manifest = manifest()
        self.session = session or VendorSession()
        self.page_size = page_size
        self.keys = KeyRecords()
        self._reads: dict[str, Read] = {"get_user": self.get_user, "list_groups": self.list_groups,
                                        "list_apps": self.list_apps}
        self._writes: dict[str, Write] = {"reset_password": self.reset_password, "unlock_user": self.unlock_user,
                                          "reset_factors": self.reset_factors,
                                          "add_user_to_group": self.add_user_to_group,
                                          "remove_user_from_group": self.remove_user_from_group}

    async def close(self) -> None:
        await self.session.close()

    async def invoke(self, ctx: CallContext) -> ActionResult:
        self._check_service_credential(ctx)
        client = self._client(ctx)
        if ctx.action in self._reads:
            return await self._reads[ctx.action](ctx, client)
        return await self._write(ctx, client, self._writes[ctx.action])

    # --- call context ----------------------------------------------------------------------------
    def _client(self, ctx: CallContext) -> OktaClient:
        base_url = ctx.instance.base_url.strip()
        if not base_url:
            raise VendorValidationError("the tenant's Okta base URL is not configured",
                                        field_errors={"instance.base_url": "the Okta org URL is required"})
        service = ctx.credential.kind == connector_pb2.CREDENTIAL_KIND_SERVICE
        scheme = ctx.credential.scheme or ("SSWS" if service else "Bearer")
        if scheme not in SCHEMES:
            raise VendorValidationError(f"unsupported authorization scheme {scheme!r}",
                                        field_errors={"credential.scheme": "Bearer (OAuth) or SSWS (API token)"})
        reserve = min(DEADLINE_RESERVE_S, ctx.timeout_s / 10)
        return OktaClient(self.session, base_url, scheme=scheme, token=ctx.credential.token,
                          deadline=time.monotonic() + ctx.timeout_s - reserve, page_size=self.page_size)

    @staticmethod
    def _email(ctx: CallContext) -> str:
        """The `user` argument as an email ("me" is the requester; the registry has resolved names)."""
        value = str(ctx.arguments.get("user") or "me").strip()
        if value.casefold() == "me":
            if ctx.principal is None:
                raise VendorValidationError('"me" needs the requester\'s principal',
                                            field_errors={"arguments.user": "no requester to resolve me"})
            return ctx.principal.user
        if not _EMAIL.match(value):
            raise VendorValidationError(f"{value!r} is not an email",
                                        field_errors={"arguments.user": 'must be "me" or an email'})
        return value

    def _check_service_credential(self, ctx: CallContext) -> None:
        """The service credential runs only the self-service actions, and only on the requester themselves."""
        if ctx.credential.kind != connector_pb2.CREDENTIAL_KIND_SERVICE:
            return
        meta = {"rule": "service_credential_self_service", "action": ctx.action}
        if ctx.action not in SELF_SERVICE_ACTIONS:
            raise ServiceCredentialRefused(f"the service credential may not run okta.{ctx.action}", metadata=meta)
        if ctx.principal is None or self._email(ctx).casefold() != ctx.principal.user.casefold():
            raise ServiceCredentialRefused(f"the service credential runs okta.{ctx.action} only on the requester",
                                           metadata=meta)

    async def _write(self, ctx: CallContext, client: OktaClient, action: Write) -> ActionResult:
        """Runs a write once per idempotency key: a done key replays its result; a key whose earlier answer
        was lost lets the action compare the state that write saw with the state now."""
        principal = ctx.principal
        tenant = principal.tenant if principal else ""
        fingerprint = hashlib.sha256(json.dumps(
            [ctx.action, ctx.arguments, principal.user if principal else "", ctx.instance.base_url],
            sort_keys=True, default=str).encode()).hexdigest()
        attempt = self.keys.begin((tenant, ctx.instance.base_url, ctx.idempotency_key), fingerprint)
        if attempt.result is not None:
            return replace(attempt.result, replayed=True)
        try:
            outcome = await action(ctx, client, attempt)
        except BaseException as err:
            self.keys.release(attempt, err)
            raise
        self.keys.complete(attempt, replace(outcome, replayed=False))
        return outcome

    # --- reads -----------------------------------------------------------------------------------
    async def get_user(self, ctx: CallContext, client: OktaClient) -> ActionResult:
        user = await client.user_by_email(self._email(ctx))
        profile = user["profile"]
        manager = await self._manager(client, profile)
        result = {"id": user["id"], "email": profile["email"], "name": _name(user), "status": user["status"],
                  "title": profile.get("title"), "department": profile.get("department"), "manager": manager}
        role = ", ".join(str(x) for x in (result["title"], result["department"]) if x) or "no title on file"
        boss = f"reports to {_who(manager)}" if manager else "no manager on file"
        return ActionResult(result, f"{_who(_person(user))}: {role}; Okta account {user['status']}; {boss}.")

    @staticmethod
    async def _manager(client: OktaClient, profile: dict[str, Any]) -> dict[str, str] | None:
        """The manager from profile.managerId (a user id), else profile.manager (a login, or a display name
        that names exactly one user)."""
        manager_id, manager = profile.get("managerId"), profile.get("manager")
        try:
            if manager_id:
                return _person(await client.get_user(str(manager_id)))
            if manager and "@" in str(manager):
                return _person(await client.get_user(str(manager)))
            if manager:
                found = await client.search_users(f"profile.displayName eq {scim_string(str(manager))}")
                return _person(found[0]) if len(found) == 1 else None
        except VendorNotFound:
            return None
        return None

    async def list_groups(self, ctx: CallContext, client: OktaClient) -> ActionResult:
        user = await client.user_by_email(self._email(ctx))
        groups = [{"id": g["id"], "name": g["profile"]["name"], "description": g["profile"].get("description")}
                  for g in await client.user_groups(user["id"])]
        person = _person(user)
        names = ", ".join(g["name"] for g in groups) or "none"
        return ActionResult({"user": person, "groups": groups, "total": len(groups)},
                            f"{person['name']} is in {len(groups)} Okta group(s): {names}.")

    async def list_apps(self, ctx: CallContext, client: OktaClient) -> ActionResult:
        user = await client.user_by_email(self._email(ctx))
        links = sorted((link for link in await client.app_links(user["id"]) if not link.get("hidden")),
                       key=lambda link: (link.get("sortOrder", 0), link.get("label", "")))
        apps = [{"id": link["appInstanceId"], "label": link["label"], "url": link["linkUrl"]} for link in links]
        person = _person(user)
        labels = ", ".join(a["label"] for a in apps) or "none"
        return ActionResult({"user": person, "apps": apps, "total": len(apps)},
                            f"{person['name']} has {len(apps)} Okta app(s): {labels}.")

    # --- writes ----------------------------------------------------------------------------------
    async def reset_password(self, ctx: CallContext, client: OktaClient, attempt: Attempt) -> ActionResult:
        """Okta emails a reset link (a second call would email again): a retry whose first attempt already
        moved the user to RECOVERY sends nothing."""
        user = await client.user_by_email(self._email(ctx))
        person = _person(user)
        result = {"user": person, "status": "RECOVERY", "email_sent_to": person["email"]}
        summary = (f"Okta emailed a password reset link to {person['email']}; {person['name']}'s account is in "
                   "RECOVERY until a new password is set.")
        seen = attempt.observed
        if attempt.uncertain and seen and seen["status"] != "RECOVERY" and user["status"] == "RECOVERY":
            return ActionResult(result, summary, replayed=True)
        attempt.sending({"status": user["status"]})
        await client.reset_password(user["id"], send_email=True)
        return ActionResult(result, summary)

    async def unlock_user(self, ctx: CallContext, client: OktaClient, attempt: Attempt) -> ActionResult:
        """Idempotent by state: a retry whose first attempt already unlocked the user reports that unlock."""
        user = await client.user_by_email(self._email(ctx))
        person = _person(user)
        seen = attempt.observed
        if attempt.uncertain and seen and seen["status"] == "LOCKED_OUT" and user["status"] != "LOCKED_OUT":
            result = {"user": person, "previous_status": "LOCKED_OUT", "status": user["status"]}
            return ActionResult(result, f"Unlocked {person['name']}'s Okta account (LOCKED_OUT → {user['status']}).",
                                replayed=True)
        attempt.sending({"status": user["status"]})
        await client.unlock(user["id"])
        result = {"user": person, "previous_status": user["status"], "status": "ACTIVE"}
        return ActionResult(result, f"Unlocked {person['name']}'s Okta account ({user['status']} → ACTIVE).")

    async def reset_factors(self, ctx: CallContext, client: OktaClient, attempt: Attempt) -> ActionResult:
        """Idempotent by state: resetting again finds no enrolled factors to remove."""
        user = await client.user_by_email(self._email(ctx))
        person = _person(user)
        attempt.sending({"status": user["status"]})
        await client.reset_factors(user["id"])
        return ActionResult({"user": person, "status": user["status"]},
                            f"Removed every MFA factor of {person['name']}; they enroll again at their next sign-in "
                            f"(account {user['status']}).")

    async def add_user_to_group(self, ctx: CallContext, client: OktaClient, attempt: Attempt) -> ActionResult:
        return await self._membership(ctx, client, attempt, member=True)

    async def remove_user_from_group(self, ctx: CallContext, client: OktaClient, attempt: Attempt) -> ActionResult:
        return await self._membership(ctx, client, attempt, member=False)

    async def _membership(self, ctx: CallContext, client: OktaClient, attempt: Attempt, *,
                          member: bool) -> ActionResult:
        """PUT/DELETE membership is idempotent by nature; `changed` compares with the membership the first
        attempt with this key saw, so a retry after a lost answer still reports the change it made."""
        group = await client.group_named(str(ctx.arguments["group"]))
        if group.get("type", "OKTA_GROUP") != "OKTA_GROUP":
            raise VendorValidationError(
                f"Okta manages the membership of {group['profile']['name']} ({group['type']}) itself",
                field_errors={"arguments.group": "only OKTA_GROUP groups can be changed"})
        user = await client.user_by_email(self._email(ctx))
        was_member = any(g["id"] == group["id"] for g in await client.user_groups(user["id"]))
        attempt.sending({"member": was_member})
        if member:
            await client.add_to_group(group["id"], user["id"])
        else:
            await client.remove_from_group(group["id"], user["id"])
        changed = bool(attempt.observed and attempt.observed["member"] != member)
        person = _person(user)
        name = group["profile"]["name"]
        result = {"user": person, "group": {"id": group["id"], "name": name}, "member": member, "changed": changed}
        verb = ("Added", "to") if member else ("Removed", "from")
        summary = (f"{verb[0]} {person['name']} {verb[1]} the Okta group {name}." if changed else
                   f"{person['name']} was {'already' if member else 'not'} in the Okta group {name}; nothing changed.")
        return ActionResult(result, summary, replayed=attempt.uncertain)
