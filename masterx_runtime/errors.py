"""Exceptions that map to gRPC status codes.

Service code raises these; the error-mapping interceptor turns them into the status code,
a readable message and an :class:`ErrorDetail` in the ``masterx-error-bin`` trailer.
"""

from __future__ import annotations

import grpc

from masterx.common.v1 import common_pb2

ERROR_DETAIL_KEY = "masterx-error-bin"


class ServiceError(Exception):
    """Base class: an expected failure with a definite gRPC status code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, reason: str = "", field: str = "", dependency: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.field = field
        self.dependency = dependency

    def detail(self, service: str) -> common_pb2.ErrorDetail:
        return common_pb2.ErrorDetail(reason=self.reason, field=self.field, service=service, dependency=self.dependency)


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


def error_detail_from(err: grpc.aio.AioRpcError) -> common_pb2.ErrorDetail | None:
    """Read the ErrorDetail a MasterX service attached to a failed call, if any."""
    for key, value in err.trailing_metadata() or ():
        if key == ERROR_DETAIL_KEY and isinstance(value, bytes):
            return common_pb2.ErrorDetail.FromString(value)
    return None


class PeerError(ServiceError):
    """A failed call to another service, as a domain error (made by :func:`from_rpc_error`).

    ``code`` is the peer's status code; ``peer`` the service called; ``answered`` is True when the
    peer itself answered with a MasterX error (an ErrorDetail came back), False when the call
    failed before reaching it (channel down, connection refused, a proxy's error).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        peer: str,
        answered: bool,
        reason: str = "",
        field: str = "",
        dependency: str = "",
    ) -> None:
        super().__init__(message, reason=reason, field=field, dependency=dependency)
        self.code = code
        self.peer = peer
        self.answered = answered

    def relayed(self) -> ServiceError:
        """The error this service answers with when the call to ``peer`` failed: a caller's
        fault (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, RESOURCE_EXHAUSTED,
        DEADLINE_EXCEEDED) keeps its class, anything else becomes UNAVAILABLE; the message
        names the peer and its code, the reason is ``<PEER>_<CODE>``, the dependency the peer."""
        cls = _RELAYED.get(self.code, Unavailable)
        return cls(
            f"{self.peer}: {self.code.name}: {self.message}",
            reason=f"{self.peer.upper()}_{self.code.name}",
            dependency=self.peer,
        )


_RELAYED: dict[grpc.StatusCode, type[ServiceError]] = {
    cls.code: cls for cls in (InvalidArgument, NotFound, FailedPrecondition, ResourceExhausted, DeadlineExceeded)
}


def from_rpc_error(err: grpc.aio.AioRpcError, peer: str) -> PeerError:
    """The domain error for a failed call to service ``peer``: its status code and message, plus
    the reason, field and dependency of the ErrorDetail it attached (when it attached one).

    Callers decide what the failure means for them: the gateway maps ``code`` to an HTTP status
    (services/gateway/errors.py), a service relays it to its own caller with
    :meth:`PeerError.relayed`, the benchmark records a provider failure as a result.
    """
    code = err.code()
    detail = error_detail_from(err)
    return PeerError(
        code,
        err.details() or code.name.lower(),
        peer=peer,
        answered=detail is not None,
        reason=detail.reason if detail else "",
        field=detail.field if detail else "",
        dependency=detail.dependency if detail else "",
    )
