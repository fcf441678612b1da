"""Small helpers every benchmark script shares: percentiles, a process's CPU time and a description
of the machine."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in 0-100 (NaN for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (falls back to the platform's word for it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: Instruction sets that decide which of onnxruntime's CPU kernels run, widest first.
KERNEL_ISAS = ("avx512_vnni", "avx512f", "avx2")


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        return set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return set()


def kernel_isa() -> str:
    """The widest of KERNEL_ISAS this CPU has (else the platform's machine name)."""
    flags = cpu_flags()
    return next((name for name in KERNEL_ISAS if name in flags), platform.machine() or "unknown")


def machine() -> str:
    """One line: CPU, usable cores, load average now, Python version."""
    load = os.getloadavg()
    cores = len(os.sched_getaffinity(0))
    return f"{cpu_model()}, {cores} cores, load average {load[0]:.2f} at start, Python {platform.python_version()}"
