"""Every vendor connector passes the conformance kit, run against its sandbox over real gRPC."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from connectors.common.sandbox import sandbox_classes, start_sandboxes
from connectors.common.server import create_connector_server
from connectors.conformance.kit import Conformance, Profile

TENANT = "acme"
# One demo user per vendor and two calls the user may make: a READ, and a WRITE with a visible effect.
CASES: dict[str, dict[str, Any]] = {
    "servicenow": {"user": "alice.nguyen@acme.example", "vendor": "ServiceNowVendor",
                   "read": {"action": "get_incident", "arguments": {"number": "INC0010001"}},
                   "write": {"action": "create_incident",
                             "arguments": {"short_description": "Conformance: docking station flickers",
                                           "caller": "alice.nguyen@acme.example"}}},
    "jira": {"user": "alice.nguyen@acme.example", "vendor": "JiraVendor",
             "read": {"action": "get_issue", "arguments": {"key": "ENG-101"}},
             "write": {"action": "add_comment", "arguments": {"key": "ENG-102", "comment": "Conformance check"}}},
    "okta": {"user": "erin.walsh@acme.example", "vendor": "OktaVendor",
             "read": {"action": "get_user", "arguments": {"user": "alice.nguyen@acme.example"}},
             "write": {"action": "add_user_to_group",
                       "arguments": {"group": "VPN-Users", "user": "bob.smith@acme.example"}}},
    "salesforce": {"user": "bob.smith@acme.example", "vendor": "SalesforceVendor",
                   "read": {"action": "find_account", "arguments": {"name": "Initech"}},
                   "write": {"action": "create_task",
                             "arguments": {"subject": "Conformance follow-up", "related_to": "Umbrella Corp"}}},
}


def _vendor(name: str) -> Any:
    module = importlib.import_module(f"connectors.{name}.server")
    return module.make_vendor(module.ConnectorConfig())


@pytest.mark.parametrize("vendor", sorted(CASES))
async def test_connector_passes_the_conformance_kit(vendor: str, mesh_config, minter) -> None:
    classes = sandbox_classes()
    assert vendor in classes, f"connectors/{vendor}/sandbox.py is missing"
    sandbox = classes[vendor]()
    sandboxes = await start_sandboxes([sandbox])
    case = CASES[vendor]
    connector = _vendor(vendor)
    running = await create_connector_server(mesh_config, connector)
    try:
        token, _ = sandbox.tokens.issue(TENANT, case["user"])
        base = sandboxes.base_urls[vendor][TENANT]
        instance = {"base_url": base}
        if vendor == "salesforce":
            instance.update({"instance_url": base, "api_version": "v60.0"})
        profile = Profile(tenant=TENANT, user=case["user"], instance=instance,
                          credential={"kind": "CREDENTIAL_KIND_USER", "token": token, "scheme": "Bearer"},
                          read=case["read"], write=case["write"])
        results = await Conformance(f"127.0.0.1:{running.port}", profile, minter).run()
    finally:
        await running.stop(0)
        await connector.close()
        await sandboxes.close()
    failed = [f"{r.name}: {r.detail}" for r in results if not r.passed]
    assert not failed, "\n".join(failed)
    created = sum(sandbox.counters.created.values())
    assert created <= 1, f"the repeated WRITE created {created} records"
