"""Time MasterX's processes spend in Python's garbage collector per request, by GC setting.

    .venv/bin/python bench/bench_gc.py [--seconds 8] [--reps 3] [--clients 64]

Starts the fake provider and MasterX as ``bench_vs_litellm.py`` does (emotion, router, gateway,
Redis, MongoDB-wire), once per setting: ``python`` (Python's own collector settings:
``MASTERX_GC_THRESHOLD=0 MASTERX_GC_FREEZE=0``) and ``default`` (the runtime's). Every process
runs with ``bench/gcstats`` on PYTHONPATH, whose ``sitecustomize`` times each collector pass.
Each repetition drives ``/v1/chat/completions`` (emotion on, non-streamed) with ``--clients``
closed-loop clients for ``--seconds`` and reports, per process, collector ms and CPU ms per
request, and requests/s. The settings alternate (A B B A ...), so a busy machine hurts both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_vs_litellm as peers

HERE = Path(__file__).resolve().parent
SETTINGS = {
    "python": {"MASTERX_GC_THRESHOLD": "0", "MASTERX_GC_FREEZE": "0"},
    "default": {},
}
PROCESSES = ("gateway", "router", "emotion")


def _gc_seconds(stats_dir: Path, pid: int) -> float:
    with contextlib.suppress(OSError, ValueError):
        return float(json.loads((stats_dir / f"{pid}.json").read_text())["seconds"])
    return 0.0


def run_setting(name: str, args: argparse.Namespace) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix=f"masterx-bench-gc-{name}-"))
    stats = tmp / "gcstats"
    stats.mkdir()
    saved = dict(os.environ)
    os.environ.update(SETTINGS[name])
    os.environ["MASTERX_GCSTATS_DIR"] = str(stats)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE / "gcstats"), saved.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    fake, fake_port = peers.start_fake(tmp)
    system = noemo = None
    try:
        system, noemo = peers.start_masterx(fake_port, tmp)
        pid = {n: c.proc.pid for n, c in system.children.items()}
        gw = system.children["gateway"]
        target = peers.Target(
            "mx-gateway", {n: pid[n] for n in PROCESSES}, port=int(gw.url.rsplit(":", 1)[1]), model="masterx"
        )

        async def load() -> dict[str, float]:
            await peers.closed_loop(target, 8, False, calls=5)  # connections and caches warm
            gc0 = {n: _gc_seconds(stats, pid[n]) for n in PROCESSES}
            cpu0 = peers.cpu_seconds(target.procs)
            sample = await peers.closed_loop(
                target, args.clients, False, seconds=args.seconds, spread_ms=peers.STREAM_MS
            )
            cpu1 = peers.cpu_seconds(target.procs)
            await asyncio.sleep(0.7)  # the stats files are rewritten twice a second
            n = max(1, len(sample.total))
            out = {"rps": len(sample.total) / sample.seconds, "errors": float(sample.errors)}
            for p in PROCESSES:
                out[f"{p}_gc_ms"] = (_gc_seconds(stats, pid[p]) - gc0[p]) * 1000 / n
                out[f"{p}_cpu_ms"] = (cpu1[p] - cpu0[p]) * 1000 / n
            return out

        return asyncio.run(load())
    finally:
        peers.stop_all(fake, system, noemo)
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--clients", type=int, default=64)
    args = ap.parse_args()
    rows: dict[str, list[dict[str, float]]] = {n: [] for n in SETTINGS}
    order = list(SETTINGS)
    for rep in range(args.reps):
        for name in order if rep % 2 == 0 else reversed(order):
            row = run_setting(name, args)
            rows[name].append(row)
            print(f"rep {rep + 1}/{args.reps} {name:<8} {row['rps']:6.0f} req/s", flush=True)
    print(f"\n## Garbage collector per request ({args.clients} clients, gateway /v1 with emotion on)\n")
    print(f"machine: {peers.machine()}; medians of {args.reps} repetitions\n")
    cols = [f"{p} GC / CPU ms" for p in PROCESSES]
    print("| setting | req/s | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for name, got in rows.items():
        med = {k: statistics.median(r[k] for r in got) for k in got[0]}
        cells = " | ".join(f"{med[f'{p}_gc_ms']:.3f} / {med[f'{p}_cpu_ms']:.2f}" for p in PROCESSES)
        print(f"| {name} | {med['rps']:.0f} | {cells} |")


if __name__ == "__main__":
    main()
