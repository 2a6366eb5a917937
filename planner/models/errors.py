"""One table turning each provider failure (HTTP status, connection, timeout, broken stream) into a status code."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

from planner.models.types import ProviderError

# HTTP status of a provider answer -> the gRPC code name resilience reasons with.
_BY_STATUS: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "UNAVAILABLE",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
}
# Failures that say the provider cannot serve anyone (down, or our credentials for it are wrong): they count
# against its circuit breaker. Refusals of one request (400, 404, 422, 429) do not.
UNHEALTHY = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN", "UNAUTHENTICATED",
                       "PERMISSION_DENIED"})


def code_for_status(status: int) -> str:
    """The code an HTTP status of a provider amounts to (5xx: UNAVAILABLE)."""
    if status >= 500:
        return "UNAVAILABLE"
    return _BY_STATUS.get(status, "UNKNOWN")


def retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date), when the provider sent one."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (now if now is not None else time.time()), 0.0)


def from_status(status: int, message: str, headers: Mapping[str, str] | None, streamed: bool) -> ProviderError:
    """A provider's HTTP error answer as a ProviderError."""
    return ProviderError(code_for_status(status), f"HTTP {status}: {message}"[:500], retry_after(headers),
                         streamed, status)


def broken_stream(message: str) -> ProviderError:
    """The stream ended or broke before the model finished."""
    return ProviderError("UNAVAILABLE", message, None, True)
