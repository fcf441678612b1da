"""The routing evaluation's arithmetic and its CSV format (pure, no I/O besides a temp file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.benchmark import routing_eval as ev


def _outcomes() -> list[ev.Outcome]:
    """Four prompts; the strong provider is right on all, the weak one on the two easy prompts."""
    rows = []
    for i, difficulty in enumerate(("easy", "easy", "hard", "hard")):
        rows.append(ev.Outcome(f"q{i}", "strong", 1.0, 0.010, 30.0, "math", difficulty))
        rows.append(ev.Outcome(f"q{i}", "weak", 1.0 if difficulty == "easy" else 0.0, 0.001, 10.0, "math", difficulty))
    return rows


def test_baselines_oracle_and_relative_metrics() -> None:
    t = ev.table(_outcomes())
    assert (ev.strongest(t), ev.cheapest(t)) == ("strong", "weak")
    strong = ev.evaluate(t, ev.single(t, "strong"), "s")
    weak = ev.evaluate(t, ev.single(t, "weak"), "w")
    assert (strong.quality, weak.quality) == (1.0, 0.5)
    assert strong.cost == pytest.approx(0.04) and weak.cost == pytest.approx(0.004)
    oracle = ev.evaluate(t, ev.oracle(t), "oracle")
    rel = ev.relative(oracle, strong, weak)
    assert oracle.quality == 1.0 and rel.retained == 1.0 and rel.pgr == 1.0
    assert oracle.cost == pytest.approx(0.022) and rel.cost_saved == pytest.approx(0.45)
    assert oracle.strong_share_by_difficulty == {"easy": 0.0, "hard": 1.0}
    uniform = ev.evaluate(t, ev.uniform_random(t), "random")
    assert uniform.quality == pytest.approx(0.75) and ev.relative(uniform, strong, weak).pgr == pytest.approx(0.5)


def test_apgr_is_half_for_random_mixes_and_high_for_the_oracle() -> None:
    t = ev.table(_outcomes())
    strong = ev.evaluate(t, ev.single(t, "strong"), "s")
    weak = ev.evaluate(t, ev.single(t, "weak"), "w")
    mixes = [ev.relative(ev.evaluate(t, ev.random_mix(t, p), "mix"), strong, weak) for p in (0.2, 0.5, 0.8)]
    assert ev.apgr(mixes) == pytest.approx(0.5)
    oracle = ev.relative(ev.evaluate(t, ev.oracle(t), "o"), strong, weak)
    assert ev.apgr([oracle]) == pytest.approx(0.5 * 0.5 + 0.5 * 1.0, abs=0.01)  # (0,0)-(0.5,1)-(1,1)
    assert ev.best_saving([(0.3, oracle), (0.9, ev.relative(strong, strong, weak))], 0.95) == (0.3, oracle)


def test_csv_round_trip_and_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.csv"
    ev.write_outcomes(path, _outcomes())
    assert ev.read_outcomes(path) == _outcomes()

    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,provider,correct,cost,latency\nq,p,1.5,0.1,10\n")
    with pytest.raises(ev.OutcomeError, match="row 2: correct must be"):
        ev.read_outcomes(bad)
    bad.write_text("prompt,provider,correct,cost\nq,p,1,0.1\n")
    with pytest.raises(ev.OutcomeError, match="header lacks latency"):
        ev.read_outcomes(bad)
    bad.write_text("prompt,provider,correct,cost,latency,category\nq,p,1,0.1,5,cooking\n")
    with pytest.raises(ev.OutcomeError, match="category must be one of"):
        ev.read_outcomes(bad)
    with pytest.raises(ev.OutcomeError, match="without a row"):
        ev.table(_outcomes()[:-1])
    with pytest.raises(ev.OutcomeError, match="at least two providers"):
        ev.table([o for o in _outcomes() if o.provider == "weak"])
