"""ServiceNow connector actions: the catalog's servicenow.* tools on the Table and Service Catalog APIs."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from connectors.common.http import (
    DEFAULT_TIMEOUT_S,
    AmbiguousRecord,
    VendorDenied,
    VendorError,
    VendorNotFound,
    VendorSession,
    VendorValidationError,
)
from connectors.common.matching import words_match
from connectors.common.service import ActionResult, CallContext

from . import manifest as manifest_module
from .client import ME, PAGE_SIZE, ServiceNowClient, in_list, literal, ref

log = logging.getLogger("agentmesh.connector.servicenow")

DISPLAY_NAME = "ServiceNow"
INCIDENT_STATES = {"1": "New", "2": "In Progress", "3": "On Hold", "6": "Resolved", "7": "Closed", "8": "Canceled"}
STATE_VALUES = {label: value for value, label in INCIDENT_STATES.items()}
RITM_STATES = {"-5": "Pending", "1": "Open", "2": "Work in Progress", "3": "Closed Complete",
               "4": "Closed Incomplete", "7": "Closed Skipped"}
STAGES = {"waiting_for_approval": "Waiting for Approval", "request_approved": "Request Approved",
          "fulfillment": "Fulfillment", "delivery": "Delivery", "complete": "Completed",
          "request_cancelled": "Request Cancelled"}
URGENCY_LABELS = {1: "high", 2: "medium", 3: "low"}
# list_incidents' state filter as encoded queries (Resolved 6 stays active until Closed 7, so states, not active).
STATE_FILTERS = {"open": "state!=6^state!=7^state!=8", "resolved": "stateIN6,7", "all": ""}
DEFAULT_CLOSE_CODE = "Solved (Permanently)"
# The catalog variables every orderable item carries once a customer adds the agentmesh variable set.
KEY_VARIABLE = "agentmesh_idempotency_key"
JUSTIFICATION_VARIABLE = "justification"
MAX_APPROVALS = 100
INCIDENT_FIELDS = ("sys_id,number,short_description,description,state,urgency,category,caller_id,assigned_to,"
                   "opened_at,close_code,close_notes")
JOURNAL_FIELDS = "sys_id,element_id,value,sys_created_on,sys_created_by"
_MARKER = re.compile(r"\s*\[agentmesh ref [0-9a-f]{32}\]\s*$")


def key_ref(idempotency_key: str) -> str:
    """What a created record carries to say which call made it: a digest of the idempotency key."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


def with_marker(text: str, key_hex: str) -> str:
    """A journal entry carrying the call's key on its last line, so a retry finds it in sys_journal_field."""
    line = f"[agentmesh ref {key_hex}]"
    return f"{text}\n\n{line}" if text else line


def without_marker(text: str) -> str:
    return _MARKER.sub("", text)


def iso(stamp: str) -> str:
    """Table API date-time (UTC `YYYY-MM-DD HH:MM:SS`) → ISO 8601."""
    return stamp.replace(" ", "T") + "Z" if stamp else ""


def _urgency(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 3


def _or_none(value: Any) -> str | None:
    return str(value) if value else None


class ServiceNowVendor:
    """The Vendor the generic ConnectorService serves: one method per catalog action."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, page_size: int = PAGE_SIZE) -> None:
        self.manifest: dict[str, Any] = {"connector": manifest_module.CONNECTOR, "version": manifest_module.VERSION,
                                         "display_name": DISPLAY_NAME, "actions": manifest_module.ACTIONS}
        self.timeout_s = timeout_s
        self.page_size = page_size
        self.session = VendorSession(timeout_s)

    async def invoke(self, ctx: CallContext) -> ActionResult:
        if not ctx.instance.base_url:
            raise VendorValidationError("the tenant's ServiceNow registration has no base URL",
                                        field_errors={"instance.base_url": "required"})
        client = ServiceNowClient(self.session, ctx.instance.base_url, ctx.credential.token,
                                  scheme=ctx.credential.scheme, timeout_s=self.timeout_s, page_size=self.page_size)
        run = _Run(client, ctx)
        actions: dict[str, Callable[[], Awaitable[ActionResult]]] = {
            "create_incident": run.create_incident, "get_incident": run.get_incident,
            "list_incidents": run.list_incidents, "add_comment": run.add_comment,
            "update_incident": run.update_incident, "request_catalog_item": run.request_catalog_item,
            "get_request": run.get_request, "list_approvals": run.list_approvals,
            "approve": lambda: run.decide("approved"), "reject": lambda: run.decide("rejected"),
        }
        log.debug("servicenow action %s", ctx.action)
        return await actions[ctx.action]()

    async def close(self) -> None:
        await self.session.close()


class _Run:
    """One action call: the client, the call context and the people met so far (sys_id → user)."""

    def __init__(self, client: ServiceNowClient, ctx: CallContext) -> None:
        self.client = client
        self.ctx = ctx
        self.args = ctx.arguments
        self.people: dict[str, dict[str, Any]] = {}
        self._me: dict[str, Any] | None = None

    # --- people ---------------------------------------------------------------------------------------
    async def me(self) -> dict[str, Any]:
        if self._me is None:
            self._me = await self.client.me()
            self.people[self._me["sys_id"]] = self._me
        return self._me

    async def user_id(self, person: str) -> str:
        """A person argument (an email, or "me") → the sys_id of that ServiceNow user."""
        if person == "me":
            return str((await self.me())["sys_id"])
        user = await self.client.user_by_email(person)
        self.people[user["sys_id"]] = user
        return str(user["sys_id"])

    def _is_requester(self, person: str) -> bool:
        principal = self.ctx.principal
        return person == "me" or (principal is not None and person.lower() == principal.user.lower())

    async def load_people(self, sys_ids: Iterable[str] = (), user_names: Iterable[str] = ()) -> None:
        missing_ids = [i for i in sys_ids if i and i not in self.people]
        known_names = {str(u.get("user_name")) for u in self.people.values()}
        missing_names = [n for n in user_names if n and n not in known_names]
        for user in await self.client.users(missing_ids, missing_names):
            self.people[user["sys_id"]] = user

    def person(self, sys_id: str) -> dict[str, str] | None:
        user = self.people.get(sys_id)
        return {"name": str(user["name"]), "email": str(user["email"])} if user else None

    def author(self, user_name: str) -> dict[str, str]:
        for user in self.people.values():
            if user.get("user_name") == user_name:
                return {"name": str(user["name"]), "email": str(user["email"])}
        return {"name": user_name, "email": ""}

    # --- incidents ---------------------------------------------------------------------------------------
    async def incident(self, number: str) -> dict[str, Any]:
        record = await self.client.first("incident", f"number={literal(number, 'number')}")
        if record is None:
            raise VendorNotFound(f"No incident {number} in ServiceNow, or you may not see it",
                                 metadata={"number": number})
        return record

    def incident_view(self, record: dict[str, Any]) -> dict[str, Any]:
        sys_id = str(record["sys_id"])
        return {
            "number": record["number"], "sys_id": sys_id, "short_description": record["short_description"],
            "state": INCIDENT_STATES.get(str(record["state"]), str(record["state"])),
            "urgency": _urgency(record["urgency"]), "category": _or_none(record.get("category")),
            "caller": self.person(ref(record["caller_id"])) or {"name": "", "email": ""},
            "assigned_to": self.person(ref(record.get("assigned_to"))),
            "opened_at": iso(str(record.get("opened_at", ""))),
            "url": f"{self.client.base_url}/incident.do?sys_id={sys_id}",
        }

    def incident_detail(self, record: dict[str, Any]) -> dict[str, Any]:
        return {**self.incident_view(record), "description": _or_none(record.get("description")),
                "close_code": _or_none(record.get("close_code")), "close_notes": _or_none(record.get("close_notes"))}

    async def journal(self, sys_id: str, query: str = "") -> list[dict[str, Any]]:
        """An incident's customer-visible comments (sys_journal_field), oldest first."""
        page = await self.client.query(
            "sys_journal_field", f"element_id={sys_id}^element=comments{query}^ORDERBYsys_created_on",
            fields=JOURNAL_FIELDS)
        return page.records

    def comment(self, entry: dict[str, Any]) -> dict[str, Any]:
        return {"author": self.author(str(entry["sys_created_by"])), "text": without_marker(str(entry["value"])),
                "created_at": iso(str(entry["sys_created_on"]))}

    async def comments(self, sys_id: str, query: str = "") -> list[dict[str, Any]]:
        entries = await self.journal(sys_id, query)
        await self.load_people(user_names=[str(j["sys_created_by"]) for j in entries])
        return [self.comment(j) for j in entries]

    async def create_incident(self) -> ActionResult:
        key_hex = key_ref(self.ctx.idempotency_key)
        record = await self.client.first("incident", f"correlation_id={key_hex}")
        replayed = record is not None
        if record is None:
            body: dict[str, Any] = {"short_description": self.args["short_description"],
                                    "caller_id": await self.user_id(self.args["caller"]),
                                    "correlation_id": key_hex, "correlation_display": "agentmesh"}
            if self.args.get("description"):
                body["description"] = self.args["description"]
            if "urgency" in self.args:
                body["urgency"] = str(self.args["urgency"])
            if self.args.get("category"):
                body["category"] = self.args["category"]
            record = await self.client.create("incident", body)
        await self.load_people([ref(record["caller_id"])])
        view = self.incident_view(record)
        result = {k: view[k] for k in ("number", "sys_id", "short_description", "state", "urgency", "category",
                                       "caller", "url")}
        summary = (f"Opened {view['number']} for {view['caller']['name']}: {view['short_description']} "
                   f"({view['state']}, {URGENCY_LABELS.get(view['urgency'], view['urgency'])} urgency)")
        return ActionResult(result, summary, replayed=replayed)

    async def get_incident(self) -> ActionResult:
        record = await self.incident(self.args["number"])
        entries = await self.journal(str(record["sys_id"]))
        await self.load_people([ref(record["caller_id"]), ref(record.get("assigned_to"))],
                               [str(j["sys_created_by"]) for j in entries])
        result = {**self.incident_detail(record), "comments": [self.comment(j) for j in entries]}
        assignee = result["assigned_to"]["name"] if result["assigned_to"] else "unassigned"
        summary = (f"{result['number']} ({result['state']}, {assignee}): {result['short_description']}; "
                   f"{len(result['comments'])} comment(s)")
        return ActionResult(result, summary)

    async def list_incidents(self) -> ActionResult:
        caller = self.args["caller"]
        who = ME if self._is_requester(caller) else await self.user_id(caller)
        terms = [f"caller_id={who}", STATE_FILTERS[self.args["state"]], "ORDERBYDESCopened_at", "ORDERBYDESCnumber"]
        page = await self.client.query("incident", "^".join(t for t in terms if t), fields=INCIDENT_FIELDS,
                                       limit=self.args["limit"])
        await self.load_people([ref(r["caller_id"]) for r in page.records]
                               + [ref(r.get("assigned_to")) for r in page.records])
        incidents = [self.incident_view(r) for r in page.records]
        numbers = ", ".join(i["number"] for i in incidents) or "none"
        summary = f"{page.total} {self.args['state']} incident(s), showing {len(incidents)}: {numbers}"
        return ActionResult({"incidents": incidents, "total": page.total}, summary)

    async def add_comment(self) -> ActionResult:
        record = await self.incident(self.args["number"])
        sys_id, key_hex = str(record["sys_id"]), key_ref(self.ctx.idempotency_key)
        recorded = await self.comments(sys_id, f"^valueLIKE{key_hex}")
        replayed = bool(recorded)
        if not recorded:
            record = await self.client.update("incident", sys_id,
                                              {"comments": with_marker(self.args["comment"], key_hex)})
            recorded = await self.comments(sys_id, f"^valueLIKE{key_hex}")
            if not recorded:
                raise VendorDenied(f"ServiceNow did not record the comment on {record['number']}")
        view = self.incident_view(record)
        result = {k: view[k] for k in ("number", "sys_id", "short_description", "state")} | {"comment": recorded[0]}
        summary = f"Commented on {view['number']} as {recorded[0]['author']['name']}: {recorded[0]['text'][:80]}"
        return ActionResult(result, summary, replayed=replayed)

    async def update_incident(self) -> ActionResult:
        before = await self.incident(self.args["number"])
        patch: dict[str, str] = {}
        if "state" in self.args:
            patch["state"] = STATE_VALUES[self.args["state"]]
        if "urgency" in self.args:
            patch["urgency"] = str(self.args["urgency"])
        if "assigned_to" in self.args:
            patch["assigned_to"] = await self.user_id(self.args["assigned_to"])
        closing = self.args.get("state") in ("Resolved", "Closed")
        was_closed = str(before["state"]) in ("6", "7")
        if "close_code" in self.args or closing:
            if self.args.get("close_code"):
                patch["close_code"] = self.args["close_code"]
            elif was_closed and before.get("close_code"):
                patch["close_code"] = str(before["close_code"])
            else:
                patch["close_code"] = DEFAULT_CLOSE_CODE
        if "close_notes" in self.args or closing:
            if self.args.get("close_notes"):
                patch["close_notes"] = self.args["close_notes"]
            elif was_closed and before.get("close_notes"):
                patch["close_notes"] = str(before["close_notes"])
            else:
                me = await self.me()
                patch["close_notes"] = f"Resolved by {me['name']} ({me['email']}) through agentmesh."
        after = await self.client.update("incident", str(before["sys_id"]), patch)
        skipped = [name for name, value in patch.items() if ref(after.get(name)) != value]
        if skipped:
            applied = ", ".join(name for name in patch if name not in skipped) or "nothing"
            raise VendorDenied(f"ServiceNow did not apply {', '.join(skipped)} to {after['number']} (you may not "
                               f"change it); it applied {applied}", metadata={"fields": ",".join(skipped)})
        await self.load_people([ref(r.get(f)) for r in (before, after) for f in ("caller_id", "assigned_to")])
        old, new = self.incident_detail(before), self.incident_detail(after)
        changes = [{"field": name, "from": old[name], "to": new[name]}
                   for name in ("state", "urgency", "assigned_to", "close_code", "close_notes")
                   if old[name] != new[name]]
        described = "; ".join(f"{c['field']} → {_shown(c['to'])}" for c in changes) or "nothing changed"
        return ActionResult({**new, "changes": changes}, f"Updated {new['number']}: {described}")

    # --- catalog ------------------------------------------------------------------------------------------
    async def catalog_item(self, words: str) -> dict[str, Any]:
        """The active catalog item whose name holds every word; several → AmbiguousRecord, none → NotFound."""
        terms = [f"nameLIKE{literal(word, 'item')}" for word in words.split()]
        page = await self.client.query("sc_cat_item", "^".join(["active=true", *terms, "ORDERBYname"]),
                                       fields="sys_id,name", limit=25)
        found = [r for r in page.records if words_match(words, str(r["name"]))]
        if len(found) > 1:
            found = [r for r in found if str(r["name"]).lower() == words.strip().lower()] or found
        if not found:
            raise VendorNotFound(f"No catalog item matches {words!r}", metadata={"item": words})
        if len(found) > 1:
            names = "; ".join(str(r["name"]) for r in found)
            raise AmbiguousRecord(f"{words!r} matches several catalog items: {names}",
                                  metadata={"candidates": names})
        return found[0]

    async def ordered_with_key(self, key_hex: str) -> dict[str, Any] | None:
        """The requested item an earlier order with this key created (its variable holds the key), if any."""
        options = await self.client.query("sc_item_option", f"value={key_hex}", fields="sys_id", limit=5)
        if not options.records:
            return None
        links = await self.client.query(
            "sc_item_option_mtom", f"sc_item_optionIN{in_list(str(o['sys_id']) for o in options.records)}",
            fields="request_item", limit=1)
        if not links.records:
            return None
        return await self.client.get("sc_req_item", ref(links.records[0]["request_item"]))

    async def request_catalog_item(self) -> ActionResult:
        key_hex = key_ref(self.ctx.idempotency_key)
        ritm = await self.ordered_with_key(key_hex)
        replayed = ritm is not None
        if ritm is None:
            item = await self.catalog_item(self.args["item"])
            variables = {KEY_VARIABLE: key_hex}
            if self.args.get("justification"):
                variables[JUSTIFICATION_VARIABLE] = self.args["justification"]
            order = await self.client.order_now(str(item["sys_id"]), self.args["quantity"], variables)
            ritm = await self.client.first("sc_req_item", f"request={literal(str(order['request_id']), 'request')}")
            if ritm is None:
                raise VendorError(f"ServiceNow created {order['request_number']} without a requested item")
            request_number, item_name = str(order["request_number"]), str(item["name"])
        else:
            request, item = await asyncio.gather(self.client.get("sc_request", ref(ritm["request"])),
                                                 self.client.get("sc_cat_item", ref(ritm["cat_item"])))
            request_number, item_name = str(request["number"]), str(item["name"])
        await self.load_people([ref(ritm["requested_for"])])
        result = {
            "request_number": request_number, "number": ritm["number"], "item": item_name,
            "quantity": int(ritm.get("quantity") or 1),
            "requested_for": self.person(ref(ritm["requested_for"])) or {"name": "", "email": ""},
            "approval": ritm["approval"], "stage": STAGES.get(str(ritm["stage"]), str(ritm["stage"])),
        }
        summary = (f"Ordered {result['quantity']} x {item_name}: {request_number} / {result['number']} "
                   f"({result['stage']})")
        return ActionResult(result, summary, replayed=replayed)

    async def get_request(self) -> ActionResult:
        number = self.args["number"]
        ritm = await self.client.first("sc_req_item", f"number={literal(number, 'number')}")
        if ritm is None:
            raise VendorNotFound(f"No requested item {number} in ServiceNow, or you may not see it",
                                 metadata={"number": number})
        request, item, approvals = await asyncio.gather(
            self.client.get("sc_request", ref(ritm["request"])),
            self.client.get("sc_cat_item", ref(ritm["cat_item"])),
            self.client.query("sysapproval_approver", f"sysapproval={ritm['sys_id']}^ORDERBYsys_created_on",
                              fields="approver,state"))
        await self.load_people([ref(ritm["requested_for"])] + [ref(a["approver"]) for a in approvals.records])
        approvers = [{**(self.person(ref(a["approver"])) or {"name": "", "email": ""}), "state": a["state"]}
                     for a in approvals.records]
        result = {
            "number": ritm["number"], "request_number": request["number"], "item": item["name"],
            "quantity": int(ritm.get("quantity") or 1),
            "requested_for": self.person(ref(ritm["requested_for"])) or {"name": "", "email": ""},
            "state": RITM_STATES.get(str(ritm["state"]), str(ritm["state"])),
            "stage": STAGES.get(str(ritm["stage"]), str(ritm["stage"])), "approval": ritm["approval"],
            "approvers": approvers, "opened_at": iso(str(ritm.get("opened_at", ""))),
        }
        waiting = ", ".join(a["name"] for a in approvers if a["state"] == "requested")
        summary = (f"{result['number']} ({result['item']} for {result['requested_for']['name']}): {result['stage']}, "
                   f"approval {result['approval']}" + (f", waiting on {waiting}" if waiting else ""))
        return ActionResult(result, summary)

    # --- approvals ----------------------------------------------------------------------------------------
    async def approvals(self, state: str,
                        limit: int = MAX_APPROVALS) -> tuple[list[tuple[dict[str, Any], str]], int]:
        """The requester's approvals of requested items in a state, each joined with its item and requester (and
        the requester's sys_id beside it), and how many there are in all."""
        page = await self.client.query(
            "sysapproval_approver",
            f"approver={ME}^state={literal(state, 'state')}^source_table=sc_req_item^ORDERBYDESCsys_created_on",
            fields="sys_id,state,sysapproval,sys_created_on", limit=limit)
        task_ids = in_list(ref(a["sysapproval"]) for a in page.records)
        ritms: dict[str, dict[str, Any]] = {}
        if task_ids:
            found = await self.client.query("sc_req_item", f"sys_idIN{task_ids}",
                                            fields="sys_id,number,cat_item,requested_for,quantity,stage")
            ritms = {str(r["sys_id"]): r for r in found.records}
        item_ids = in_list(ref(r["cat_item"]) for r in ritms.values())
        names: dict[str, str] = {}
        if item_ids:
            items = await self.client.query("sc_cat_item", f"sys_idIN{item_ids}", fields="sys_id,name")
            names = {str(i["sys_id"]): str(i["name"]) for i in items.records}
        await self.load_people(ref(r["requested_for"]) for r in ritms.values())
        joined = []
        for approval in page.records:
            ritm = ritms.get(ref(approval["sysapproval"]))
            if ritm is None:
                continue
            joined.append(({
                "sys_id": approval["sys_id"], "number": ritm["number"], "item": names.get(ref(ritm["cat_item"]), ""),
                "quantity": int(ritm.get("quantity") or 1),
                "requested_for": self.person(ref(ritm["requested_for"])) or {"name": "", "email": ""},
                "state": approval["state"], "requested_at": iso(str(approval.get("sys_created_on", ""))),
            }, ref(ritm["requested_for"])))
        return joined, page.total

    async def list_approvals(self) -> ActionResult:
        joined, total = await self.approvals(self.args["state"])
        approvals = [approval for approval, _ in joined]
        listed = ", ".join(f"{a['number']} ({a['item']} for {a['requested_for']['name']})" for a in approvals)
        summary = f"{total} {self.args['state']} approval(s)" + (f": {listed}" if listed else "")
        return ActionResult({"approvals": approvals, "total": total}, summary)

    async def decide(self, target: str) -> ActionResult:
        """approve / reject: the one approval awaiting the requester that the arguments pick."""
        key_hex = key_ref(self.ctx.idempotency_key)
        done = await self.client.first(
            "sys_journal_field", f"name=sysapproval_approver^element=comments^valueLIKE{key_hex}",
            fields=JOURNAL_FIELDS)
        replayed = done is not None
        if done is not None:
            approval = await self.client.get("sysapproval_approver", str(done["element_id"]))
            comment = _or_none(without_marker(str(done["value"])))
        else:
            chosen = await self.pick()
            comment = self.args.get("comment")
            approval = await self.client.update("sysapproval_approver", str(chosen["sys_id"]),
                                                {"state": target, "comments": with_marker(comment or "", key_hex)})
        ritm = await self.client.get("sc_req_item", ref(approval["sysapproval"]))
        item = await self.client.get("sc_cat_item", ref(ritm["cat_item"]))
        await self.load_people([ref(ritm["requested_for"]), ref(approval["approver"])])
        result = {
            "number": ritm["number"], "item": item["name"],
            "requested_for": self.person(ref(ritm["requested_for"])) or {"name": "", "email": ""},
            "approver": self.person(ref(approval["approver"])) or {"name": "", "email": ""},
            "state": approval["state"], "comment": comment,
            "stage": STAGES.get(str(ritm["stage"]), str(ritm["stage"])),
        }
        summary = (f"{target.capitalize()} {result['number']} ({result['item']} for "
                   f"{result['requested_for']['name']}); stage now {result['stage']}")
        return ActionResult(result, summary, replayed=replayed)

    async def pick(self) -> dict[str, Any]:
        joined, _ = await self.approvals("requested")
        if "number" in self.args:
            joined = [(c, who) for c, who in joined if str(c["number"]).upper() == self.args["number"].upper()]
        if "requested_for" in self.args:
            wanted = await self.user_id(self.args["requested_for"])
            joined = [(c, who) for c, who in joined if who == wanted]
        if "item" in self.args:
            joined = [(c, who) for c, who in joined if words_match(self.args["item"], str(c["item"]))]
        candidates = [c for c, _ in joined]
        picked = {k: self.args[k] for k in ("number", "requested_for", "item") if k in self.args}
        if not candidates:
            raise VendorNotFound(f"No approval awaiting you matches {picked}", metadata={
                k: str(v) for k, v in picked.items()})
        if len(candidates) > 1:
            names = "; ".join(f"{c['number']} ({c['item']} for {c['requested_for']['name']})" for c in candidates)
            raise AmbiguousRecord(f"Several approvals awaiting you match: {names}", metadata={"candidates": names})
        return candidates[0]


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("name", ""))
    return "none" if value is None else str(value)
