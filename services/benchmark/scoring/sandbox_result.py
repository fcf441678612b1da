"""What one sandboxed run is allowed and what came out of it: limits, verdicts, results.

The harness inside the sandbox (``sandbox_child.py``) reports one JSON message per event on a
pipe the answer's worker never holds; :func:`apply_message` folds them into a
:class:`SandboxResult`. No process handling here (that is ``sandbox.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


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
    tmp_mb: int = 16
    shm_mb: int = 16


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
    setup_error: str = ""
    timed_out: bool = False
    output_exceeded: bool = False
    finished: bool = False
    exit_code: int | None = None
    duration_ms: float = 0.0
    output_tail: str = ""
    diagnostics: str = ""

    @property
    def passed(self) -> int:
        return sum(1 for t in self.tests if t.ok)

    @property
    def contained_failure(self) -> str:
        """A non-empty reason when the run was stopped by a limit or never completed."""
        if self.setup_error:
            return f"sandbox setup failed: {self.setup_error}"
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
    """The configured isolation does not work on this machine: untrusted code is not run."""


def apply_message(result: SandboxResult, payload: bytes) -> bool:
    try:
        msg = json.loads(payload)
    except ValueError:
        return False
    if not isinstance(msg, dict):
        return False
    kind = msg.get("kind")
    if kind == "test":
        index = int(msg.get("index", -1))
        if 0 <= index < result.total and all(t.index != index for t in result.tests):
            result.tests.append(TestOutcome(index, bool(msg.get("ok")), str(msg.get("error", ""))[:300]))
    elif kind == "compile":
        result.compile_error = str(msg.get("error", ""))[:300]
    elif kind == "module":
        result.module_error = str(msg.get("error", ""))[:300]
    elif kind == "setup":
        result.setup_error = str(msg.get("error", ""))[:300]
    elif kind == "done":
        result.finished = True
    else:
        return False
    return True


def outcome_label(result: SandboxResult) -> str:
    if result.setup_error:
        return "setup_failed"
    if result.timed_out:
        return "timeout"
    if result.output_exceeded:
        return "output_limit"
    if result.compile_error or result.module_error:
        return "answer_error"
    return "finished" if result.finished else "exited_early"
