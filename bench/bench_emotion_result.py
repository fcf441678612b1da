"""Per-message service-side cost of turning a model prediction into an EmotionResult.

    .venv/bin/python bench/bench_emotion_result.py [--n 20000]

Loads the shipped model once, predicts one chat message, then times (no I/O, one thread):

* ``build_result``: features, learning state / readiness / intervention, and the protobuf
  EmotionResult with 28 scores, Ekman groups, categories and urgency;
* ``build_result + turn``: the same plus the stored-turn record an Analyze with user_id and
  request_id makes (the MongoDB write itself runs in the background and is not timed);
* ``SerializeToString`` of the result (what gRPC sends).

Prints the mean and p50/p95 in microseconds and the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from masterx_runtime.config import load  # noqa: E402
from masterx_runtime.testing.benchstats import machine, percentile  # noqa: E402
from services.emotion.app import EmotionApp  # noqa: E402
from services.emotion.config import EmotionSettings  # noqa: E402
from services.emotion.engine import EmotionModel  # noqa: E402
from services.emotion.learning import StudentContext  # noqa: E402
from services.emotion.result import ResultBuilder  # noqa: E402


def timed(fn: object, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - t) * 1e6)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args()
    cfg = load(EmotionSettings)
    model = EmotionModel(cfg.model_path, intra_op_threads=1, prefer_gpu=False)
    app = EmotionApp(cfg, model=model)
    builder = ResultBuilder(model, app.labels)  # as start() does
    (pred,) = model.predict(["I've tried this five times and I'm so frustrated, can you explain it again?"])
    ctx = StudentContext(cognitive_load=0.8, time_on_task_seconds=900)
    result, _ = builder.build(pred, ctx, app.params)
    rows = {
        "build_result": timed(lambda: builder.build(pred, ctx, app.params), args.n),
        "build_result + turn": timed(
            lambda: builder.turn(
                pred,
                builder.build(pred, ctx, app.params)[0],
                user_id="s-1",
                turn_id="turn-1",
                session_id="sess",
                ctx=ctx,
            ),
            args.n,
        ),
        "SerializeToString": timed(result.SerializeToString, args.n),
    }
    print(f"machine: {machine()}; parameters {app.params.version}; model {model.model_version}")
    print(f"heads: {model.heads_version or 'none'}; {args.n} runs each")
    print(f"{'step':<22} {'mean us':>8} {'p50 us':>8} {'p95 us':>8}")
    for name, xs in rows.items():
        print(f"{name:<22} {sum(xs) / len(xs):8.1f} {percentile(xs, 50):8.1f} {percentile(xs, 95):8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
