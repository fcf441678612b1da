"""Server interceptors for the cross-cutting concerns of every RPC.

Order (outermost first): request context + access log, metrics, error mapping. Each one wraps
the method handler's behaviour, for all four RPC shapes (unary/streaming in and out).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from masterx_runtime import metrics
from masterx_runtime.errors import ERROR_DETAIL_KEY, ServiceError
from masterx_runtime.logs import request_id_var

log = logging.getLogger("masterx.rpc")

Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]
# A unary-response hook gets (behavior, request, context, method) and returns the response.
UnaryHook = Callable[[Behavior, Any, grpc.aio.ServicerContext, str], Awaitable[Any]]
StreamHook = Callable[[Behavior, Any, grpc.aio.ServicerContext, str], AsyncIterator[Any]]

REQUEST_ID_KEY = "x-request-id"


async def _drain(behavior: Behavior, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    """Iterate a streaming behaviour whether it is an async generator or uses context.write."""
    result = behavior(request, context)
    if inspect.isasyncgen(result):
        async for item in result:
            yield item
    else:
        await result


def _wrap_handler(
    handler: grpc.RpcMethodHandler, method: str, unary: UnaryHook, stream: StreamHook
) -> grpc.RpcMethodHandler:
    def unary_response(behavior: Behavior) -> Behavior:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await unary(behavior, request, context, method)

        return wrapped

    def stream_response(behavior: Behavior) -> Behavior:
        # Must be an async generator *function*: grpc.aio picks sync/async handling by inspecting it.
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for item in stream(behavior, request, context, method):
                yield item

        return wrapped

    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            unary_response(handler.unary_unary), handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            unary_response(handler.stream_unary), handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            stream_response(handler.unary_stream), handler.request_deserializer, handler.response_serializer
        )
    return grpc.stream_stream_rpc_method_handler(
        stream_response(handler.stream_stream), handler.request_deserializer, handler.response_serializer
    )


class _WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Base: wraps every handler in ``around_unary`` / ``around_stream``.

    The default wrappers call ``begin`` before the RPC and ``end`` after it (with the exception
    that ended it, if any), so an interceptor that only observes implements those two.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or self.skip(method):
            return handler
        return _wrap_handler(handler, method, self.around_unary, self.around_stream)

    def skip(self, method: str) -> bool:
        return method.startswith(("/grpc.health.v1.", "/grpc.reflection."))

    def begin(self, context: grpc.aio.ServicerContext, method: str) -> Any:
        """Called before the RPC; the result is handed to ``end``."""
        return None

    def end(self, context: grpc.aio.ServicerContext, method: str, state: Any, exc: BaseException | None) -> None:
        """Called after the RPC, also when it failed or was cancelled."""

    async def around_unary(
        self, behavior: Behavior, request: Any, context: grpc.aio.ServicerContext, method: str
    ) -> Any:
        state, exc = self.begin(context, method), None
        try:
            return await behavior(request, context)
        except BaseException as e:
            exc = e
            raise
        finally:
            self.end(context, method, state, exc)

    async def around_stream(
        self, behavior: Behavior, request: Any, context: grpc.aio.ServicerContext, method: str
    ) -> AsyncIterator[Any]:
        state, exc = self.begin(context, method), None
        try:
            async for item in _drain(behavior, request, context):
                yield item
        except BaseException as e:
            exc = e
            raise
        finally:
            self.end(context, method, state, exc)


def _status_of(context: grpc.aio.ServicerContext, exc: BaseException | None) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
    if exc is None:
        return "OK"
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    return "UNKNOWN"


class RequestContextInterceptor(_WrappingInterceptor):
    """Take the caller's ``x-request-id`` (or make one), expose it to logs, echo it back, log access."""

    def __init__(self, service: str) -> None:
        self.service = service

    def skip(self, method: str) -> bool:
        return False

    def begin(self, context: grpc.aio.ServicerContext, method: str) -> tuple[float, Any]:
        rid = ""
        for key, value in context.invocation_metadata() or ():
            if key == REQUEST_ID_KEY and isinstance(value, str):
                rid = value[:128]
        rid = rid or uuid.uuid4().hex
        context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
        return time.perf_counter(), request_id_var.set(rid)

    def end(self, context: grpc.aio.ServicerContext, method: str, state: Any, exc: BaseException | None) -> None:
        start, token = state
        quiet = method.startswith(("/grpc.health.v1.", "/grpc.reflection."))
        status = _status_of(context, exc)
        ok = exc is None or status in ("OK", "CANCELLED")
        level = logging.DEBUG if quiet else (logging.INFO if ok else logging.WARNING)
        log.log(
            level,
            "rpc",
            extra={"method": method, "status": status, "ms": round((time.perf_counter() - start) * 1000, 2)},
        )
        request_id_var.reset(token)


class MetricsInterceptor(_WrappingInterceptor):
    """Count RPCs by method and status, time them, and track calls in flight."""

    def __init__(self, service: str) -> None:
        self.service = service

    def begin(self, context: grpc.aio.ServicerContext, method: str) -> float:
        metrics.RPC_IN_FLIGHT.labels(self.service).inc()
        return time.perf_counter()

    def end(self, context: grpc.aio.ServicerContext, method: str, state: Any, exc: BaseException | None) -> None:
        metrics.RPC_IN_FLIGHT.labels(self.service).dec()
        metrics.observe_rpc(self.service, method, _status_of(context, exc), time.perf_counter() - state)


class ErrorMappingInterceptor(_WrappingInterceptor):
    """Turn ServiceError into its status code, timeouts into DEADLINE_EXCEEDED, bugs into INTERNAL."""

    def __init__(self, service: str) -> None:
        self.service = service

    async def _abort(self, context: grpc.aio.ServicerContext, exc: Exception, method: str) -> None:
        if isinstance(exc, ServiceError):
            context.set_trailing_metadata(
                (*(context.trailing_metadata() or ()), (ERROR_DETAIL_KEY, exc.detail(self.service).SerializeToString()))
            )
            await context.abort(exc.code, exc.message)
        if isinstance(exc, TimeoutError):
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        log.exception("unhandled error in %s", method)
        await context.abort(
            grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); request id {request_id_var.get()}"
        )

    async def around_unary(
        self, behavior: Behavior, request: Any, context: grpc.aio.ServicerContext, method: str
    ) -> Any:
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await self._abort(context, exc, method)

    async def around_stream(
        self, behavior: Behavior, request: Any, context: grpc.aio.ServicerContext, method: str
    ) -> AsyncIterator[Any]:
        try:
            async for item in _drain(behavior, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await self._abort(context, exc, method)


def default_interceptors(service: str) -> list[grpc.aio.ServerInterceptor]:
    """The stack every MasterX server installs (innermost: the shared input rules, masterx_runtime.validation)."""
    from masterx_runtime.validation import RequestValidationInterceptor  # imports this module

    return [
        RequestContextInterceptor(service),
        MetricsInterceptor(service),
        ErrorMappingInterceptor(service),
        RequestValidationInterceptor(),
    ]
