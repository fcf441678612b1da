"""The shared input rules (masterx_runtime.validation) over EVERY request message of EVERY RPC.

For each RPC of the five services, each string field gets a value one over its cap, each float
field NaN and infinity, each user id field an id breaking the rule, each bounded number a value
past its range: the check must raise INVALID_ARGUMENT naming that field (nested paths included).
The same check runs as the innermost server interceptor of every service, so this is what each
servicer answers before its own code runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from pydantic import TypeAdapter, ValidationError

from masterx.benchmark.v1 import benchmark_pb2
from masterx.common.v1 import common_pb2
from masterx.emotion.v1 import emotion_pb2
from masterx.reasoning.v1 import reasoning_pb2
from masterx.router.v1 import router_pb2
from masterx_runtime.errors import InvalidArgument
from masterx_runtime.validation import (
    RULES,
    USER_ID_RE,
    check_request,
    check_user_id,
    request_violations,
    unknown_rule_fields,
)
from services.gateway.schemas import OptionalUserId

MODULES = (emotion_pb2, reasoning_pb2, router_pb2, benchmark_pb2)


def request_types() -> list[Descriptor]:
    found: dict[str, Descriptor] = {}
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found[method.input_type.full_name] = method.input_type
    return list(found.values())


def _paths(descriptor: Descriptor, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, FieldDescriptor]]:
    """(path, field) of every scalar field reachable through singular message fields."""
    if depth > 4:
        return
    for fd in descriptor.fields:
        path = f"{prefix}.{fd.name}" if prefix else fd.name
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            assert fd.message_type is not None
            if not fd.is_repeated and not fd.message_type.GetOptions().map_entry:
                if fd.message_type.full_name.startswith("google.protobuf."):
                    continue
                yield from _paths(fd.message_type, path, depth + 1)
            continue
        yield path, fd


def _set(message: Message, path: str, value: object) -> None:
    *parents, leaf = path.split(".")
    target = message
    for name in parents:
        target = getattr(target, name)
    fd = target.DESCRIPTOR.fields_by_name[leaf]
    if fd.is_repeated:
        getattr(target, leaf).append(value)
    else:
        setattr(target, leaf, value)


def _expect(message: Message, path: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_request(message)
    err = caught.value
    assert err.field.replace("[0]", "") == path, (message.DESCRIPTOR.full_name, err.field, err.message)
    assert err.reason == reason and path.split(".")[-1] in err.message


REQUESTS = request_types()


def test_every_service_has_requests_to_check() -> None:
    assert len(REQUESTS) >= 25
    every = [d for m in (*MODULES, common_pb2) for d in m.DESCRIPTOR.message_types_by_name.values()]
    assert unknown_rule_fields(every) == []  # no rule names a field that does not exist


@pytest.mark.parametrize("descriptor", REQUESTS, ids=lambda d: d.full_name)
def test_every_field_of_every_request_is_checked(descriptor: Descriptor) -> None:
    cls = GetMessageClass(descriptor)
    cls()  # an empty request passes the shared rules (the service decides what is required)
    check_request(cls())
    for path, fd in _paths(descriptor):
        if fd.type == FieldDescriptor.TYPE_STRING:
            msg = cls()
            _set(msg, path, "x" * (RULES.string_cap(fd) + 1))
            _expect(msg, path, "TOO_LONG")
            if fd.name in RULES.user_id_fields:
                msg = cls()
                _set(msg, path, "no spaces; allowed")
                _expect(msg, path, "INVALID_USER_ID")
        elif fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            for bad in (math.nan, math.inf, -math.inf):
                msg = cls()
                _set(msg, path, bad)
                _expect(msg, path, "NOT_FINITE")
        bounds = RULES.numbers.get(fd.full_name)
        if bounds is not None:
            msg = cls()
            _set(msg, path, type(fd.default_value)(bounds[1]) + 1)
            _expect(msg, path, "OUT_OF_RANGE")


def test_repeated_and_nested_paths_are_named() -> None:
    gen = router_pb2.GenerateRequest()
    gen.messages.add(role="user", content="ok")
    gen.messages.add(role="user", content="x" * (RULES.max_string_chars + 1))
    assert [v.field for v in request_violations(gen)] == ["messages[1].content"]
    big = reasoning_pb2.AllocateBudgetRequest(query="q" * 1_000_000)
    with pytest.raises(InvalidArgument, match="query: longer than 16000 characters"):
        check_request(big)


@pytest.mark.parametrize(
    ("value", "ok"),
    [("s-42", True), ("a@b.example", True), ("x" * 128, True), ("x" * 129, False), ("a b", False), ("é", False)],
)
def test_one_user_id_rule_for_gateway_and_services(value: str, ok: bool) -> None:
    assert bool(USER_ID_RE.match(value)) is ok
    gateway = TypeAdapter(OptionalUserId)
    if ok:
        assert gateway.validate_python(value) == value
        assert check_user_id(value) == value
    else:
        with pytest.raises(ValidationError):
            gateway.validate_python(value)
        with pytest.raises(InvalidArgument):
            check_user_id(value)
    assert gateway.validate_python("") == ""  # optional ids may be empty
