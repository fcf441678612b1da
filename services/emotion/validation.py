"""Request validation: texts, ids, context ranges, and readable errors for undecodable requests.

Python protobuf rejects a string field holding invalid UTF-8 while parsing, before any handler
runs, and gRPC would answer INTERNAL "Exception deserializing request!". :func:`lenient`
wraps a message's parser so such requests reach the handler as a :class:`BadRequest` that names
the offending field; the handler turns it into INVALID_ARGUMENT (or, in StreamAnalyze, into a
response with ``error`` set while the stream goes on).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from masterx.common.v1 import common_pb2
from masterx_runtime.errors import InvalidArgument
from masterx_runtime.validation import USER_ID_RE as USER_ID_RE  # the one rule (input_limits.json)
from services.emotion.learning import StudentContext

M = TypeVar("M", bound=Message)

TURN_ID_RE = re.compile(r"^[A-Za-z0-9_.:@\-]{1,128}$")
SESSION_ID_MAX = 128
MAX_TIME_ON_TASK_SECONDS = 7 * 24 * 3600.0
# Characters that render as nothing but str.isspace() does not count as space.
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"


@dataclass(frozen=True)
class BadRequest:
    """Stands in for a request that could not be decoded."""

    message: str
    field: str = ""
    request_id: str = ""

    def error(self) -> InvalidArgument:
        return InvalidArgument(
            self.message, reason="INVALID_UTF8" if self.field else "MALFORMED_REQUEST", field=self.field
        )


# ---- wire-format walk (only used on the error path) --------------------------------------------
def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(field number, wire type, payload) of every field; payload empty unless length-delimited."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
            yield number, wire, b""
        elif wire == 1:
            pos += 8
            yield number, wire, b""
        elif wire == 5:
            pos += 4
            yield number, wire, b""
        elif wire == 2:
            n, pos = _varint(data, pos)
            if pos + n > len(data):
                raise ValueError("truncated field")
            yield number, wire, data[pos : pos + n]
            pos += n
        else:
            raise ValueError(f"unsupported wire type {wire}")


def invalid_utf8_field(data: bytes, desc: Any, prefix: str = "") -> str | None:
    """Path (e.g. ``items[2].text``) of the first string field holding invalid UTF-8, if any."""
    by_number = {f.number: f for f in desc.fields}
    seen: dict[int, int] = {}
    for number, wire, payload in _fields(data):
        f = by_number.get(number)
        if f is None or wire != 2:
            continue
        index = seen.get(number, 0)
        seen[number] = index + 1
        name = f"{prefix}{f.name}" + (f"[{index}]" if f.is_repeated else "")
        if f.type == FieldDescriptor.TYPE_STRING:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                return name
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            inner = invalid_utf8_field(payload, f.message_type, name + ".")
            if inner:
                return inner
    return None


def _string_field(data: bytes, number: int) -> str:
    try:
        for n, wire, payload in _fields(data):
            if n == number and wire == 2:
                return payload.decode("utf-8", errors="replace")
    except ValueError:
        pass
    return ""


def lenient(cls: type[M], request_id_field: int | None = None) -> Callable[[bytes], M | BadRequest]:
    """A request deserializer that returns :class:`BadRequest` instead of failing the call."""

    def parse(data: bytes) -> M | BadRequest:
        try:
            return cls.FromString(data)
        except DecodeError:
            try:
                path = invalid_utf8_field(data, cls.DESCRIPTOR)
            except ValueError:
                path = None
            rid = _string_field(data, request_id_field) if request_id_field else ""
            if path:
                return BadRequest(f"{path} is not valid UTF-8", field=path, request_id=rid)
            return BadRequest(f"request is not a valid {cls.DESCRIPTOR.name} message", request_id=rid)

    return parse


# ---- field checks -------------------------------------------------------------------------------
def check_text(text: str, max_bytes: int, field: str = "text") -> None:
    """Non-empty, not only whitespace, at most ``max_bytes`` UTF-8 bytes."""
    if not text or not text.strip(_INVISIBLE + " \t\n\r\x0b\x0c").strip():
        raise InvalidArgument(f"{field} is empty or only whitespace", reason="EMPTY_TEXT", field=field)
    if len(text) * 4 > max_bytes:  # cheap check first: 4 bytes per character at most
        size = len(text.encode("utf-8"))
        if size > max_bytes:
            raise InvalidArgument(
                f"{field} is {size} bytes; the limit is {max_bytes} bytes (EMOTION_MAX_TEXT_BYTES)",
                reason="TEXT_TOO_LARGE",
                field=field,
            )


def check_user_id(user_id: str, field: str = "user_id", *, required: bool = False) -> None:
    if not user_id:
        if required:
            raise InvalidArgument(f"{field} is required", reason="MISSING_USER_ID", field=field)
        return
    if not USER_ID_RE.match(user_id):
        raise InvalidArgument(
            f"{field} must be 1-128 characters of letters, digits and _ . : @ -",
            reason="MALFORMED_USER_ID",
            field=field,
        )


def is_turn_id(value: str) -> bool:
    """True when ``value`` can name a stored turn (1-128 of letters, digits and _ . : @ -)."""
    return bool(TURN_ID_RE.match(value))


def check_turn_id(turn_id: str, field: str = "turn_id") -> None:
    if not is_turn_id(turn_id):
        raise InvalidArgument(
            f"{field} must be 1-128 characters of letters, digits and _ . : @ - (the request_id of an answer)",
            reason="MALFORMED_TURN_ID",
            field=field,
        )


def check_session_id(session_id: str, field: str = "session_id") -> None:
    if len(session_id) > SESSION_ID_MAX:
        raise InvalidArgument(
            f"{field} is longer than {SESSION_ID_MAX} characters", reason="MALFORMED_SESSION_ID", field=field
        )


def context_from_proto(ctx: common_pb2.StudentContext, field: str = "context") -> StudentContext | None:
    """Validated context; ``None`` when no field is set."""
    engagement = ctx.engagement if ctx.HasField("engagement") else None
    load = ctx.cognitive_load if ctx.HasField("cognitive_load") else None
    seconds = ctx.time_on_task_seconds if ctx.HasField("time_on_task_seconds") else None
    for name, value in (("engagement", engagement), ("cognitive_load", load)):
        if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise InvalidArgument(
                f"{field}.{name} must be in [0, 1], got {value}", reason="OUT_OF_RANGE", field=f"{field}.{name}"
            )
    if seconds is not None and not (math.isfinite(seconds) and 0.0 <= seconds <= MAX_TIME_ON_TASK_SECONDS):
        raise InvalidArgument(
            f"{field}.time_on_task_seconds must be in [0, {MAX_TIME_ON_TASK_SECONDS:.0f}], got {seconds}",
            reason="OUT_OF_RANGE",
            field=f"{field}.time_on_task_seconds",
        )
    if engagement is None and load is None and seconds is None:
        return None
    return StudentContext(engagement, load, seconds)


def unwrap(request: Any) -> Any:
    """Raise INVALID_ARGUMENT for a request that could not be decoded."""
    if isinstance(request, BadRequest):
        raise request.error()
    return request
