"""Runs the Salesforce connector as its own gRPC server: `python -m connectors.salesforce.server`."""

from __future__ import annotations

from connectors.common.server import ConnectorConfig
from connectors.common.server import main as serve_connector

from .vendor import SalesforceVendor


def make_vendor(config: ConnectorConfig) -> SalesforceVendor:
    return SalesforceVendor(timeout_s=config.vendor_timeout_s)


def main() -> None:
    serve_connector(make_vendor)


if __name__ == "__main__":
    main()
