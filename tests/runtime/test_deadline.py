"""Deadline (one value for the caller's gRPC deadline) and from_rpc_error (a peer's status as a domain error)."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from masterx.common.v1 import common_pb2
from masterx_runtime.deadline import Deadline
from masterx_runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
    from_rpc_error,
)
from masterx_runtime.testing.grpc_server import rpc_error


class Context:
    def __init__(self, left: float | None) -> None:
        self.left = left

    def time_remaining(self) -> float | None:
        return self.left


def test_deadline_from_context_counts_down_on_the_monotonic_clock() -> None:
    d = Deadline.from_context(Context(2.0))
    left = d.remaining()
    assert left is not None and 1.9 < left <= 2.0
    at = d.at()
    assert at is not None and abs(at - (time.monotonic() + 2.0)) < 0.1
    assert d.remaining(cap=0.5) == 0.5
    assert not d.expired()
    early = d.earlier(1.5).remaining()
    assert early is not None and early <= 0.5


def test_no_deadline_uses_the_default_or_stays_unbounded() -> None:
    assert Deadline.from_context(Context(None)).remaining() is None
    assert Deadline.from_context(Context(None)).at() is None
    assert Deadline.from_context(Context(None)).remaining(cap=3.0) == 3.0
    defaulted = Deadline.from_context(Context(None), default=5.0).remaining()
    assert defaulted is not None and 4.9 < defaulted <= 5.0
    # grpc reports "no deadline" as a huge number on some paths
    assert Deadline.from_context(Context(1e12)).at() is None


def test_passed_deadline_is_zero_never_negative() -> None:
    d = Deadline.from_context(Context(-1.0))
    assert d.remaining() == 0.0
    assert d.expired()


async def test_run_gives_up_when_the_deadline_passes() -> None:
    assert await Deadline.none().run(asyncio.sleep(0, result=7)) == 7
    with pytest.raises(TimeoutError):
        await Deadline.after(0.05).run(asyncio.sleep(5))


def test_from_rpc_error_carries_code_message_and_detail() -> None:
    detail = common_pb2.ErrorDetail(reason="UNKNOWN_PROVIDER", field="pinned_provider", service="router")
    exc = from_rpc_error(rpc_error(grpc.StatusCode.NOT_FOUND, "no provider 'x'", detail), "router")
    assert exc.code == grpc.StatusCode.NOT_FOUND
    assert (exc.message, exc.reason, exc.field, exc.peer, exc.answered) == (
        "no provider 'x'",
        "UNKNOWN_PROVIDER",
        "pinned_provider",
        "router",
        True,
    )
    bare = from_rpc_error(rpc_error(grpc.StatusCode.UNAVAILABLE, ""), "router")
    assert (bare.message, bare.answered) == ("unavailable", False)


@pytest.mark.parametrize(
    ("code", "relayed"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
        (grpc.StatusCode.INTERNAL, Unavailable),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
    ],
)
def test_relayed_error_names_the_peer(code: grpc.StatusCode, relayed: type) -> None:
    out = from_rpc_error(rpc_error(code, "boom"), "router").relayed()
    assert type(out) is relayed
    assert out.code == relayed.code
    assert out.message == f"router: {code.name}: boom"
    assert (out.reason, out.dependency, out.field) == (f"ROUTER_{code.name}", "router", "")
