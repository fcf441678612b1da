"""The server interceptor for the cross-cutting concerns of every RPC.

One :class:`RuntimeInterceptor` does, per call and in this order (outermost first):

1. request context: take the caller's ``x-request-id`` (or make one), expose it to logs
   (:data:`masterx_runtime.logs.request_id_var`), echo it in the trailing metadata, and log one
   access line when the call ends (INFO, WARNING when it failed, DEBUG for health/reflection);
2. metrics: calls in flight, and per method and status code the count and the latency;
3. error mapping: :class:`ServiceError` -> its status code plus an ErrorDetail trailer,
   ``TimeoutError`` -> DEADLINE_EXCEEDED, anything else -> INTERNAL naming the request id;
4. validation: the shared input rules (:mod:`masterx_runtime.validation`) on the request, and on
   each message of a request stream;
5. readiness: while the ``gate`` gives a reason ("router is starting: waiting for redis"), the
   call gets UNAVAILABLE with that reason (ErrorDetail reason ``NOT_SERVING``).

Health and reflection calls only get step 1. All four RPC shapes (unary/streaming in and out) are
covered.

Why one interceptor rather than one per concern: grpc.aio runs every interceptor's
``intercept_service`` coroutine on every call, and each wrapping layer adds a coroutine (or an
async generator) per call. Here the wrapped handler is built once per method and reused (a
method's handler does not change; per-call state lives in the call's context), the metric
children are resolved once per (method, status), and the access line is only built when its
level is enabled.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from masterx_runtime import metrics
from masterx_runtime.errors import ERROR_DETAIL_KEY, ServiceError, Unavailable
from masterx_runtime.logs import request_id_var
from masterx_runtime.validation import RULES, Rules, check_request, checked_stream

log = logging.getLogger("masterx.rpc")

Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]
Gate = Callable[[], str]

REQUEST_ID_KEY = "x-request-id"
QUIET_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

_perf_counter = time.perf_counter
_INFO, _WARNING, _DEBUG = logging.INFO, logging.WARNING, logging.DEBUG

#: status code (enum member or its integer value) -> name, e.g. 3 -> "INVALID_ARGUMENT"
_CODE_NAMES: dict[object, str] = {}
for _status in grpc.StatusCode:
    _CODE_NAMES[_status] = _status.name
    _CODE_NAMES[_status.value[0]] = _status.name


#: (handler attribute, its constructor, request streaming, response streaming)
_SHAPES = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, False, False),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, True, False),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, False, True),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, True, True),
)


def _new_request_id() -> str:
    """A random (version 4) UUID as 32 hex digits, like ``uuid.uuid4().hex``, without the UUID object."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def _request_id(context: grpc.aio.ServicerContext) -> str:
    """The caller's ``x-request-id`` (the last one sent, at most 128 characters), else a new one."""
    rid = ""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str):
            rid = value[:128]
    return rid or _new_request_id()


def _bind_request_id(context: grpc.aio.ServicerContext) -> contextvars.Token[str]:
    """Take the call's request id, echo it in the trailers and expose it to logs (reset the token after)."""
    rid = _request_id(context)
    context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
    return request_id_var.set(rid)


async def _drain(behavior: Behavior, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    """Iterate a streaming behaviour whether it is an async generator or uses context.write."""
    result = behavior(request, context)
    if inspect.isasyncgen(result):
        async for item in result:
            yield item
    else:
        await result


def _status_of(context: grpc.aio.ServicerContext, exc: BaseException | None) -> str:
    """The name of the status code the call ends with."""
    name = _CODE_NAMES.get(context.code())
    if name is not None:
        return name
    if exc is None:
        return "OK"
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    return "UNKNOWN"


def not_ready(reason: str) -> Unavailable:
    """The error a call gets while the service is not SERVING (``reason``: the gate's text)."""
    return Unavailable(reason, reason="NOT_SERVING")


class RuntimeInterceptor(grpc.aio.ServerInterceptor):
    """Request context, metrics, error mapping, validation and readiness for every RPC (module doc).

    ``gate`` returns '' while the service may serve, else why not; None means always serving.
    """

    def __init__(self, service: str, gate: Gate | None = None, rules: Rules = RULES) -> None:
        self.service = service
        self.gate = gate
        self.rules = rules
        self._in_flight = metrics.RPC_IN_FLIGHT.labels(service)
        #: method -> (the handler it was built from, the wrapped handler)
        self._handlers: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(handler, method)
        self._handlers[method] = (handler, wrapped)
        return wrapped

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """``handler`` with this interceptor's behaviour around it (for calls of ``method``)."""
        # the first shape the handler has (the last one when it has none, as grpc.aio does)
        attr, make, stream_in, stream_out = next((s for s in _SHAPES if getattr(handler, s[0])), _SHAPES[-1])
        behavior = getattr(handler, attr)
        if method.startswith(QUIET_PREFIXES):
            wrapped = self._quiet_stream(behavior, method) if stream_out else self._quiet_unary(behavior, method)
        else:
            m = metrics.RpcMetrics(self.service, method)
            wrapped = self._stream(m, behavior, stream_in) if stream_out else self._unary(m, behavior, stream_in)
        return make(wrapped, handler.request_deserializer, handler.response_serializer)

    # -- the per-call steps ------------------------------------------------------------------

    def _admit(self, request: Any, stream_request: bool) -> Any:
        """Validation, then readiness: the request to hand on, or a ServiceError."""
        if stream_request:
            request = checked_stream(request, self.rules)
        else:
            check_request(request, self.rules)
        gate = self.gate
        if gate is not None and (reason := gate()):
            raise not_ready(reason)
        return request

    async def _abort(self, context: grpc.aio.ServicerContext, exc: Exception, method: str) -> None:
        """End the call with the status ``exc`` maps to (always raises grpc's AbortError)."""
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

    def _finish(
        self, m: metrics.RpcMetrics, context: grpc.aio.ServicerContext, start: float, exc: BaseException | None
    ) -> None:
        seconds = _perf_counter() - start
        status = _status_of(context, exc)
        self._in_flight.dec()
        m.observe(status, seconds)
        level = _INFO if exc is None or status in ("OK", "CANCELLED") else _WARNING
        if log.isEnabledFor(level):
            log.log(level, "rpc", extra={"method": m.method, "status": status, "ms": round(seconds * 1000, 2)})

    # -- wrappers (one closure per method, built once) ---------------------------------------

    def _unary(self, m: metrics.RpcMetrics, behavior: Behavior, stream_request: bool) -> Behavior:
        admit, abort, finish, in_flight = self._admit, self._abort, self._finish, self._in_flight

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            token = _bind_request_id(context)
            start = _perf_counter()
            in_flight.inc()
            exc: BaseException | None = None
            try:
                try:
                    return await behavior(admit(request, stream_request), context)
                except grpc.aio.AbortError:
                    raise
                except Exception as e:
                    await abort(context, e, m.method)
                    raise  # not reached: abort raises
            except BaseException as e:
                exc = e
                raise
            finally:
                finish(m, context, start, exc)
                request_id_var.reset(token)

        return wrapped

    def _stream(self, m: metrics.RpcMetrics, behavior: Behavior, stream_request: bool) -> Behavior:
        admit, abort, finish, in_flight = self._admit, self._abort, self._finish, self._in_flight

        # Must be an async generator *function*: grpc.aio picks sync/async handling by inspecting it.
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            token = _bind_request_id(context)
            start = _perf_counter()
            in_flight.inc()
            exc: BaseException | None = None
            try:
                try:
                    async for item in _drain(behavior, admit(request, stream_request), context):
                        yield item
                except grpc.aio.AbortError:
                    raise
                except Exception as e:
                    await abort(context, e, m.method)
                    raise  # not reached: abort raises
            except BaseException as e:
                exc = e
                raise
            finally:
                finish(m, context, start, exc)
                request_id_var.reset(token)

        return wrapped

    @staticmethod
    def _quiet_done(method: str, context: grpc.aio.ServicerContext, start: float, exc: BaseException | None) -> None:
        if log.isEnabledFor(_DEBUG):
            status = _status_of(context, exc)
            log.debug(
                "rpc", extra={"method": method, "status": status, "ms": round((_perf_counter() - start) * 1000, 2)}
            )

    def _quiet_unary(self, behavior: Behavior, method: str) -> Behavior:
        """Health and reflection: request id and a DEBUG access line only."""
        done = self._quiet_done

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            token = _bind_request_id(context)
            start, exc = _perf_counter(), None
            try:
                return await behavior(request, context)
            except BaseException as e:
                exc = e
                raise
            finally:
                done(method, context, start, exc)
                request_id_var.reset(token)

        return wrapped

    def _quiet_stream(self, behavior: Behavior, method: str) -> Behavior:
        done = self._quiet_done

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            token = _bind_request_id(context)
            start, exc = _perf_counter(), None
            try:
                async for item in _drain(behavior, request, context):
                    yield item
            except BaseException as e:
                exc = e
                raise
            finally:
                done(method, context, start, exc)
                request_id_var.reset(token)

        return wrapped


def default_interceptors(service: str, gate: Gate | None = None) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors every MasterX server installs (after tracing's, when tracing is on)."""
    return [RuntimeInterceptor(service, gate)]
