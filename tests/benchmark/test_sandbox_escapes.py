"""Each escape the security review found, tried by real hostile answer code on a real coding item (``fib``).

The hostile answers compute ``fib`` correctly only when their escape attempt FAILED, so a score of
100 means "contained, and the sandbox still runs code". Where the weaker ``rlimits`` mode lets the
same attack through, a control run shows the probe is real (score 0 there).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.benchmark.scoring import ItemScorer, Sandbox, SandboxLimits, SandboxUnavailable
from services.benchmark.scoring import sandbox as sandbox_module
from services.benchmark.scoring.sandbox import collapse_binds
from services.benchmark.scoring.specs import UnitTestSpec
from services.benchmark.suite import load_suites

LIMITS = SandboxLimits(timeout_s=5.0, per_test_timeout_s=1.0, memory_mb=256, max_processes=8, output_bytes=16384)
FIB_ITEM = next(
    item
    for suite in load_suites().values()
    for item in suite.items
    if isinstance(item.spec, UnitTestSpec) and item.spec.entry_point == "fib"
)
SPEC = FIB_ITEM.spec
assert isinstance(SPEC, UnitTestSpec)
PROJECT_FILE = Path(__file__).resolve().parents[2] / "README.md"

FIB = "def _real_fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n"


def _answer(attack: str) -> str:
    """An answer whose fib is right only if ``attack`` left ``LEAK`` falsy."""
    body = f"{attack}\n\n{FIB}\n\ndef fib(n):\n    return -1 if LEAK else _real_fib(n)\n"
    return f"Here you go:\n```python\n{body}```\n"


def _world_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def strict() -> Sandbox:
    sandbox = Sandbox(LIMITS, isolation="namespaces")
    asyncio.run(sandbox.prepare())
    return sandbox


@pytest.fixture(scope="module")
def weak() -> Sandbox:
    sandbox = Sandbox(LIMITS, isolation="rlimits")
    asyncio.run(sandbox.prepare())
    return sandbox


@pytest.fixture
def store_dir() -> Iterator[Path]:
    """A world-readable fake store (the review's `.masterx` files) outside the sandbox."""
    root = _world_dir("mx-store-")
    data = root / ".masterx" / "mongo"
    data.mkdir(parents=True)
    for part in (root / ".masterx", data):
        part.chmod(0o755)
    secret = data / "students.json"
    secret.write_text('{"user_id": "student-87"}')
    secret.chmod(0o644)
    yield secret
    shutil.rmtree(root, ignore_errors=True)


async def _score(sandbox: Sandbox, attack: str) -> tuple[float, tuple[str, ...]]:
    score = await ItemScorer(sandbox).score(SPEC, _answer(attack))
    return score.quality, score.evidence


async def test_answer_cannot_read_store_project_or_home(strict: Sandbox, weak: Sandbox, store_dir: Path) -> None:
    attack = (
        "import os, sys\n"
        "RUNTIME = set(sys.base_prefix.split('/'))\n"  # the runtime's own path parts may show (e.g. /root/.pyenv)
        "LEAK = []\n"
        f"for path in ({str(store_dir)!r}, {str(PROJECT_FILE)!r}):\n"
        "    try:\n"
        "        LEAK.append(open(path).read(100))\n"
        "    except OSError:\n"
        "        pass\n"
        f"for path in ({str(store_dir.parent)!r}, {str(PROJECT_FILE.parent)!r}, {str(Path.home())!r}):\n"
        "    try:\n"
        "        LEAK.extend(n for n in os.listdir(path) if n not in RUNTIME)\n"
        "    except OSError:\n"
        "        pass\n"
    )
    quality, evidence = await _score(strict, attack)
    assert quality == 100.0, evidence
    control, _ = await _score(weak, attack)
    assert control == 0.0  # without the private root the same code reads the store file


async def test_answer_cannot_connect_to_host_unix_sockets(strict: Sandbox, weak: Sandbox) -> None:
    folder = _world_dir("mx-sock-")
    path = folder / "service.sock"
    abstract = "\0mx-test-" + secrets.token_hex(6)
    with socket.socket(socket.AF_UNIX) as on_path, socket.socket(socket.AF_UNIX) as on_abstract:
        on_path.bind(str(path))
        path.chmod(0o777)
        on_abstract.bind(abstract)
        for server in (on_path, on_abstract):
            server.listen(8)
            server.setblocking(False)
        attack = (
            "import _socket\n"  # the C module: the Python-level socket block of rlimits mode does not stop it
            "LEAK = []\n"
            f"for address in ({str(path)!r}, {abstract!r}):\n"
            "    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)\n"
            "    try:\n"
            "        s.connect(address)\n"
            "        s.send(b'leak')\n"
            "        LEAK.append(address)\n"
            "    except OSError:\n"
            "        pass\n"
            "    s.close()\n"
        )
        try:
            quality, evidence = await _score(strict, attack)
            for server in (on_path, on_abstract):
                with pytest.raises(BlockingIOError):
                    server.accept()  # nothing ever connected
            assert quality == 100.0, evidence
            control, _ = await _score(weak, attack)
            assert control == 0.0
        finally:
            shutil.rmtree(folder, ignore_errors=True)


async def test_answer_leaves_nothing_in_dev_shm_or_tmp_and_is_size_capped(strict: Sandbox) -> None:
    token = secrets.token_hex(6)
    attack = (
        "import os\n"
        "LEAK = False\n"
        "written = 0\n"
        "for folder in ('/dev/shm', '/tmp'):\n"
        "    for i in range(12):\n"
        "        try:\n"
        f"            with open(f'{{folder}}/mx-leak-{token}-{{i}}', 'wb') as f:\n"
        "                f.write(b'x' * (4 << 20))\n"
        "            written += 4 << 20\n"
        "        except OSError:\n"
        "            break\n"
        "LEAK = written < (8 << 20) or written > (40 << 20)\n"  # it could write a little, never 48 MB per folder
    )
    quality, evidence = await _score(strict, attack)
    assert quality == 100.0, evidence
    for folder in ("/dev/shm", "/tmp", tempfile.gettempdir()):
        assert not [p for p in os.listdir(folder) if token in p], folder


async def test_answer_sees_no_host_process(strict: Sandbox, weak: Sandbox) -> None:
    attack = (
        "import os\n"
        "PIDS = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        f"LEAK = len(PIDS) > 4 or os.path.exists('/proc/{os.getpid()}')\n"
    )
    quality, evidence = await _score(strict, attack)
    assert quality == 100.0, evidence
    control, _ = await _score(weak, attack)
    assert control == 0.0


async def test_answer_cannot_read_the_service_environment(strict: Sandbox, weak: Sandbox) -> None:
    """Store URLs and keys live in the service's environment: unreadable in both modes."""
    attack = (
        f"LEAK = b''\ntry:\n    LEAK = open('/proc/{os.getpid()}/environ', 'rb').read()\nexcept OSError:\n    pass\n"
    )
    for sandbox in (strict, weak):
        quality, evidence = await _score(sandbox, attack)
        assert quality == 100.0, (sandbox.mode, evidence)


FORGER = """
import gc, json, os, stat

FAKE = [json.dumps({"kind": "test", "index": i, "ok": True}) for i in range(8)] + [json.dumps({"kind": "done"})]
LINES = "\\n".join(FAKE) + "\\n"
# the old trick: find the harness's nonce and print result lines with it
for obj in gc.get_objects():
    if isinstance(obj, dict) and "nonce" in obj:
        LINES += "".join("@@" + str(obj["nonce"]) + "@@" + line + "\\n" for line in FAKE)
print(LINES, flush=True)
for fd in range(64):
    try:
        if stat.S_ISSOCK(os.fstat(fd).st_mode):
            continue  # the call channel: what comes back on it is only ever a returned value
        os.write(fd, LINES.encode())
    except OSError:
        pass
for target in ["/proc/1/fd/2", "/proc/%d/fd/2" % os.getppid(), "/proc/self/fd/2"]:
    try:
        with open(target, "w") as f:
            f.write(LINES)
    except OSError:
        pass


class Anything(int):
    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


def fib(n):
    return Anything(-1)
"""


async def test_answer_cannot_forge_its_score(strict: Sandbox, weak: Sandbox) -> None:
    """A wrong fib that forges verdict lines everywhere it can reach still scores 0, in both modes."""
    for sandbox in (strict, weak):
        score = await ItemScorer(sandbox).score(SPEC, f"```python\n{FORGER}```")
        assert score.quality == 0.0, (sandbox.mode, score.evidence)
        assert "tests passed 0/4" in score.evidence, score.evidence


async def test_namespaces_required_unless_weaker_mode_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine where unshare fails: strict refuses with a clear error; auto falls back; rlimits runs."""
    monkeypatch.setattr(sandbox_module, "_NAMESPACES", ("unshare", "--no-such-namespace-flag"))
    with pytest.raises(SandboxUnavailable, match="BENCHMARK_SANDBOX_ISOLATION=rlimits"):
        await Sandbox(LIMITS, isolation="namespaces").prepare()
    fallback = Sandbox(LIMITS, isolation="auto")
    await fallback.prepare()
    assert fallback.mode == "rlimits"
    refused = Sandbox(LIMITS)
    with pytest.raises(SandboxUnavailable, match="not prepared"):
        await refused.run("def fib(n):\n    return n", ["assert fib(1) == 1"])


def test_binds_never_expose_the_project_or_home(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "sub").mkdir()
    project = tmp_path / "project"
    project.mkdir()
    assert collapse_binds([str(tmp_path / "lib" / "sub"), str(tmp_path / "lib")], [project]) == [str(tmp_path / "lib")]
    with pytest.raises(SandboxUnavailable, match="would expose"):
        collapse_binds([str(tmp_path)], [project])
