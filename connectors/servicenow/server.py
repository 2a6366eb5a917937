"""The ServiceNow connector process: `python -m connectors.servicenow.server` serves ConnectorService."""

from __future__ import annotations

from connectors.common.server import ConnectorConfig
from connectors.common.server import main as serve_connector

from .vendor import ServiceNowVendor


def make_vendor(config: ConnectorConfig) -> ServiceNowVendor:
    """The vendor with the process's settings."""
    return ServiceNowVendor(timeout_s=config.vendor_timeout_s)


def main() -> None:
    """Runs the ServiceNow connector until SIGTERM."""
    serve_connector(make_vendor)


if __name__ == "__main__":
    main()
