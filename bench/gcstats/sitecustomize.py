"""Loaded by every Python process started with this folder on PYTHONPATH (bench/bench_gc.py).

Times each pass of the cyclic garbage collector (``gc.callbacks``) and writes the running totals
to ``$MASTERX_GCSTATS_DIR/<pid>.json`` twice a second, so the benchmark can read how much of a
service's time went to the collector over a load window. Measurement only: nothing else changes.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from typing import Any

_OUT = os.environ.get("MASTERX_GCSTATS_DIR", "")
_totals: dict[str, Any] = {"seconds": 0.0, "passes": [0, 0, 0]}
_started = [0.0]


def _timed(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    _totals["seconds"] += time.perf_counter() - _started[0]
    _totals["passes"][info["generation"]] += 1


def _write() -> None:
    path = os.path.join(_OUT, f"{os.getpid()}.json")
    while True:
        time.sleep(0.5)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(_totals, f)
        os.replace(tmp, path)


if _OUT:
    gc.callbacks.append(_timed)
    threading.Thread(target=_write, name="gcstats", daemon=True).start()
