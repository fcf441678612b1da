"""Python's cyclic garbage collector, set for a long-running service (``MASTERX_GC_*``).

A request handled by the gateway or the router allocates a few hundred container objects that
reference counting frees when it ends; with Python's default young-generation threshold (700)
the in-flight requests of a busy process keep crossing it, so the collector runs every few
requests and walks their live objects each time (``bench/bench_gc.py`` at 64 clients: 0.27-0.29 ms
of the gateway's ~1.5 ms and 0.15-0.17 ms of the router's ~2.6 ms of CPU per request; 0.01 ms
with these settings). A higher threshold lets those
objects die before a pass sees them; reference cycles (the collector's real work) still trigger
a pass once that many have piled up. ``gc.freeze`` after start-up keeps the modules and the
app, which live as long as the process, out of every later full collection.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("masterx.gc")


def apply(threshold: int, freeze: bool) -> tuple[int, int, int]:
    """Collect once, freeze what is alive (if ``freeze``) and set the young-generation threshold
    (``threshold`` > 0; the older generations keep theirs). Returns the thresholds now in force."""
    if freeze:
        gc.collect()
        gc.freeze()
    if threshold > 0:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(threshold, older, oldest)
    now = gc.get_threshold()
    log.debug("garbage collector thresholds %s, %d objects frozen", now, gc.get_freeze_count())
    return now
