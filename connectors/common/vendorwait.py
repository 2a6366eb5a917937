"""Vendor wait: the time one connector call spends awaiting its vendor, measured around each vendor request."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, NoReturn

import grpc
from google.protobuf import duration_pb2

from mesh.errors import MeshError, to_status

# The trailing metadata entry that carries a failed call's vendor wait (connector_service.proto, InvokeResponse).
METADATA_KEY = "x-agentmesh-vendor-wait-ms"


class VendorWait:
    """The vendor wait of one call: wall time during which at least one of its vendor requests was outstanding
    (requests in flight together count once), plus figures other services reported for it (`add`)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._in_flight = 0
        self._since = 0.0
        self._total = 0.0

    @property
    def seconds(self) -> float:
        busy = self._clock() - self._since if self._in_flight else 0.0
        return self._total + busy

    def add(self, seconds: float) -> None:
        self._total += max(seconds, 0.0)

    def begin(self) -> None:
        if self._in_flight == 0:
            self._since = self._clock()
        self._in_flight += 1

    def end(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._total += self._clock() - self._since


class Awaiting:
    """One vendor request being awaited; `end()` (at the latest on leaving the block) stops its clock."""

    def __init__(self, meter: VendorWait | None) -> None:
        self._meter = meter
        if meter is not None:
            meter.begin()

    def end(self) -> None:
        if self._meter is not None:
            self._meter.end()
            self._meter = None

    def __enter__(self) -> Awaiting:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()


_current: ContextVar[VendorWait | None] = ContextVar("agentmesh_vendor_wait", default=None)


@contextlib.contextmanager
def measuring() -> Iterator[VendorWait]:
    """Measures the vendor wait of the work done inside the block (one Invoke), tasks it starts included."""
    meter = VendorWait()
    token = _current.set(meter)
    try:
        yield meter
    finally:
        _current.reset(token)


def awaiting() -> Awaiting:
    """Counts a vendor request, from now until `end()` or the end of the block, in the current call's wait."""
    return Awaiting(_current.get())


def add(seconds: float) -> None:
    """Adds a figure reported for the current call (a connector's wait, as the registry hears it)."""
    meter = _current.get()
    if meter is not None:
        meter.add(seconds)


def duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(max(seconds, 0.0) * 1e9))
    return out


def seconds_of(value: duration_pb2.Duration) -> float:
    return float(value.ToNanoseconds()) / 1e9


def metadata_entry(seconds: float) -> tuple[str, str]:
    """The trailing metadata entry that carries a failed call's vendor wait."""
    return METADATA_KEY, f"{max(seconds, 0.0) * 1000:.3f}"


def from_metadata(metadata: Iterable[tuple[str, Any]] | None) -> float | None:
    """The vendor wait a failed call reported in its trailing metadata, in seconds; None when it reported none."""
    for key, value in metadata or ():
        if key == METADATA_KEY:
            try:
                ms = float(value.decode() if isinstance(value, bytes) else value)
            except ValueError:
                return None
            return ms / 1000 if math.isfinite(ms) and ms >= 0 else None
    return None


async def abort(context: grpc.aio.ServicerContext, err: MeshError, seconds: float) -> NoReturn:
    """Ends an Invoke with the error's rich status and, in the trailing metadata, the vendor wait it had, so that
    the caller counts the vendor time of failed attempts too."""
    status = to_status(err)
    await context.abort(status.code, status.details, (*status.trailing_metadata, metadata_entry(seconds)))
    raise err  # not reached: abort raises (grpc's stubs leave that untyped)
