"""serve(): a grpc.aio server with health, reflection, tracing, metrics and the mesh interceptor."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from mesh import principal as principal_mod
from mesh.config import MeshConfig
from mesh.errors import MeshError, Reason, abort
from mesh.principal import PrincipalError, Verifier
from mesh.telemetry import RPC_LATENCY, RPCS, setup_logging, setup_tracing, start_metrics, tracing_enabled

log = logging.getLogger("agentmesh.rpc")

Validator = Callable[[Any], list[tuple[str, str]]]
USER_ONLY = frozenset({principal_mod.USER})
OPERATOR_ONLY = frozenset({principal_mod.OPERATOR})
ANY_KIND = frozenset({principal_mod.USER, principal_mod.OPERATOR})
_EXEMPT_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                    "grpc.reflection.v1.ServerReflection")


@dataclass
class ServiceSpec:
    """One gRPC service to serve and the rules its methods are admitted by.

    kinds: method name -> principal kinds it accepts (default: user principals only).
    validators: method name -> function returning (field, description) violations of a request.
    authenticated: False for the public AgentService, which authenticates callers itself.
    """

    name: str
    servicer: Any
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    kinds: Mapping[str, frozenset[str]] = field(default_factory=dict)
    validators: Mapping[str, Validator] = field(default_factory=dict)
    authenticated: bool = True


class MeshInterceptor(grpc.aio.ServerInterceptor):
    """Verifies the principal, requires and enforces the deadline, validates the request, logs and counts."""

    def __init__(self, specs: Mapping[str, ServiceSpec], verifier: Verifier | None) -> None:
        self.specs = specs
        self.verifier = verifier

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        service, _, method = details.method.lstrip("/").rpartition("/")  # type: ignore[attr-defined]
        spec = self.specs.get(service)
        if handler is None or spec is None:
            return handler
        metadata = {k: v for k, v in (details.invocation_metadata or ())}  # type: ignore[attr-defined]
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(spec, method, metadata, handler.unary_unary),
                request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(spec, method, metadata, handler.unary_stream),
                request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
        return handler

    def _admit(self, spec: ServiceSpec, method: str, metadata: Mapping[str, Any], request: Message,
               context: grpc.aio.ServicerContext) -> tuple[principal_mod.Principal | None, float]:
        found: principal_mod.Principal | None = None
        if spec.authenticated:
            if self.verifier is None:
                raise MeshError(Reason.PRINCIPAL_INVALID, "this server has no verification keys")
            try:
                found = self.verifier.verify(str(metadata.get(principal_mod.METADATA_KEY, "")),
                                             spec.kinds.get(method, USER_ONLY))
            except PrincipalError as err:
                raise MeshError(Reason.PRINCIPAL_INVALID, str(err), domain="agentmesh.mesh") from None
        remaining = context.time_remaining()
        if remaining is None or remaining > 3600 * 24:
            raise MeshError(Reason.DEADLINE_REQUIRED, "every call must carry a deadline (grpc-timeout)",
                            domain="agentmesh.mesh", field_violations=[("grpc-timeout", "a deadline is required")])
        validator = spec.validators.get(method)
        if validator is not None:
            violations = validator(request)
            if violations:
                raise MeshError(Reason.VALIDATION_FAILED, "; ".join(f"{f}: {d}" for f, d in violations),
                                domain=f"agentmesh.{spec.name.split('.')[1]}", field_violations=violations)
        return found, remaining

    def _finish(self, spec: ServiceSpec, method: str, found: principal_mod.Principal | None, code: grpc.StatusCode,
                started: float, metadata: Mapping[str, Any], err: BaseException | None = None) -> None:
        elapsed = time.perf_counter() - started
        tenant = found.tenant if found else "-"
        RPCS.labels(spec.name, method, code.name, tenant).inc()
        RPC_LATENCY.labels(spec.name, method).observe(elapsed)
        fields = {"method": f"{spec.name}/{method}", "code": code.name, "ms": round(elapsed * 1000, 2),
                  "tenant": tenant, "request_id": found.request_id if found else metadata.get("x-request-id", "")}
        if err is not None and code == grpc.StatusCode.INTERNAL:
            log.error("rpc failed", extra={"fields": fields}, exc_info=err)
        else:
            log.info("rpc", extra={"fields": fields})

    def _unary(self, spec: ServiceSpec, method: str, metadata: Mapping[str, Any],
               behavior: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]) -> Any:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            found = None
            token = None
            code = grpc.StatusCode.OK
            error: BaseException | None = None
            try:
                found, remaining = self._admit(spec, method, metadata, request, context)
                token = principal_mod.set_current(found)
                async with asyncio.timeout(remaining):
                    return await behavior(request, context)
            except Exception as err:
                error = err
                code = await _answer(context, err)
            finally:
                if token is not None:
                    principal_mod._current.reset(token)
                self._finish(spec, method, found, _final_code(context, code), started, metadata, error)
            return None

        return handle

    def _stream(self, spec: ServiceSpec, method: str, metadata: Mapping[str, Any],
                behavior: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]) -> Any:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            found = None
            token = None
            code = grpc.StatusCode.OK
            error: BaseException | None = None
            try:
                found, remaining = self._admit(spec, method, metadata, request, context)
                token = principal_mod.set_current(found)
                async with asyncio.timeout(remaining):
                    async for item in behavior(request, context):
                        yield item
            except Exception as err:
                error = err
                code = await _answer(context, err)
            finally:
                if token is not None:
                    principal_mod._current.reset(token)
                self._finish(spec, method, found, _final_code(context, code), started, metadata, error)

        return handle


def _final_code(context: grpc.aio.ServicerContext, code: grpc.StatusCode) -> grpc.StatusCode:
    set_code = context.code()
    if isinstance(set_code, grpc.StatusCode):
        return set_code
    return code


async def _answer(context: grpc.aio.ServicerContext, err: Exception) -> grpc.StatusCode:
    """Turns an exception into the RPC's status. Abort re-raises, so the handler ends here."""
    if isinstance(err, grpc.aio.AbortError):
        raise err
    if isinstance(err, TimeoutError):
        err = MeshError(Reason.DEADLINE, "the request's deadline ran out", domain="agentmesh.mesh")
    if not isinstance(err, MeshError):
        log.error("unhandled error", exc_info=err)
        err = MeshError(Reason.INTERNAL, "internal error", domain="agentmesh.mesh")
    await abort(context, err)
    return err.code


@dataclass
class Running:
    """A started server: its port, health servicer and metrics port."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    metrics_port: int | None
    services: list[str]

    async def stop(self, grace_s: float, notice_s: float = 0.0) -> None:
        """NOT_SERVING first (kept for notice_s so health checkers see it), then drain calls for up to grace_s."""
        await self.health.enter_graceful_shutdown()
        if notice_s:
            await asyncio.sleep(notice_s)
        await self.server.stop(grace_s)


async def create_server(config: MeshConfig, services: list[ServiceSpec], *, verifier: Verifier | None = None,
                        service_label: str = "agentmesh") -> Running:
    """Builds and starts the server on config.host:config.port (0 picks a free port)."""
    if verifier is None and any(s.authenticated for s in services):
        jwks = config.resolved_jwks_path
        verifier = Verifier(jwks_url=config.jwks_url) if config.jwks_url else Verifier(jwks_path=jwks)
    specs = {s.name: s for s in services}
    tracing = [aio_server_interceptor()] if tracing_enabled() else []
    server = grpc.aio.server(interceptors=[*tracing, MeshInterceptor(specs, verifier)],
                             options=[("grpc.so_reuseport", 0)])
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for spec in services:
        spec.add_to_server(spec.servicer, server)
    names = [s.name for s in services]
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME, "grpc.health.v1.Health"], server)
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    await server.start()
    for name in [*names, ""]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    metrics_port = start_metrics(config.metrics_port, config.host)
    return Running(server, port, health, metrics_port, names)


async def serve(config: MeshConfig, services: list[ServiceSpec], *, service_label: str,
                on_started: Callable[[Running], Awaitable[None]] | None = None,
                on_stopped: Callable[[], Awaitable[None]] | None = None) -> None:
    """Runs a service until SIGTERM/SIGINT, then NOT_SERVING and a graceful drain."""
    setup_logging(service_label, config.log_level)
    setup_tracing(config, service_label)
    running = await create_server(config, services, service_label=service_label)
    logging.getLogger("agentmesh").info("serving", extra={"fields": {
        "service": service_label, "port": running.port, "metrics_port": running.metrics_port}})
    # The supervisor reads this line to learn the bound port.
    print(f"AGENTMESH_LISTENING {service_label} {config.host}:{running.port}", flush=True)
    if on_started is not None:
        await on_started(running)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop(config.shutdown_grace_s, config.shutdown_notice_s)
    if on_stopped is not None:
        await on_stopped()
