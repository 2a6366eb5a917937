"""Outbound gRPC: traced channels, principal metadata and deadlines taken from the remaining budget."""

from __future__ import annotations

import time

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from mesh import principal as principal_mod
from mesh.telemetry import tracing_enabled

# Every channel in the mesh shares these: keepalive so dead peers are noticed, no proxy lookups.
_CHANNEL_OPTIONS = [("grpc.keepalive_time_ms", 30_000), ("grpc.enable_http_proxy", 0),
                    ("grpc.max_receive_message_length", 16 * 1024 * 1024)]


def channel(target: str) -> grpc.aio.Channel:
    """An insecure (mesh-internal, loopback or service-mesh mTLS) traced channel to target host:port."""
    interceptors = aio_client_interceptors() if tracing_enabled() else None
    return grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS, interceptors=interceptors)


def metadata(p: principal_mod.Principal | None = None) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying the principal (the current one by default)."""
    p = p or principal_mod.current()
    return ((principal_mod.METADATA_KEY, p.token), ("x-request-id", p.request_id))


class Budget:
    """A request's deadline; every hop gets what is left of it."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    @classmethod
    def of(cls, context: grpc.aio.ServicerContext, default_s: float = 5.0) -> Budget:
        remaining = context.time_remaining()
        return cls(remaining if remaining is not None else default_s)

    def remaining(self, reserve_s: float = 0.0) -> float:
        """Seconds left, minus a reserve for the caller's own work after the call; never below 1 ms."""
        return max(self.deadline - time.monotonic() - reserve_s, 0.001)

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.deadline
