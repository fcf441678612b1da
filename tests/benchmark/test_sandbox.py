"""Hostile code answers are contained by the sandbox and scored 0; the service keeps working."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import tempfile
import time
from pathlib import Path

import pytest

from services.benchmark.scoring import ItemScorer, Sandbox, SandboxLimits
from services.benchmark.scoring.specs import UnitTestSpec
from tests.benchmark.harness import sandbox_processes

SPEC = UnitTestSpec("add", ("assert add(1, 2) == 3", "assert add(-1, 1) == 0"))


def _answer(code: str) -> str:
    return f"Here is the function:\n```python\n{code}\n```\n"


LIMITS = SandboxLimits(timeout_s=3.0, per_test_timeout_s=0.5, memory_mb=256, max_processes=8, output_bytes=16384)


@pytest.fixture(scope="module")
def probed() -> tuple[str, str, list[str]]:
    """Probe once per module that the isolation holds here, with which interpreter and runtime binds."""
    sandbox = Sandbox(LIMITS)
    asyncio.run(sandbox.prepare())
    return sandbox.mode, sandbox.python, sandbox.binds


@pytest.fixture
def scorer(probed: tuple[str, str, list[str]], sandbox_root: Path) -> ItemScorer:
    sandbox = Sandbox(LIMITS)
    sandbox.mode, sandbox.python, sandbox.binds = probed
    return ItemScorer(sandbox)


async def test_correct_code_passes_every_test(scorer: ItemScorer) -> None:
    score = await scorer.score(SPEC, _answer("def add(a, b):\n    return a + b"))
    assert score.quality == 100.0 and "tests passed 2/2" in score.evidence


async def test_partially_correct_code_gets_partial_credit(scorer: ItemScorer) -> None:
    score = await scorer.score(SPEC, _answer("def add(a, b):\n    return abs(a) + b"))
    assert score.quality == 50.0
    assert any(e.startswith("test 1 failed") for e in score.evidence)


@pytest.mark.parametrize(
    ("name", "code", "expect"),
    [
        ("infinite loop", "def add(a, b):\n    while True:\n        pass", "timeout|wall-clock"),
        (
            "loop that swallows the timeout",
            "def add(a, b):\n    while True:\n        try:\n            while True:\n                pass\n        except BaseException:\n            pass",
            "",
        ),
        ("top-level loop", "while True:\n    pass\ndef add(a, b):\n    return a + b", "top level"),
        ("fork bomb", "import os\ndef add(a, b):\n    while True:\n        os.fork()", ""),
        ("huge allocation", "def add(a, b):\n    block = bytearray(8 * 1024 ** 3)\n    return a + b", "MemoryError"),
        ("output flood", "def add(a, b):\n    while True:\n        print('x' * 4096)", "output limit"),
        ("syntax error", "def add(a, b) return a + b", "does not compile"),
        ("exits the interpreter", "import os\ndef add(a, b):\n    os._exit(0)", "exited early"),
    ],
)
async def test_hostile_answers_are_contained_and_scored_zero(
    scorer: ItemScorer, sandbox_root: Path, name: str, code: str, expect: str
) -> None:
    started = time.monotonic()
    score = await scorer.score(SPEC, _answer(code))
    assert score.quality == 0.0, (name, score.evidence)
    assert time.monotonic() - started < 6.0, name  # the 3 s wall-clock limit plus slack on a loaded machine
    assert re.search(expect, " ".join(score.evidence)), (name, score.evidence)
    await asyncio.sleep(0.05)
    assert sandbox_processes(sandbox_root) == [], f"{name}: sandbox processes left behind"


async def test_network_calls_never_leave_the_sandbox(scorer: ItemScorer) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        code = (
            "import socket, urllib.request\n"
            "def add(a, b):\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'leak')\n"
            "    return a + b\n"
        )
        score = await scorer.score(SPEC, _answer(code))
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected
    assert score.quality == 0.0
    assert any("test 0 failed" in e for e in score.evidence), score.evidence
    dns = "import urllib.request\ndef add(a, b):\n    urllib.request.urlopen('http://example.com', timeout=2)\n    return a + b"
    assert (await scorer.score(SPEC, _answer(dns))).quality == 0.0


async def test_background_process_that_escapes_the_group_dies_with_the_run(
    scorer: ItemScorer, sandbox_root: Path
) -> None:
    if scorer.sandbox.mode != "namespaces":
        pytest.skip("needs a PID namespace (rlimits mode documents this gap)")
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "def add(a, b):\n"
        "    return a + b\n"
    )
    score = await scorer.score(SPEC, _answer(code))
    assert score.quality == 100.0
    await asyncio.sleep(0.1)
    assert sandbox_processes(sandbox_root) == []


async def test_answer_cannot_write_outside_its_directory_when_service_is_root(scorer: ItemScorer) -> None:
    if os.geteuid() != 0:
        pytest.skip("privilege drop only happens when the service runs as root")
    with tempfile.TemporaryDirectory() as protected:
        target = Path(protected) / "owned.txt"
        code = f"def add(a, b):\n    open({str(target)!r}, 'w').write('x')\n    return a + b"
        score = await scorer.score(SPEC, _answer(code))
        assert score.quality == 0.0
        assert not target.exists()


async def test_service_is_unharmed_after_hostile_runs(scorer: ItemScorer) -> None:
    bomb = "import os\ndef add(a, b):\n    while True:\n        os.fork()"
    results = await asyncio.gather(
        scorer.score(SPEC, _answer(bomb)),
        scorer.score(SPEC, _answer("def add(a, b):\n    return a + b")),
        scorer.score(SPEC, _answer("def add(a, b):\n    x = [0] * (10 ** 10)")),
        scorer.score(SPEC, _answer("def add(a, b):\n    return b + a")),
    )
    assert [r.quality for r in results] == [0.0, 100.0, 0.0, 100.0]
