"""The Salesforce connector's actions: the catalog's salesforce.* tools, run as the requester through the REST API."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from connectors.common.http import DEFAULT_TIMEOUT_S, VendorSession, VendorUnavailable, VendorValidationError
from connectors.common.service import ActionResult, CallContext

from . import manifest
from .client import (
    DEFAULT_API_VERSION,
    IDEMPOTENCY_FIELD,
    Connection,
    SalesforceClient,
    is_record_id,
    iso_date,
    pick_one,
    soql_number,
    soql_select,
    soql_string,
    without_attributes,
)

_OPPORTUNITY_FIELDS = ("Id, Name, AccountId, Account.Name, Amount, StageName, CloseDate, NextStep, Probability, "
                       "IsClosed, IsWon, Owner.Name, Owner.Email")
_OPPORTUNITY_SCALARS = ["Id", "Name", "Amount", "StageName", "CloseDate", "NextStep", "Probability", "IsClosed",
                        "IsWon"]
_CASE_FIELDS = "Id, CaseNumber, Subject, Status, Priority, AccountId, Account.Name, Owner.Name, Owner.Email"
_TASK_FIELDS = "Id, Subject, Status, ActivityDate, WhatId, What.Name, What.Type, Owner.Name, Owner.Email"
# The opportunity arguments update_opportunity may change, with their API fields.
_OPPORTUNITY_CHANGES = {"stage": "StageName", "amount": "Amount", "close_date": "CloseDate", "next_step": "NextStep"}
_OPPORTUNITY_ARGUMENTS = {api: f"arguments.{arg}" for arg, api in _OPPORTUNITY_CHANGES.items()}
_CASE_ARGUMENTS = {"Subject": "arguments.subject", "Description": "arguments.description",
                   "Priority": "arguments.priority", "AccountId": "arguments.account"}
_TASK_ARGUMENTS = {"Subject": "arguments.subject", "ActivityDate": "arguments.due_date",
                   "WhatId": "arguments.related_to"}
_VERSION = re.compile(r"^v?\d{2,3}\.0$")
SHOWN_IN_SUMMARY = 5

Action = Callable[[Connection, CallContext], Awaitable[ActionResult]]


def _person(owner: dict[str, Any] | None) -> dict[str, str]:
    owner = owner or {}
    return {"name": str(owner.get("Name") or "unknown"), "email": str(owner.get("Email") or "")}


def _money(amount: float | None) -> str:
    return "no amount" if amount is None else f"{amount:,.0f}"


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _listing(names: list[str], total: int) -> str:
    shown = "; ".join(names[:SHOWN_IN_SUMMARY])
    more = total - min(len(names), SHOWN_IN_SUMMARY)
    return shown + (f"; and {more} more" if more > 0 else "")


class SalesforceVendor:
    """The Vendor the generic ConnectorService serves for Salesforce."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.session = VendorSession(timeout_s)
        self.client = SalesforceClient(self.session)
        self.manifest: dict[str, Any] = {"connector": manifest.CONNECTOR, "version": manifest.VERSION,
                                         "display_name": "Salesforce", "actions": manifest.ACTIONS}
        self._actions: dict[str, Action] = {
            "find_account": self.find_account, "list_opportunities": self.list_opportunities,
            "get_opportunity": self.get_opportunity, "update_opportunity": self.update_opportunity,
            "create_case": self.create_case, "create_task": self.create_task, "query": self.query,
        }

    async def invoke(self, ctx: CallContext) -> ActionResult:
        return await self._actions[ctx.action](self._connection(ctx), ctx)

    async def close(self) -> None:
        await self.session.close()

    @staticmethod
    def _connection(ctx: CallContext) -> Connection:
        """The org to call: instance URL and API version from the tenant's settings, the requester's token."""
        instance_url = ctx.instance.instance_url or ctx.instance.base_url
        version = ctx.instance.api_version or DEFAULT_API_VERSION
        problems: dict[str, str] = {}
        if not instance_url.startswith(("https://", "http://")):
            problems["instance.instance_url"] = "the tenant's Salesforce instance URL is not configured"
        if not _VERSION.match(version):
            problems["instance.api_version"] = f"{version!r} is not a Salesforce API version such as v60.0"
        if ctx.credential.scheme not in ("", "Bearer"):
            problems["credential.scheme"] = "Salesforce accepts OAuth bearer tokens only"
        if problems:
            raise VendorValidationError("; ".join(problems.values()), field_errors=problems)
        return Connection.open(instance_url, version, ctx.credential.token, ctx.timeout_s)

    # --- shaping ------------------------------------------------------------------------------------------------
    @staticmethod
    def _opportunity(row: dict[str, Any]) -> dict[str, Any]:
        account = row.get("Account") or {}
        return {"id": row["Id"], "name": row["Name"], "account": account.get("Name"), "amount": row.get("Amount"),
                "stage": row["StageName"], "close_date": row["CloseDate"], "owner": _person(row.get("Owner"))}

    def _opportunity_detail(self, conn: Connection, row: dict[str, Any]) -> dict[str, Any]:
        return {**self._opportunity(row), "next_step": row.get("NextStep"), "probability": row.get("Probability"),
                "is_closed": bool(row.get("IsClosed")), "is_won": bool(row.get("IsWon")),
                "url": f"{conn.instance_url}/lightning/r/Opportunity/{row['Id']}/view"}

    # --- READ actions -------------------------------------------------------------------------------------------
    async def find_account(self, conn: Connection, ctx: CallContext) -> ActionResult:
        name = ctx.arguments["name"]
        found = await self.client.find_by_words(conn, "Account", name, "Id, Name, Industry, Owner.Name, Owner.Email")
        accounts = [{"id": r["Id"], "name": r["Name"], "industry": r.get("Industry"), "owner": _person(r.get("Owner"))}
                    for r in found.records]
        if not accounts:
            summary = f"No account you can see matches {name!r}."
        else:
            listed = _listing([f"{a['name']} ({a['industry'] or 'no industry'}, owner {a['owner']['name']})"
                               for a in accounts], found.total)
            summary = f"{_plural(found.total, 'account matches', 'accounts match')} {name!r}: {listed}."
        return ActionResult({"accounts": accounts, "total": found.total}, summary)

    async def list_opportunities(self, conn: Connection, ctx: CallContext) -> ActionResult:
        args = ctx.arguments
        owner = await self.client.person(conn, args["owner"])
        where = [f"OwnerId = {soql_string(owner.id)}"]
        if "stage" in args:
            where.append(f"StageName = {soql_string(args['stage'])}")
        if "min_amount" in args:
            where.append(f"Amount >= {soql_number(args['min_amount'])}")
        if "account" in args:
            account = await self.client.resolve(conn, "Account", args["account"], "Id, Name")
            where.append(f"AccountId = {soql_string(account['Id'])}")
        if "closing_before" in args:
            where.append(f"CloseDate < {iso_date(args['closing_before'], 'arguments.closing_before')}")
        if not args["include_closed"]:
            where.append("IsClosed = false")
        found = await self.client.query(conn, soql_select(_OPPORTUNITY_FIELDS, "Opportunity", where,
                                                          "CloseDate ASC, Name ASC"))
        opportunities = [self._opportunity(r) for r in found.records]
        kind = "opportunity" if args["include_closed"] else "open opportunity"
        summary = f"{owner.name} has {_plural(found.total, kind, kind.replace('opportunity', 'opportunities'))}"
        if opportunities:
            summary += ": " + _listing([f"{o['name']} ({_money(o['amount'])}, {o['stage']}, closes {o['close_date']})"
                                        for o in opportunities], found.total)
        return ActionResult({"opportunities": opportunities, "total": found.total}, summary + ".")

    async def get_opportunity(self, conn: Connection, ctx: CallContext) -> ActionResult:
        row = await self.client.resolve(conn, "Opportunity", ctx.arguments["opportunity"], _OPPORTUNITY_FIELDS)
        detail = self._opportunity_detail(conn, row)
        return ActionResult(detail, f"{detail['name']} ({detail['account'] or 'no account'}): "
                                    f"{_money(detail['amount'])}, {detail['stage']}, closes {detail['close_date']}, "
                                    f"owner {detail['owner']['name']}.")

    async def query(self, conn: Connection, ctx: CallContext) -> ActionResult:
        try:
            found = await self.client.query(conn, ctx.arguments["soql"])
        except VendorValidationError as err:  # MALFORMED_QUERY, INVALID_FIELD, INVALID_TYPE: the query is the argument
            raise VendorValidationError(err.message, status=err.status, vendor_code=err.vendor_code,
                                        field_errors={"arguments.soql": err.message}) from err
        records = [without_attributes(r) for r in found.records]
        shown = "" if len(records) == found.total else f" (the first {len(records)} returned)"
        return ActionResult({"records": records, "total": found.total},
                            f"The query matched {_plural(found.total, 'row', 'rows')}{shown}.")

    # --- WRITE actions ------------------------------------------------------------------------------------------
    async def update_opportunity(self, conn: Connection, ctx: CallContext) -> ActionResult:
        """Updates by Id are idempotent by nature: a repeat finds the values already set and changes nothing."""
        args = ctx.arguments
        wanted = {arg: args[arg] for arg in _OPPORTUNITY_CHANGES if arg in args}
        if "close_date" in wanted:
            wanted["close_date"] = iso_date(wanted["close_date"], "arguments.close_date")
        row = await self.client.resolve(conn, "Opportunity", args["opportunity"], _OPPORTUNITY_FIELDS)
        before = self._opportunity_detail(conn, row)
        changes = [{"field": arg, "from": before[arg], "to": value} for arg, value in wanted.items()
                   if before[arg] != value]
        if not changes:
            return ActionResult({**before, "changes": []}, f"{before['name']} already has those values; nothing "
                                                           "changed.")
        await self.client.update(conn, "Opportunity", row["Id"], {_OPPORTUNITY_CHANGES[c["field"]]: c["to"]
                                                                 for c in changes}, _OPPORTUNITY_ARGUMENTS)
        after = await self.client.get_record(conn, "Opportunity", row["Id"], _OPPORTUNITY_SCALARS)
        detail = self._opportunity_detail(conn, {**row, **after})
        said = ", ".join(f"{c['field'].replace('_', ' ')} {c['from']} → {c['to']}" for c in changes)
        return ActionResult({**detail, "changes": changes}, f"Updated {detail['name']}: {said}.")

    async def _by_key(self, conn: Connection, sobject: str, select: str, key: str) -> dict[str, Any] | None:
        where = [f"{IDEMPOTENCY_FIELD} = {soql_string(key)}"]
        found = await self.client.query(conn, soql_select(select, sobject, where, limit=1))
        return found.records[0] if found.records else None

    async def _created(self, conn: Connection, sobject: str, select: str, key: str) -> dict[str, Any]:
        row = await self._by_key(conn, sobject, select, key)
        if row is None:
            raise VendorUnavailable(f"the {sobject} written with idempotency key {key!r} cannot be read back")
        return row

    async def create_case(self, conn: Connection, ctx: CallContext) -> ActionResult:
        """Upserts by the idempotency key (an external ID), after looking it up: a retry returns the first case."""
        args, key = ctx.arguments, ctx.idempotency_key
        row = await self._by_key(conn, "Case", _CASE_FIELDS, key)
        replayed = row is not None
        if row is None:
            account = await self.client.resolve(conn, "Account", args["account"], "Id, Name")
            values = {"AccountId": account["Id"], "Subject": args["subject"]}
            values.update({api: args[arg] for arg, api in (("description", "Description"), ("priority", "Priority"))
                           if arg in args})
            _, created = await self.client.upsert(conn, "Case", IDEMPOTENCY_FIELD, key, values, _CASE_ARGUMENTS)
            replayed = not created
            row = await self._created(conn, "Case", _CASE_FIELDS, key)
        account_row = row.get("Account") or {}
        result = {"id": row["Id"], "case_number": row["CaseNumber"], "subject": row["Subject"],
                  "status": row["Status"], "priority": row.get("Priority"), "account": account_row.get("Name", ""),
                  "account_id": row["AccountId"], "owner": _person(row.get("Owner")),
                  "url": f"{conn.instance_url}/lightning/r/Case/{row['Id']}/view"}
        return ActionResult(result, f"{'Case already open' if replayed else 'Opened case'} {result['case_number']} "
                                    f"on {result['account']}: {result['subject']} ({result['priority']} priority, "
                                    f"{result['status']}).", replayed=replayed)

    async def _related(self, conn: Connection, reference: str) -> tuple[str, dict[str, Any]]:
        """The account or opportunity a task is about: by Id, or by name across both (one match only)."""
        for sobject in ("Account", "Opportunity"):
            if is_record_id(reference, sobject):
                return sobject, await self.client.resolve(conn, sobject, reference, "Id, Name")
        accounts, opportunities = await asyncio.gather(
            self.client.find_by_words(conn, "Account", reference, "Id, Name"),
            self.client.find_by_words(conn, "Opportunity", reference, "Id, Name"))
        candidates = [("Account", r) for r in accounts.records] + [("Opportunity", r) for r in opportunities.records]
        return pick_one(reference, "account or opportunity", candidates)

    async def create_task(self, conn: Connection, ctx: CallContext) -> ActionResult:
        """Like create_case: looked up, then upserted, by the idempotency key."""
        args, key = ctx.arguments, ctx.idempotency_key
        row = await self._by_key(conn, "Task", _TASK_FIELDS, key)
        replayed = row is not None
        if row is None:
            values = {"Subject": args["subject"]}
            if "due_date" in args:
                values["ActivityDate"] = iso_date(args["due_date"], "arguments.due_date")
            _, target = await self._related(conn, args["related_to"])
            values["WhatId"] = target["Id"]
            _, created = await self.client.upsert(conn, "Task", IDEMPOTENCY_FIELD, key, values, _TASK_ARGUMENTS)
            replayed = not created
            row = await self._created(conn, "Task", _TASK_FIELDS, key)
        what = row.get("What") or {}
        result = {"id": row["Id"], "subject": row["Subject"], "status": row["Status"],
                  "due_date": row.get("ActivityDate"),
                  "related_to": {"id": row["WhatId"], "name": what.get("Name", ""), "type": what.get("Type", "")},
                  "owner": _person(row.get("Owner"))}
        due = f", due {result['due_date']}" if result["due_date"] else ""
        return ActionResult(result, f"{'Task already created' if replayed else 'Created task'} "
                                    f"{result['subject']!r} on {what.get('Type', '')} {what.get('Name', '')} for "
                                    f"{result['owner']['name']}{due}.", replayed=replayed)
