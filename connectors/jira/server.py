"""Wiring of the Jira connector process: `python -m connectors.jira.server` serves ConnectorService until SIGTERM."""

from __future__ import annotations

from connectors.common.server import ConnectorConfig
from connectors.common.server import main as serve_connector

from .vendor import JiraVendor


def make_vendor(config: ConnectorConfig) -> JiraVendor:
    """The Jira vendor with the configured per-call vendor timeout."""
    return JiraVendor(timeout_s=config.vendor_timeout_s)


def main() -> None:
    """Runs the Jira connector."""
    serve_connector(make_vendor)


if __name__ == "__main__":
    main()
