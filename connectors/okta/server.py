"""Wiring of the Okta connector process: `python -m connectors.okta.server` serves ConnectorService."""

from __future__ import annotations

from connectors.common.http import VendorSession
from connectors.common.server import ConnectorConfig
from connectors.common.server import main as serve_connector

from .vendor import OktaVendor


def make_vendor(config: ConnectorConfig) -> OktaVendor:
    """The Okta vendor with one pooled HTTP session whose calls never outlast `vendor_timeout_s`."""
    return OktaVendor(VendorSession(timeout_s=config.vendor_timeout_s))


def main() -> None:
    """Runs the Okta connector until SIGTERM."""
    serve_connector(make_vendor)


if __name__ == "__main__":
    main()
