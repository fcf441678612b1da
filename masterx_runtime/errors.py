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


class Cancelled(ServiceError):
    code = grpc.StatusCode.CANCELLED


def error_detail_from(err: grpc.aio.AioRpcError) -> common_pb2.ErrorDetail | None:
    """Read the ErrorDetail a MasterX service attached to a failed call, if any."""
    for key, value in err.trailing_metadata() or ():
        if key == ERROR_DETAIL_KEY and isinstance(value, bytes):
            return common_pb2.ErrorDetail.FromString(value)
    return None
