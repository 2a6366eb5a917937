"""Vendor HTTP: one pooled aiohttp session per connector, one exception per failure class, one mapping to gRPC."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp

from mesh.errors import MeshError, Reason

from . import vendorwait

DEFAULT_TIMEOUT_S = 10.0
POOL_LIMIT = 200
POOL_LIMIT_PER_HOST = 50


@dataclass
class VendorError(Exception):
    """A vendor call that failed; the subclass says how, `to_mesh` says what gRPC status it becomes."""

    message: str
    status: int = 0
    vendor_code: str = ""
    field_errors: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    reason = Reason.INTERNAL

    def to_mesh(self, domain: str) -> MeshError:
        meta = {**self.metadata}
        if self.status:
            meta["vendor_status"] = str(self.status)
        if self.vendor_code:
            meta["vendor_code"] = self.vendor_code
        return MeshError(self.reason, self.message, domain=domain, metadata=meta,
                         field_violations=list(self.field_errors.items()))


class VendorValidationError(VendorError):
    """400/422: the vendor rejected the input → INVALID_ARGUMENT with field violations."""

    reason = Reason.VALIDATION_FAILED

    def to_mesh(self, domain: str) -> MeshError:
        err = super().to_mesh(domain)
        if not err.field_violations:
            err.field_violations = [("arguments", self.message)]
        return err


class VendorUnauthenticated(VendorError):
    """401: the vendor refused the token → UNAUTHENTICATED."""

    reason = Reason.VENDOR_UNAUTHENTICATED


class VendorDenied(VendorError):
    """403: the vendor refused the user → PERMISSION_DENIED."""

    reason = Reason.VENDOR_DENIED


class VendorNotFound(VendorError):
    """404, or a record named in words that matches nothing → NOT_FOUND."""

    reason = Reason.NOT_FOUND


class UnknownPerson(VendorNotFound):
    """An email the vendor does not know → NOT_FOUND with reason UNKNOWN_PERSON."""

    def to_mesh(self, domain: str) -> MeshError:
        err = super().to_mesh(domain)
        err.reason = Reason.UNKNOWN_PERSON
        err.code_override = MeshError(Reason.NOT_FOUND, "").code
        return err


class AmbiguousRecord(VendorError):
    """A record named in words matches several → FAILED_PRECONDITION listing the candidates."""

    reason = Reason.AMBIGUOUS_REFERENCE


class VendorConflict(VendorError):
    """409: the record changed underneath → ABORTED."""

    reason = Reason.VENDOR_CONFLICT


@dataclass
class VendorRateLimited(VendorError):
    """429 (or Salesforce REQUEST_LIMIT_EXCEEDED) → RESOURCE_EXHAUSTED with RetryInfo."""

    retry_after_s: float = 1.0
    reason = Reason.RATE_LIMITED

    def to_mesh(self, domain: str) -> MeshError:
        err = super().to_mesh(domain)
        err.retry_after_s = self.retry_after_s
        return err


class VendorUnavailable(VendorError):
    """5xx, connection resets and timeouts → UNAVAILABLE."""

    reason = Reason.UPSTREAM_UNAVAILABLE


def retry_after_from(headers: Mapping[str, str], now: float | None = None) -> float:
    """Seconds to wait from Retry-After (seconds or HTTP date), X-Rate-Limit-Reset (epoch s, Okta) or
    X-RateLimit-Reset (epoch s, ServiceNow; ISO `yyyy-MM-ddTHH:mmZ`, Jira). Defaults to 1 s."""
    now = time.time() if now is None else now
    value = headers.get("Retry-After")
    if value:
        try:
            return max(float(value), 0.0)
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value)
            return max(parsed.timestamp() - now, 0.0)
    for name in ("X-Rate-Limit-Reset", "X-RateLimit-Reset"):
        value = headers.get(name)
        if not value:
            continue
        try:
            return max(float(value) - now, 0.0)
        except ValueError:
            try:
                return max(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() - now, 0.0)
            except ValueError:
                continue
    return 1.0


class VendorSession:
    """The connector's pooled HTTP session; every request states its timeout and maps transport failures."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=POOL_LIMIT, limit_per_host=POOL_LIMIT_PER_HOST)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def request(self, method: str, url: str, *, timeout_s: float | None = None,
                      **kwargs: Any) -> tuple[int, Mapping[str, str], Any]:
        """Sends one request; returns (status, headers, parsed JSON or text or None). Raises VendorUnavailable
        for resets and timeouts; HTTP error statuses are returned for the vendor client to map. The time from
        sending the request until its body was read (or the request failed) is the call's vendor wait."""
        timeout = aiohttp.ClientTimeout(total=min(timeout_s or self.timeout_s, self.timeout_s))
        try:
            with vendorwait.awaiting() as waiting:
                async with self.session.request(method, url, timeout=timeout, **kwargs) as resp:
                    raw = await resp.read()
                    waiting.end()
                    body: Any = None
                    if raw:
                        if "json" in resp.headers.get("Content-Type", ""):
                            body = await resp.json(content_type=None)
                        else:
                            body = raw.decode("utf-8", "replace")
                    return resp.status, resp.headers, body
        except TimeoutError as err:
            raise VendorUnavailable(f"{method} {url.split('?')[0]} timed out") from err
        except aiohttp.ClientError as err:
            raise VendorUnavailable(f"{method} {url.split('?')[0]} failed: {type(err).__name__}") from err

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
