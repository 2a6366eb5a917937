"""The one table of error reasons, and helpers that turn them into google.rpc.Status with ErrorInfo details."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status


class Reason(enum.StrEnum):
    """ErrorInfo reasons: DESIGN.md's table (and DEADLINE_REQUIRED, INTERNAL). `.code` is the gRPC code."""

    PRINCIPAL_INVALID = "PRINCIPAL_INVALID"
    POLICY_DENIED = "POLICY_DENIED"
    VENDOR_DENIED = "VENDOR_DENIED"
    VALIDATION_FAILED = "VALIDATION_FAILED"
    DEADLINE_REQUIRED = "DEADLINE_REQUIRED"
    NOT_FOUND = "NOT_FOUND"
    UNKNOWN_PERSON = "UNKNOWN_PERSON"
    AMBIGUOUS_PERSON = "AMBIGUOUS_PERSON"
    AMBIGUOUS_REFERENCE = "AMBIGUOUS_REFERENCE"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    IDEMPOTENCY_KEY_IN_FLIGHT = "IDEMPOTENCY_KEY_IN_FLIGHT"
    ACCOUNT_NOT_LINKED = "ACCOUNT_NOT_LINKED"
    VENDOR_UNAUTHENTICATED = "VENDOR_UNAUTHENTICATED"
    VENDOR_CONFLICT = "VENDOR_CONFLICT"
    CONFIRMATION_DECLINED = "CONFIRMATION_DECLINED"
    CONFIRMATION_TIMEOUT = "CONFIRMATION_TIMEOUT"
    CANCELLED = "CANCELLED"
    RATE_LIMITED = "RATE_LIMITED"
    BUDGET_EXHAUSTED = "BUDGET_EXHAUSTED"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
    OVERLOADED = "OVERLOADED"  # not in DESIGN.md's table: a service sheds load rather than queue past deadlines
    DEADLINE = "DEADLINE"
    INTERNAL = "INTERNAL"

    @property
    def code(self) -> grpc.StatusCode:
        return _CODES[self]


_S = grpc.StatusCode
_CODES: dict[Reason, grpc.StatusCode] = {
    Reason.PRINCIPAL_INVALID: _S.UNAUTHENTICATED,
    Reason.POLICY_DENIED: _S.PERMISSION_DENIED,
    Reason.VENDOR_DENIED: _S.PERMISSION_DENIED,
    Reason.VALIDATION_FAILED: _S.INVALID_ARGUMENT,
    Reason.DEADLINE_REQUIRED: _S.INVALID_ARGUMENT,
    Reason.NOT_FOUND: _S.NOT_FOUND,
    # The connectors answer UNKNOWN_PERSON as NOT_FOUND (issue "Connectors"); the registry's directory as
    # FAILED_PRECONDITION (DESIGN.md). MeshError.code_override carries the connector's choice.
    Reason.UNKNOWN_PERSON: _S.FAILED_PRECONDITION,
    Reason.AMBIGUOUS_PERSON: _S.FAILED_PRECONDITION,
    Reason.AMBIGUOUS_REFERENCE: _S.FAILED_PRECONDITION,
    Reason.IDEMPOTENCY_KEY_REUSED: _S.FAILED_PRECONDITION,
    Reason.IDEMPOTENCY_KEY_IN_FLIGHT: _S.ABORTED,
    Reason.ACCOUNT_NOT_LINKED: _S.FAILED_PRECONDITION,
    Reason.VENDOR_UNAUTHENTICATED: _S.UNAUTHENTICATED,
    Reason.VENDOR_CONFLICT: _S.ABORTED,
    Reason.CONFIRMATION_DECLINED: _S.FAILED_PRECONDITION,
    Reason.CONFIRMATION_TIMEOUT: _S.FAILED_PRECONDITION,
    Reason.CANCELLED: _S.CANCELLED,
    Reason.RATE_LIMITED: _S.RESOURCE_EXHAUSTED,
    Reason.BUDGET_EXHAUSTED: _S.RESOURCE_EXHAUSTED,
    Reason.CIRCUIT_OPEN: _S.UNAVAILABLE,
    Reason.UPSTREAM_UNAVAILABLE: _S.UNAVAILABLE,
    Reason.OVERLOADED: _S.UNAVAILABLE,
    Reason.DEADLINE: _S.DEADLINE_EXCEEDED,
    Reason.INTERNAL: _S.INTERNAL,
}


def reason_named(name: str) -> Reason | None:
    """The reason with this name, or None."""
    return Reason.__members__.get(name)


@dataclass
class MeshError(Exception):
    """An error a handler raises; the server interceptor answers it as a rich status."""

    reason: Reason
    message: str
    domain: str = "agentmesh"
    metadata: Mapping[str, str] = field(default_factory=dict)
    field_violations: Iterable[tuple[str, str]] = ()
    retry_after_s: float | None = None
    code_override: grpc.StatusCode | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def code(self) -> grpc.StatusCode:
        return self.code_override or self.reason.code

    def to_status(self) -> grpc.Status:
        return to_status(self)


def invalid_argument(violations: Iterable[tuple[str, str]], domain: str = "agentmesh",
                     message: str = "") -> MeshError:
    """INVALID_ARGUMENT (VALIDATION_FAILED) with BadRequest field violations."""
    violations = list(violations)
    text = message or "; ".join(f"{f}: {d}" for f, d in violations) or "invalid request"
    return MeshError(Reason.VALIDATION_FAILED, text, domain=domain, field_violations=violations)


def to_status_proto(err: MeshError) -> status_pb2.Status:
    code = err.code
    details: list[any_pb2.Any] = []
    info = error_details_pb2.ErrorInfo(reason=err.reason.name, domain=err.domain,
                                       metadata={k: str(v) for k, v in err.metadata.items()})
    packed = any_pb2.Any()
    packed.Pack(info)
    details.append(packed)
    violations = list(err.field_violations)
    if violations:
        bad = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations])
        packed = any_pb2.Any()
        packed.Pack(bad)
        details.append(packed)
    if err.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(max(err.retry_after_s, 0) * 1000))
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(packed)
    return status_pb2.Status(code=getattr(code_pb2, code.name), message=err.message, details=details)


def to_status(err: MeshError) -> grpc.Status:
    """The grpc.Status (code, message, `grpc-status-details-bin` trailer) for an error."""
    return rpc_status.to_status(to_status_proto(err))


async def abort(context: grpc.aio.ServicerContext, err: MeshError) -> None:
    """Ends an aio RPC with the error's rich status."""
    status = to_status(err)
    await context.abort(status.code, status.details, status.trailing_metadata)


@dataclass
class ErrorDetails:
    """What a caller reads back from a failed RPC."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: list[tuple[str, str]] = field(default_factory=list)
    retry_after_s: float | None = None


def details_of(err: grpc.aio.AioRpcError | grpc.RpcError) -> ErrorDetails:
    """Decodes ErrorInfo, BadRequest and RetryInfo from a failed call."""
    code = err.code()  # type: ignore[attr-defined]
    out = ErrorDetails(code=code, message=err.details() or "")  # type: ignore[attr-defined]
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except ValueError:
        # grpc_status refuses a details trailer whose code disagrees with the call's own (a deadline that fired on
        # both sides at once); the call's code and message still say what happened.
        return out
    if status is None:
        return out
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            out.reason, out.domain, out.metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.field_violations = [(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            out.retry_after_s = retry.retry_delay.ToMilliseconds() / 1000
    return out


def from_details(details: ErrorDetails) -> MeshError:
    """Re-raises a downstream failure as our own error, keeping reason, metadata and retry info."""
    reason = reason_named(details.reason)
    if reason is None:
        reason = _REASON_BY_CODE.get(details.code, Reason.INTERNAL)
    return MeshError(reason, details.message, domain=details.domain or "agentmesh", metadata=details.metadata,
                     field_violations=details.field_violations, retry_after_s=details.retry_after_s,
                     code_override=details.code if details.code != reason.code else None)


_REASON_BY_CODE: dict[grpc.StatusCode, Reason] = {
    grpc.StatusCode.UNAUTHENTICATED: Reason.PRINCIPAL_INVALID,
    grpc.StatusCode.PERMISSION_DENIED: Reason.POLICY_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT: Reason.VALIDATION_FAILED,
    grpc.StatusCode.NOT_FOUND: Reason.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Reason.RATE_LIMITED,
    grpc.StatusCode.UNAVAILABLE: Reason.UPSTREAM_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: Reason.DEADLINE,
    grpc.StatusCode.CANCELLED: Reason.CANCELLED,
}
