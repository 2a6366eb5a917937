"""A connector call's vendor wait: time during which at least one of its vendor requests was outstanding."""

from __future__ import annotations

import pytest

from connectors.common import vendorwait


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_sequential_requests_add_up_and_parallel_ones_count_once() -> None:
    clock = Clock()
    meter = vendorwait.VendorWait(clock)
    meter.begin()
    clock.t = 0.2
    meter.end()  # one request: 0.2 s
    clock.t = 0.5  # the connector's own work between requests is not vendor time
    meter.begin()
    clock.t = 0.6
    meter.begin()  # a second request in flight alongside the first (asyncio.gather)
    clock.t = 0.8
    meter.end()
    clock.t = 0.9
    meter.end()  # together outstanding from 0.5 to 0.9
    assert meter.seconds == pytest.approx(0.2 + 0.4)
    meter.begin()
    clock.t = 1.0
    assert meter.seconds == pytest.approx(0.7)  # a request still outstanding counts so far
    meter.add(0.25)  # a figure a connector reported (as the registry adds it)
    assert meter.seconds == pytest.approx(0.95)


def test_requests_count_only_inside_a_measured_call() -> None:
    with vendorwait.awaiting() as outside:
        outside.end()  # no call is being measured: nothing to count, nothing fails
    with vendorwait.measuring() as waited:
        with vendorwait.awaiting() as request:
            request.end()
            request.end()  # ending twice (the body was read, then the block ended) counts once
        vendorwait.add(0.5)
    assert 0.5 <= waited.seconds < 1.0


@pytest.mark.parametrize(("metadata", "expected"), [
    ([("x-agentmesh-vendor-wait-ms", "250.000")], 0.25),
    ([("other", "1"), ("x-agentmesh-vendor-wait-ms", b"12")], 0.012),
    ([("x-agentmesh-vendor-wait-ms", "0")], 0.0),
    ([("x-agentmesh-vendor-wait-ms", "soon")], None),
    ([("x-agentmesh-vendor-wait-ms", "-5")], None),
    ([("x-agentmesh-vendor-wait-ms", "nan")], None),
    ([], None),
    (None, None),
])
def test_the_trailing_metadata_figure(metadata, expected) -> None:
    assert vendorwait.from_metadata(metadata) == (pytest.approx(expected) if expected is not None else None)
    if expected:
        assert vendorwait.from_metadata([vendorwait.metadata_entry(expected)]) == pytest.approx(expected)
