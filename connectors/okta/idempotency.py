"""Idempotency keys of the Okta connector's writes: a short-lived in-process record, since Okta keeps none."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from connectors.common.http import VendorError, VendorUnavailable
from connectors.common.service import ActionResult
from mesh.errors import Reason

DEFAULT_TTL_S = 3600.0  # longer than a request's deadline plus the executor's resume window
MAX_RECORDS = 100_000


class KeyReused(VendorError):
    """The key was first used with other arguments → FAILED_PRECONDITION."""

    reason = Reason.IDEMPOTENCY_KEY_REUSED


class KeyInFlight(VendorError):
    """A call with the key is still running → ABORTED; retry after a short wait."""

    reason = Reason.IDEMPOTENCY_KEY_IN_FLIGHT


@dataclass
class Attempt:
    """One idempotency key's record: the finished result, or what the first write attempt saw before sending."""

    key: tuple[str, ...]
    fingerprint: str
    expires_at: float
    result: ActionResult | None = None
    observed: dict[str, Any] | None = None  # the state read just before the first write with this key went out
    uncertain: bool = False  # a write with this key went out and its outcome never came back
    in_flight: bool = False
    sent: bool = False  # the current call sent its write

    def sending(self, before: dict[str, Any]) -> None:
        """Marks the write as going out; the state it saw is kept only from the first attempt."""
        if self.observed is None:
            self.observed = dict(before)
        self.sent = True


@dataclass
class KeyRecords:
    """Keys per (tenant, instance, key): done → the first result; lost answer → the state the write saw."""

    ttl_s: float = DEFAULT_TTL_S
    max_records: int = MAX_RECORDS
    _records: dict[tuple[str, ...], Attempt] = field(default_factory=dict)

    def begin(self, key: tuple[str, ...], fingerprint: str) -> Attempt:
        """The key's record, now in flight; raises KeyReused (other arguments) or KeyInFlight (running)."""
        now = time.monotonic()
        self._prune(now)
        record = self._records.get(key)
        if record is None:
            record = Attempt(key, fingerprint, now + self.ttl_s)
            self._records[key] = record
        elif record.fingerprint != fingerprint:
            raise KeyReused("this idempotency key was first used with different arguments",
                            metadata={"idempotency_key": key[-1]})
        elif record.in_flight:
            raise KeyInFlight("a call with this idempotency key is still running",
                              metadata={"idempotency_key": key[-1]})
        if record.result is None:
            record.in_flight, record.sent = True, False
        return record

    def complete(self, attempt: Attempt, result: ActionResult) -> None:
        attempt.result, attempt.in_flight = result, False
        attempt.expires_at = time.monotonic() + self.ttl_s

    def release(self, attempt: Attempt, error: BaseException) -> None:
        """After a failure: forget the key unless a write with it may have been applied."""
        attempt.in_flight = False
        if attempt.sent and _outcome_unknown(error):
            attempt.uncertain = True
        if not attempt.uncertain:
            self._records.pop(attempt.key, None)

    def _prune(self, now: float) -> None:
        expired = [k for k, r in self._records.items() if r.expires_at < now and not r.in_flight]
        for key in expired:
            del self._records[key]
        while len(self._records) >= self.max_records:
            oldest = min(self._records, key=lambda k: self._records[k].expires_at)
            del self._records[oldest]


def _outcome_unknown(error: BaseException) -> bool:
    """Whether a write may have been applied although the call failed (5xx, reset, timeout, cancellation)."""
    if isinstance(error, VendorUnavailable | TimeoutError | asyncio.CancelledError):
        return True
    return not isinstance(error, VendorError)
