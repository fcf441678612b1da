"""MASTERX_EVENT_LOOP: which event loop a service process runs on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from masterx_runtime.server import use_event_loop


@pytest.fixture
def restore_policy() -> Iterator[None]:
    before = asyncio.get_event_loop_policy()
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(before)


def test_asyncio_leaves_the_standard_loop(restore_policy: None) -> None:
    before = asyncio.get_event_loop_policy()
    assert use_event_loop("asyncio") == "asyncio"
    assert asyncio.get_event_loop_policy() is before


def test_auto_and_uvloop_install_uvloop(restore_policy: None) -> None:
    uvloop = pytest.importorskip("uvloop")
    assert use_event_loop("auto") == "uvloop"
    assert isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
        assert loop.run_until_complete(asyncio.sleep(0, result=7)) == 7
    finally:
        loop.close()
