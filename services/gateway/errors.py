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

from masterx_runtime.errors import PeerError
from masterx_runtime.errors import from_rpc_error as peer_error

_C = grpc.StatusCode


@dataclass(frozen=True)
class HttpError:
    """One HTTP status the gateway answers with: the ``code`` written in the body when the gateway
    itself raises it, the OpenAI-style ``type`` (so OpenAI SDKs classify errors the usual way),
    and the gRPC status codes of a failed service call that become this HTTP status."""

    status: int
    code: str
    type: str
    grpc: tuple[grpc.StatusCode, ...] = ()


#: THE HTTP error table (change an error mapping here, nowhere else). A gRPC status not listed
#: becomes 502 (bad gateway); an HTTP status not listed gets code HTTP_ERROR, type server_error.
#: FAILED_PRECONDITION is 409 (state conflict, e.g. an open breaker or cancelling a finished run).
HTTP_ERRORS: tuple[HttpError, ...] = (
    HttpError(400, "INVALID_ARGUMENT", "invalid_request_error", (_C.INVALID_ARGUMENT, _C.OUT_OF_RANGE)),
    HttpError(401, "UNAUTHENTICATED", "authentication_error", (_C.UNAUTHENTICATED,)),
    HttpError(403, "PERMISSION_DENIED", "permission_error", (_C.PERMISSION_DENIED,)),
    HttpError(404, "NOT_FOUND", "not_found_error", (_C.NOT_FOUND,)),
    HttpError(405, "METHOD_NOT_ALLOWED", "server_error"),
    HttpError(409, "FAILED_PRECONDITION", "conflict_error", (_C.ALREADY_EXISTS, _C.ABORTED, _C.FAILED_PRECONDITION)),
    HttpError(413, "PAYLOAD_TOO_LARGE", "invalid_request_error"),
    HttpError(415, "UNSUPPORTED_MEDIA_TYPE", "server_error"),
    HttpError(422, "INVALID_ARGUMENT", "invalid_request_error"),
    HttpError(429, "RESOURCE_EXHAUSTED", "rate_limit_error", (_C.RESOURCE_EXHAUSTED,)),
    HttpError(499, "CANCELLED", "cancelled", (_C.CANCELLED,)),
    HttpError(500, "INTERNAL", "server_error"),
    HttpError(501, "UNIMPLEMENTED", "not_implemented_error", (_C.UNIMPLEMENTED,)),
    HttpError(502, "INTERNAL", "server_error"),
    HttpError(503, "UNAVAILABLE", "service_unavailable", (_C.UNAVAILABLE,)),
    HttpError(504, "DEADLINE_EXCEEDED", "timeout_error", (_C.DEADLINE_EXCEEDED,)),
)
_BY_STATUS: dict[int, HttpError] = {e.status: e for e in HTTP_ERRORS}
_UNLISTED = HttpError(0, "HTTP_ERROR", "server_error")

#: gRPC status -> HTTP status (derived from :data:`HTTP_ERRORS`).
HTTP_STATUS: dict[grpc.StatusCode, int] = {code: e.status for e in HTTP_ERRORS for code in e.grpc}


def http_row(status: int) -> HttpError:
    """The table row of HTTP ``status`` (code HTTP_ERROR, type server_error when unlisted)."""
    return _BY_STATUS.get(status, _UNLISTED)


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
            "type": http_row(self.status).type,
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
    return from_peer_error(peer_error(err, service))


def from_peer_error(exc: PeerError) -> GatewayError:
    """The HTTP error for a failed call (a :class:`PeerError` from masterx_runtime.errors)."""
    code, service, message = exc.code, exc.peer, exc.message
    if code == grpc.StatusCode.UNAVAILABLE and not exc.answered:
        message = f"{service} service unavailable: {message}"
    elif code == grpc.StatusCode.UNIMPLEMENTED:
        message = f"{service} service does not implement this call yet: {message}"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"{service} service did not answer in time: {message}"
    return GatewayError(
        status=HTTP_STATUS.get(code, 502),
        code=code.name,
        message=message,
        service=service,
        reason=exc.reason,
        field=exc.field,
        dependency=exc.dependency,
    )


def bad_request(message: str, field: str = "", status: int = 400) -> GatewayError:
    """A request the gateway itself rejects before calling any service (400, 413 or 422)."""
    return GatewayError(status=status, code=http_row(status).code, message=message, service="gateway", field=field)
