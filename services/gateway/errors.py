"""HTTP errors of the gateway, and how a failed gRPC call becomes one.

Every error leaves the gateway as ``{"error": {...}}`` with the HTTP status, the gRPC-style
code, a readable message and the service that failed. The shape is also what the OpenAI
clients read (``error.message``), so one error format serves every endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import grpc

from masterx_runtime.errors import error_detail_from

#: gRPC status -> HTTP status. FAILED_PRECONDITION is 409 (state conflict, e.g. an open breaker
#: or cancelling a finished run); everything not listed is a bad gateway (502).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

#: OpenAI-style error "type" per HTTP status, so OpenAI SDKs classify errors the usual way.
_ERROR_TYPE: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    499: "cancelled",
    501: "not_implemented_error",
    503: "service_unavailable",
    504: "timeout_error",
}


@dataclass
class GatewayError(Exception):
    """An error answer: HTTP status plus the JSON body fields."""

    status: int
    code: str
    message: str
    service: str = ""
    reason: str = ""
    field: str = ""
    dependency: str = ""
    headers: dict[str, str] = dc_field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self, request_id: str = "") -> dict[str, Any]:
        err: dict[str, Any] = {
            "status": self.status,
            "code": self.code,
            "type": _ERROR_TYPE.get(self.status, "server_error"),
            "message": self.message,
            "service": self.service,
        }
        for key in ("reason", "field", "dependency"):
            if value := getattr(self, key):
                err[key] = value
        if request_id:
            err["request_id"] = request_id
        # OpenAI clients read error.param too; keep it present.
        err["param"] = self.field or None
        return {"error": err}


def from_rpc_error(err: grpc.aio.AioRpcError, service: str) -> GatewayError:
    """Map a failed call to ``service`` onto the HTTP error the client sees."""
    code = err.code()
    status = HTTP_STATUS.get(code, 502)
    detail = error_detail_from(err)
    message = err.details() or code.name.lower()
    if code == grpc.StatusCode.UNAVAILABLE and not detail:
        message = f"{service} service unavailable: {message}"
    elif code == grpc.StatusCode.UNIMPLEMENTED:
        message = f"{service} service does not implement this call yet: {message}"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"{service} service did not answer in time: {message}"
    return GatewayError(
        status=status,
        code=code.name,
        message=message,
        service=service,
        reason=detail.reason if detail else "",
        field=detail.field if detail else "",
        dependency=detail.dependency if detail else "",
    )


def bad_request(message: str, field: str = "", status: int = 400) -> GatewayError:
    """A request the gateway itself rejects before calling any service."""
    code = {400: "INVALID_ARGUMENT", 413: "PAYLOAD_TOO_LARGE", 422: "INVALID_ARGUMENT"}.get(status, "INVALID_ARGUMENT")
    return GatewayError(status=status, code=code, message=message, service="gateway", field=field)
