"""Probes run through the sandbox at start: the runtime paths to bind, and checks that the
configured isolation really holds (no network, no service environment, no project files or host
processes in namespaces mode). ``Sandbox.prepare`` runs them; a failed one means no untrusted
code is run (SandboxUnavailable).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Run by the candidate interpreter itself: the paths it needs (executable, stdlib, shared libraries).
RUNTIME_PROBE = r"""
import json, os, sys, sysconfig
for name in ("json", "ctypes", "socket", "select", "struct", "resource", "platform", "math", "cmath",
             "decimal", "fractions", "hashlib", "random", "datetime", "collections", "itertools",
             "functools", "re", "heapq", "bisect", "string", "statistics", "array", "binascii",
             "zlib", "unicodedata", "operator", "typing", "dataclasses", "enum", "textwrap", "copy"):
    try:
        __import__(name)
    except Exception:
        pass
paths = {os.path.realpath(sys.executable)}
for key in ("stdlib", "platstdlib"):
    if sysconfig.get_paths().get(key):
        paths.add(sysconfig.get_paths()[key])
if sysconfig.get_config_var("DESTSHARED"):
    paths.add(sysconfig.get_config_var("DESTSHARED"))
for module in list(sys.modules.values()):
    file = getattr(module, "__file__", None)
    if file:
        paths.add(os.path.dirname(os.path.realpath(file)))
with open("/proc/self/maps") as maps:
    for line in maps:
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/") and ".so" in parts[5]:
            paths.add(os.path.dirname(os.path.realpath(parts[5].strip())))
print(json.dumps(sorted(p for p in paths if os.path.exists(p))))
"""

PROBE_CODE = (
    "import fractions, os, socket\n\n"
    "def probe():\n    return int(fractions.Fraction(1, 2) * 2)\n\n"
    "def net(port):\n"
    "    try:\n        socket.create_connection(('127.0.0.1', port), timeout=1).close()\n"
    "    except OSError:\n        return 'blocked'\n    return 'reachable'\n\n"
    "def sees(path):\n    return os.path.exists(path)\n\n"
    "def reads(path):\n    try:\n        open(path, 'rb').read(1)\n    except OSError:\n        return False\n    return True\n\n"
    "def pids():\n    return len([p for p in os.listdir('/proc') if p.isdigit()])\n\n"
    "def shm():\n    with open('/dev/shm/probe', 'w') as f:\n        f.write('x')\n    return True\n"
)
PROBE_TEST = "assert probe() == 1"


def probe_network_test(port: int) -> str:
    return f"assert net({port}) == 'blocked', 'network reachable from the sandbox'"


def probe_environ_test() -> str:
    """In every mode the answer must not read this service's environment (store URLs, keys)."""
    return f"assert reads('/proc/{os.getpid()}/environ') is False, 'service environment readable'"


def probe_isolation_tests() -> list[str]:
    """The namespaces mode must hide the project and this process, and give a private /dev/shm."""
    return [
        f"assert sees({str(Path(__file__).resolve())!r}) is False, 'project files visible in the sandbox'",
        "assert pids() <= 3, 'host processes visible in the sandbox'",
        "assert shm() is True, 'no private /dev/shm'",
    ]
