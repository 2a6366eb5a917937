"""Wiring for a vendor connector process: config, the generic ConnectorService, serve()."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mesh.config import MeshConfig
from mesh.server import Running, create_server, serve

from .service import Vendor, connector_spec


class ConnectorConfig(MeshConfig):
    """Connector settings: everything tenant-specific arrives with each call, so only the mesh settings."""

    vendor_timeout_s: float = 10.0


async def create_connector_server(config: MeshConfig, vendor: Vendor) -> Running:
    """Starts a connector's gRPC server (port 0 in tests)."""
    return await create_server(config, [connector_spec(vendor)], service_label=vendor.manifest["connector"])


def main(make_vendor: Callable[[ConnectorConfig], Vendor]) -> None:
    """Runs a connector until SIGTERM."""
    config = ConnectorConfig()
    vendor = make_vendor(config)
    asyncio.run(serve(config, [connector_spec(vendor)], service_label=f"connector-{vendor.manifest['connector']}",
                      on_stopped=vendor.close))
