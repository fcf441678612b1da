"""Run untrusted code from a provider's answer against unit tests, contained.

Each run is a fresh interpreter (``python -I -S -B``) with a minimal environment in its own
session. Inside, a trusted harness runs the test snippets and a forked worker runs the answer
(``sandbox_child.py``); the verdict travels on the harness's stderr, a pipe the worker never holds.
What is enforced (see docs/benchmark.md, "The code sandbox"):

* ``namespaces`` isolation (the default, required unless configured otherwise): ``unshare`` with
  new mount, network, PID, IPC and UTS namespaces (plus a user namespace when the service is
  not root). The harness pivots into a private tmpfs root that holds only read-only binds of the
  Python runtime (interpreter, standard library, the shared libraries it loads), ``/dev/null``
  and friends, its own ``/proc``, and size-capped private ``/tmp`` and ``/dev/shm``: no project
  directory, no store files, no ``$HOME``, no host Unix sockets, no host PIDs, no network.
* ``rlimits`` isolation (weaker; only when ``BENCHMARK_SANDBOX_ISOLATION=rlimits`` or ``auto``
  says so): no namespaces; sockets are blocked in Python (best effort) and the process group
  is killed. Answer code can then read what the service user can read.
* Always: the worker drops to ``nobody`` (root service) or into a user namespace of its own,
  sets no_new_privs, RLIMIT_AS/CPU/NPROC/FSIZE/NOFILE, no core dumps; a per-test deadline
  enforced by the harness (it kills the worker), a wall-clock limit for the whole run, a cap on
  the output read back, and SIGKILL to everything on any limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.benchmark.metrics import SANDBOX_RUNS, SANDBOX_SECONDS
from services.benchmark.scoring import sandbox_probe
from services.benchmark.scoring.sandbox_result import (
    SandboxLimits,
    SandboxResult,
    SandboxUnavailable,
    TestOutcome,
    apply_message,
    outcome_label,
)

__all__ = ["Sandbox", "SandboxLimits", "SandboxResult", "SandboxUnavailable", "TestOutcome", "collapse_binds"]

log = logging.getLogger("masterx.benchmark.sandbox")

CHILD_SOURCE = (Path(__file__).with_name("sandbox_child.py")).read_text(encoding="utf-8")
NOBODY_UID = 65534
NOBODY_GID = 65534
_NAMESPACES = ("unshare", "--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child")
_OUTPUT_TAIL = 2000
_DIAGNOSTIC_BYTES = 4000
_PROJECT_ROOT = Path(__file__).resolve().parents[3]
ISOLATIONS = ("namespaces", "rlimits", "auto")


def _within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def collapse_binds(paths: Sequence[str], forbidden: Sequence[Path]) -> list[str]:
    """The smallest set of bind sources covering ``paths``; refuses a directory that would expose a forbidden one.

    A directory bind that contains the project, the service's working directory or ``$HOME``
    would hand the answer the project's files and stores, so it is an error, not a bind.
    """
    resolved = sorted({str(Path(p).resolve()) for p in paths if p and os.path.exists(p)}, key=len)
    kept: list[str] = []
    for path in resolved:
        if any(_within(Path(path), Path(k)) for k in kept if os.path.isdir(k)):
            continue
        if os.path.isdir(path):
            exposed = [str(f) for f in forbidden if _within(f.resolve(), Path(path))]
            if exposed:
                raise SandboxUnavailable(
                    f"the Python runtime directory {path} contains {exposed[0]}: the sandbox would expose it; "
                    "use BENCHMARK_SANDBOX_PYTHON with an interpreter installed outside it"
                )
        kept.append(path)
    return kept


class Sandbox:
    """Runs answers in contained subprocesses; at most ``concurrency`` at once."""

    def __init__(
        self,
        limits: SandboxLimits,
        *,
        concurrency: int = 2,
        python: str = "",
        isolation: str = "namespaces",
    ) -> None:
        if isolation not in ISOLATIONS:
            raise ValueError(f"unknown isolation {isolation!r}")
        self.limits = limits
        self.isolation = isolation
        self.mode = ""
        self._configured_python = python
        self.python = ""
        self.binds: list[str] = []
        self._slots = asyncio.Semaphore(concurrency)
        self._root = os.geteuid() == 0

    def describe(self) -> dict[str, Any]:
        """What this sandbox enforces, for health details and logs."""
        return {
            "sandbox_mode": self.mode or "unprobed",
            "sandbox_python": self.python,
            "sandbox_drops_to_nobody": self._root,
            "sandbox_memory_mb": self.limits.memory_mb,
            "sandbox_max_processes": self.limits.max_processes,
            "sandbox_private_root": self.mode == "namespaces",
            "sandbox_binds": list(self.binds),
        }

    async def prepare(self) -> None:
        """Find an interpreter and check, by running hostile probes, that the configured isolation holds.

        ``namespaces`` (default) and ``rlimits`` must work as configured or this raises
        :class:`SandboxUnavailable`; only ``auto`` falls back to ``rlimits`` (with a warning).
        """
        modes = ["namespaces", "rlimits"] if self.isolation == "auto" else [self.isolation]
        pythons = [self._configured_python] if self._configured_python else self._candidate_pythons()
        failures: list[str] = []
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            port = listener.getsockname()[1]
            for mode in modes:
                for python in pythons:
                    try:
                        binds = await self._runtime_paths(python) if mode == "namespaces" else []
                    except SandboxUnavailable as exc:
                        failures.append(f"{mode}/{python}: {exc}")
                        continue
                    self.mode, self.python, self.binds = mode, python, binds
                    if mode == "rlimits" and not self._root:
                        _make_non_dumpable()  # the worker runs as our uid: keep our memory and environ from it
                    tests = [
                        sandbox_probe.PROBE_TEST,
                        sandbox_probe.probe_network_test(port),
                        sandbox_probe.probe_environ_test(),
                    ]
                    if mode == "namespaces":
                        tests += sandbox_probe.probe_isolation_tests()
                    result = await self.run(sandbox_probe.PROBE_CODE, tests)
                    if result.passed == len(tests):
                        if mode != modes[0]:
                            log.warning(
                                "sandbox falls back to the weaker rlimits isolation (BENCHMARK_SANDBOX_ISOLATION=auto)",
                                extra={"failures": failures},
                            )
                        log.info("sandbox ready", extra=self.describe())
                        return
                    reason = result.contained_failure or "; ".join(
                        f"probe {t.index}: {t.error}" for t in result.tests if not t.ok
                    )
                    failures.append(f"{mode}/{python}: {reason} {result.diagnostics[-300:]}".strip())
        self.mode, self.binds = "", []
        hint = (
            " The namespaces sandbox needs `unshare` (util-linux) and a kernel that allows mount, PID, network, "
            "IPC and UTS namespaces (as non-root also unprivileged user namespaces; in a container a seccomp "
            "profile that permits unshare/mount). To run answer code with the weaker rlimits-only sandbox "
            "anyway (it can read what this service can read), set BENCHMARK_SANDBOX_ISOLATION=rlimits."
            if "namespaces" in modes
            else ""
        )
        raise SandboxUnavailable("untrusted answer code will not run: " + "; ".join(failures) + hint)

    @staticmethod
    def _candidate_pythons() -> list[str]:
        found: list[str] = []
        for path in (os.path.realpath(sys.executable), shutil.which("python3") or "", "/usr/bin/python3"):
            if path and path not in found and os.path.exists(path):
                found.append(path)
        return found

    async def _runtime_paths(self, python: str) -> list[str]:
        """What the private root must bind for ``python``: the interpreter, its stdlib and shared libraries."""
        try:
            proc = await asyncio.create_subprocess_exec(
                python,
                "-I",
                "-S",
                "-B",
                "-c",
                sandbox_probe.RUNTIME_PROBE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            )
            async with asyncio.timeout(30):
                out, err = await proc.communicate()
        except (OSError, TimeoutError) as exc:
            raise SandboxUnavailable(f"interpreter does not start: {exc}") from exc
        if proc.returncode != 0:
            raise SandboxUnavailable(f"interpreter probe failed: {err.decode('utf-8', 'replace')[-300:]}")
        paths = json.loads(out)
        forbidden = [_PROJECT_ROOT, Path.cwd(), Path.home()]
        return collapse_binds(paths, [f for f in forbidden if str(f) != "/"])

    def _argv(self, script: str) -> list[str]:
        argv = [self.python, "-I", "-S", "-B", script]
        if self.mode == "namespaces":
            prefix = list(_NAMESPACES)
            if not self._root:
                prefix.append("--map-root-user")
            return prefix + argv
        return argv

    def _spec(self, code: str, tests: Sequence[str], workdir: str) -> bytes:
        lim = self.limits
        isolated = self.mode == "namespaces"
        spec = {
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
            "view": (
                {"root": str(Path(workdir) / "root"), "binds": self.binds, "tmp_mb": lim.tmp_mb, "shm_mb": lim.shm_mb}
                if isolated
                else None
            ),
            "pid_namespace": isolated,
            "cwd": "/tmp" if isolated else workdir,
            "drop_uid": NOBODY_UID if self._root else None,
            "drop_gid": NOBODY_GID if self._root else None,
            "nested_userns": isolated and not self._root,
            "block_sockets": not isolated,
        }
        return json.dumps(spec).encode("utf-8")

    async def run(self, code: str, tests: Sequence[str]) -> SandboxResult:
        """Run ``code`` then each test snippet (asserts) against it; never raises for bad code."""
        if not self.mode:
            raise SandboxUnavailable("sandbox not prepared")
        async with self._slots:
            return await self._run(code, tests)

    async def _run(self, code: str, tests: Sequence[str]) -> SandboxResult:
        result = SandboxResult(total=len(tests))
        workdir = tempfile.mkdtemp(prefix="mx-sbx-")
        started = time.perf_counter()
        proc: asyncio.subprocess.Process | None = None
        output: asyncio.Task[None] | None = None
        try:
            script = self._prepare_workdir(workdir)
            home = "/tmp" if self.mode == "namespaces" else workdir
            env = {"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"}
            proc = await asyncio.create_subprocess_exec(
                *self._argv(script),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=workdir,
                env=env,
                start_new_session=True,
            )
            output = asyncio.create_task(self._drain_output(proc, result))
            try:
                async with asyncio.timeout(self.limits.timeout_s):
                    await self._feed(proc, self._spec(code, tests, workdir))
                    await self._read_verdicts(proc, result)
                    result.exit_code = await proc.wait()
                    # what the answer printed up to its end still counts against the output cap
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(output), timeout=1.0)
            except TimeoutError:
                result.timed_out = True
        finally:
            if proc is not None and proc.returncode is None:
                _kill_group(proc.pid)
                with contextlib.suppress(ProcessLookupError, TimeoutError):
                    # bounded: asyncio reports the exit only once every pipe is closed
                    await asyncio.wait_for(asyncio.shield(proc.wait()), timeout=5.0)
                result.exit_code = proc.returncode
            elif proc is not None and self.mode != "namespaces":
                _kill_group(proc.pid)  # stray members of the group (a PID namespace needs no sweep)
            if output is not None:
                output.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await output
            shutil.rmtree(workdir, ignore_errors=True)
            result.duration_ms = (time.perf_counter() - started) * 1000
            SANDBOX_SECONDS.observe(result.duration_ms / 1000)
            SANDBOX_RUNS.labels(outcome_label(result)).inc()
        return result

    def _prepare_workdir(self, workdir: str) -> str:
        """Write the harness script (read-only) and the private root's mount point."""
        script = Path(workdir) / "_sandbox_child.py"
        script.write_text(CHILD_SOURCE, encoding="utf-8")
        script.chmod(0o444)
        (Path(workdir) / "root").mkdir(mode=0o755)
        if self._root and self.mode != "namespaces":
            os.chown(workdir, NOBODY_UID, NOBODY_GID)  # the worker's working directory in rlimits mode
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

    async def _read_verdicts(self, proc: asyncio.subprocess.Process, result: SandboxResult) -> None:
        """Verdict lines from the harness's stderr (the worker never holds this pipe) until ``done`` or EOF."""
        assert proc.stderr is not None
        diagnostics = bytearray()
        while True:
            try:
                line = await proc.stderr.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                diagnostics += exc.partial[:_DIAGNOSTIC_BYTES]
                break
            except asyncio.LimitOverrunError as exc:
                diagnostics += (await proc.stderr.read(exc.consumed))[:_DIAGNOSTIC_BYTES]
                continue
            if not (line.startswith(b"{") and apply_message(result, line)):
                diagnostics += line
            del diagnostics[:-_DIAGNOSTIC_BYTES]
            if result.finished:
                break
        result.diagnostics = bytes(diagnostics).decode("utf-8", "replace")

    async def _drain_output(self, proc: asyncio.subprocess.Process, result: SandboxResult) -> None:
        """Read what the answer prints; kill everything once it passes the cap."""
        assert proc.stdout is not None
        total = 0
        tail = bytearray()
        while True:
            chunk = await proc.stdout.read(65536)
            if not chunk:
                return
            if result.output_exceeded:
                continue  # read on to EOF: a paused pipe would keep asyncio from seeing the exit
            total += len(chunk)
            tail += chunk
            del tail[:-_OUTPUT_TAIL]
            result.output_tail = bytes(tail).decode("utf-8", "replace")
            if total > self.limits.output_bytes:
                result.output_exceeded = True
                _kill_group(proc.pid)


def _make_non_dumpable() -> None:
    """prctl(PR_SET_DUMPABLE, 0): /proc/<this pid>/{environ,mem,fd} and ptrace closed to same-uid processes."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 0, 0, 0, 0) != 0:
        raise SandboxUnavailable(f"prctl(PR_SET_DUMPABLE): {os.strerror(ctypes.get_errno())}")


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
