"""Run untrusted code from a provider's answer against unit tests, contained.

Each run is a fresh interpreter (``python -I -S -B``) in a fresh temporary directory with a
minimal environment, started in its own session. What is enforced (see docs/benchmark.md):

* ``namespaces`` isolation (preferred, chosen when ``unshare`` works): a new network namespace
  (only a downed loopback: no network at all) and a new PID namespace whose init is the child,
  so when the child dies or is killed every process it started dies with it; when the service
  runs as root the child also drops to ``nobody`` before the answer's code is compiled.
* ``rlimits`` isolation (fallback): socket creation is patched to fail inside the child
  (best effort: C extensions could bypass it) and only the process group is killed.
* Always: RLIMIT_AS (memory), RLIMIT_CPU, RLIMIT_NPROC (fork bombs), RLIMIT_FSIZE,
  RLIMIT_NOFILE, no core dumps, a wall-clock limit for the whole run and one per test, a cap on
  the output read back, and SIGKILL to the whole process group on any limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.benchmark.metrics import SANDBOX_RUNS, SANDBOX_SECONDS

log = logging.getLogger("masterx.benchmark.sandbox")

CHILD_SOURCE = (Path(__file__).with_name("sandbox_child.py")).read_text(encoding="utf-8")
NOBODY_UID = 65534
NOBODY_GID = 65534
_UNSHARE = ("unshare", "--net", "--pid", "--fork", "--kill-child")
_OUTPUT_TAIL = 2000


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one sandboxed run."""

    timeout_s: float = 10.0
    per_test_timeout_s: float = 3.0
    memory_mb: int = 256
    max_processes: int = 16
    output_bytes: int = 64 * 1024
    file_bytes: int = 8 * 1024 * 1024
    open_files: int = 64


@dataclass(frozen=True)
class TestOutcome:
    index: int
    ok: bool
    error: str = ""


@dataclass
class SandboxResult:
    """What happened to one answer: per-test outcomes plus why the run stopped early, if it did."""

    total: int
    tests: list[TestOutcome] = field(default_factory=list)
    compile_error: str = ""
    module_error: str = ""
    timed_out: bool = False
    output_exceeded: bool = False
    finished: bool = False
    exit_code: int | None = None
    duration_ms: float = 0.0
    output_tail: str = ""

    @property
    def passed(self) -> int:
        return sum(1 for t in self.tests if t.ok)

    @property
    def contained_failure(self) -> str:
        """A non-empty reason when the run was stopped by a limit or never completed."""
        if self.timed_out:
            return "killed: wall-clock limit"
        if self.output_exceeded:
            return "killed: output limit"
        if self.compile_error:
            return f"does not compile: {self.compile_error}"
        if self.module_error:
            return f"answer failed at top level: {self.module_error}"
        if not self.finished:
            return f"sandbox exited early (exit code {self.exit_code})"
        return ""


class SandboxUnavailable(RuntimeError):
    """No isolation mode works on this machine (not even plain subprocesses)."""


class Sandbox:
    """Runs answers in contained subprocesses; at most ``concurrency`` at once."""

    def __init__(
        self,
        limits: SandboxLimits,
        *,
        concurrency: int = 2,
        python: str = "",
        isolation: str = "auto",
    ) -> None:
        if isolation not in ("auto", "namespaces", "rlimits"):
            raise ValueError(f"unknown isolation {isolation!r}")
        self.limits = limits
        self.isolation = isolation
        self.mode = ""
        self._configured_python = python
        self.python = ""
        self._slots = asyncio.Semaphore(concurrency)
        self._drop_privileges = os.geteuid() == 0

    def describe(self) -> dict[str, Any]:
        """What this sandbox enforces, for health details and logs."""
        return {
            "sandbox_mode": self.mode or "unprobed",
            "sandbox_python": self.python,
            "sandbox_drops_to_nobody": self._drop_privileges,
            "sandbox_memory_mb": self.limits.memory_mb,
            "sandbox_max_processes": self.limits.max_processes,
        }

    async def prepare(self) -> None:
        """Choose the strongest isolation mode and an interpreter that works in it, by trying them."""
        modes = ["namespaces", "rlimits"] if self.isolation == "auto" else [self.isolation]
        pythons = [self._configured_python] if self._configured_python else self._candidate_pythons()
        failures: list[str] = []
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            port = listener.getsockname()[1]
            for mode in modes:
                for python in pythons:
                    self.mode, self.python = mode, python
                    result = await self.run(_PROBE_CODE, [_PROBE_TEST, _probe_network_test(port)])
                    if result.passed == 2:
                        log.info("sandbox ready", extra=self.describe())
                        return
                    failures.append(
                        f"{mode}/{python}: {result.contained_failure or result.tests} {result.output_tail[-200:]}"
                    )
        self.mode = ""
        raise SandboxUnavailable("no sandbox mode works: " + "; ".join(failures))

    @staticmethod
    def _candidate_pythons() -> list[str]:
        found: list[str] = []
        for path in (os.path.realpath(sys.executable), shutil.which("python3") or "", "/usr/bin/python3"):
            if path and path not in found and os.path.exists(path):
                found.append(path)
        return found

    def _argv(self, script: str) -> list[str]:
        argv = [self.python, "-I", "-S", "-B", script]
        if self.mode == "namespaces":
            prefix = list(_UNSHARE)
            if os.geteuid() != 0:
                prefix.append("--map-root-user")
            return prefix + argv
        return argv

    def _spec(self, nonce: str, code: str, tests: Sequence[str]) -> bytes:
        lim = self.limits
        spec = {
            "nonce": nonce,
            "code": code,
            "tests": list(tests),
            "per_test_timeout_s": lim.per_test_timeout_s,
            "limits": {
                "as_bytes": lim.memory_mb * 1024 * 1024,
                "cpu_seconds": max(1, int(lim.timeout_s) + 1),
                "nproc": lim.max_processes,
                "file_bytes": lim.file_bytes,
                "open_files": lim.open_files,
            },
            "drop_uid": NOBODY_UID if self._drop_privileges else None,
            "drop_gid": NOBODY_GID if self._drop_privileges else None,
            "block_sockets": self.mode != "namespaces",
        }
        return json.dumps(spec).encode("utf-8")

    async def run(self, code: str, tests: Sequence[str]) -> SandboxResult:
        """Run ``code`` then each test snippet (asserts) in the same namespace; never raises for bad code."""
        if not self.mode:
            raise SandboxUnavailable("sandbox not prepared")
        async with self._slots:
            return await self._run(code, tests)

    async def _run(self, code: str, tests: Sequence[str]) -> SandboxResult:
        nonce = secrets.token_hex(16)
        result = SandboxResult(total=len(tests))
        workdir = tempfile.mkdtemp(prefix="mx-sbx-")
        started = time.perf_counter()
        proc: asyncio.subprocess.Process | None = None
        try:
            script = self._prepare_workdir(workdir)
            env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
            proc = await asyncio.create_subprocess_exec(
                *self._argv(script),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=workdir,
                env=env,
                start_new_session=True,
            )
            try:
                async with asyncio.timeout(self.limits.timeout_s):
                    await self._feed(proc, self._spec(nonce, code, tests))
                    await self._collect(proc, nonce, result)
                    result.exit_code = await proc.wait()
            except TimeoutError:
                result.timed_out = True
        finally:
            if proc is not None and proc.returncode is None:
                _kill_group(proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    await asyncio.shield(proc.wait())
                result.exit_code = proc.returncode
            elif proc is not None and self.mode != "namespaces":
                _kill_group(proc.pid)  # stray members of the group (a PID namespace needs no sweep)
            shutil.rmtree(workdir, ignore_errors=True)
            result.duration_ms = (time.perf_counter() - started) * 1000
            SANDBOX_SECONDS.observe(result.duration_ms / 1000)
            SANDBOX_RUNS.labels(_outcome(result)).inc()
        return result

    def _prepare_workdir(self, workdir: str) -> str:
        """Write the child script (read-only for the child) and hand the directory to the child's user."""
        script = Path(workdir) / "_sandbox_child.py"
        script.write_text(CHILD_SOURCE, encoding="utf-8")
        script.chmod(0o444)
        if self._drop_privileges:
            os.chown(workdir, NOBODY_UID, NOBODY_GID)
        return str(script)

    @staticmethod
    async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(data)
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            proc.stdin.close()

    async def _collect(self, proc: asyncio.subprocess.Process, nonce: str, result: SandboxResult) -> None:
        """Read output, parse result lines, kill the group once the user output passes the cap."""
        assert proc.stdout is not None
        marker = f"@@{nonce}@@".encode()
        pending = b""
        user_bytes = 0
        tail = bytearray()
        while True:
            chunk = await proc.stdout.read(65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.startswith(marker):
                    _apply(result, line[len(marker) :])
                    continue
                if line:
                    user_bytes += len(line) + 1
                    tail += line + b"\n"
            if result.finished:
                break  # a process that escaped the group may hold the pipe open: do not wait for EOF
            if len(pending) > self.limits.output_bytes:
                user_bytes += len(pending)
                pending = b""
            del tail[:-_OUTPUT_TAIL]
            if user_bytes > self.limits.output_bytes:
                result.output_exceeded = True
                _kill_group(proc.pid)
                break
        result.output_tail = bytes(tail).decode("utf-8", "replace")


def _apply(result: SandboxResult, payload: bytes) -> None:
    try:
        msg = json.loads(payload)
    except ValueError:
        return
    kind = msg.get("kind")
    if kind == "test":
        index = int(msg.get("index", -1))
        if 0 <= index < result.total and all(t.index != index for t in result.tests):
            result.tests.append(TestOutcome(index, bool(msg.get("ok")), str(msg.get("error", ""))[:300]))
    elif kind == "compile":
        result.compile_error = str(msg.get("error", ""))[:300]
    elif kind == "module":
        result.module_error = str(msg.get("error", ""))[:300]
    elif kind == "done":
        result.finished = True


def _outcome(result: SandboxResult) -> str:
    if result.timed_out:
        return "timeout"
    if result.output_exceeded:
        return "output_limit"
    if result.compile_error or result.module_error:
        return "answer_error"
    return "finished" if result.finished else "exited_early"


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


_PROBE_CODE = "import fractions, textwrap\n\ndef probe():\n    return fractions.Fraction(1, 2) * 2\n"
_PROBE_TEST = "assert probe() == 1"


def _probe_network_test(port: int) -> str:
    return (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n"
        "except OSError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('network reachable from the sandbox')\n"
    )
