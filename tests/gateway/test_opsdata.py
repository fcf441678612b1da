"""The ops page's pure shaping functions and in-memory rings (no I/O)."""

from __future__ import annotations

import datetime as dt

from services.gateway import opsdata


def test_provider_history_keeps_the_last_samples_per_provider() -> None:
    hist = opsdata.ProviderHistory(size=3)
    for t in range(5):
        hist.record(float(t), [{"name": "a", "breaker_state": "closed", "failure_rate": t / 10, "window_calls": t}])
    hist.record(9.0, [{"name": "b", "breaker_state": "open", "failure_rate": 1.0, "window_calls": 4}])
    assert [s["t"] for s in hist.of("a")] == [2.0, 3.0, 4.0]
    assert hist.of("b") == [{"t": 9.0, "breaker_state": "open", "failure_rate": 1.0, "window_calls": 4}]
    assert hist.of("missing") == []


def _summary(provider: str = "fast") -> dict:
    return {
        "provider": {
            "name": provider,
            "model": "m",
            "category": "math",
            "category_confidence": 0.9,
            "empathy_override": True,
            "continuity": False,
            "topic_changed": True,
            "reasons": ["category math (0.90)", "frustrated: empathy weight"],
            "candidates": [
                {
                    "provider": provider,
                    "score": 71.5,
                    "excluded": False,
                    "reason": "",
                    "score_source": "prior",
                    "quality": 70,
                }
            ],
        },
        "usage": {"cost_usd": 0.0012},
        "timings_ms": {"total_ms": 42.5},
        "degraded": [{"service": "emotion", "code": "UNAVAILABLE"}],
    }


def test_decision_record_from_a_chat_summary() -> None:
    rec = opsdata.decision_record(_summary(), "rid-1", "chat", t=100.0)
    assert rec.provider == "fast" and rec.category == "math" and rec.request_id == "rid-1"
    assert rec.reasons == ("category math (0.90)", "frustrated: empathy weight")
    assert rec.empathy_override and rec.topic_changed and not rec.continuity
    assert rec.candidates == (
        {"provider": "fast", "score": 71.5, "excluded": False, "reason": "", "score_source": "prior"},
    )
    assert rec.cost_usd == 0.0012 and rec.total_ms == 42.5 and rec.degraded == ("emotion",)


def test_decision_log_is_newest_first_and_resizable() -> None:
    log = opsdata.DecisionLog(size=2)
    for i in range(3):
        log.record(opsdata.decision_record(_summary(f"p{i}"), f"r{i}", "chat", t=float(i)))
    assert [d["provider"] for d in log.newest_first()] == ["p2", "p1"]
    log.resize(5)
    log.record(opsdata.decision_record(_summary("p3"), "r3", "chat", t=3.0))
    assert [d["provider"] for d in log.newest_first()] == ["p3", "p2", "p1"]
    log.resize(1)
    assert len(log) == 1


def test_leaderboard_joins_the_routers_ranking_with_measurements() -> None:
    candidates = [
        {"provider": "a", "score": 60.0, "quality": 50, "speed": 90, "cost": 80, "score_source": "prior:gpt-4o-mini"},
        {"provider": "b", "score": 75.0, "quality": 80, "speed": 60, "cost": 40, "score_source": "benchmark:r1"},
        {
            "provider": "c",
            "score": 75.0,
            "quality": 80,
            "speed": 60,
            "cost": 40,
            "score_source": "config",
            "excluded": True,
            "reason": "breaker open",
        },
    ]
    measured = [{"provider": "b", "measured_at": 1000.0, "run_id": "r1", "items": 20}]
    board = opsdata.leaderboard("math", candidates, measured, {"quality": 0.6, "speed": 0.2, "cost": 0.2}, now=1300.0)
    assert [r["provider"] for r in board["rows"]] == ["b", "c", "a"]  # by score, ties by name
    b, c, a = board["rows"]
    assert b["source"] == "benchmark" and b["age_seconds"] == 300.0 and b["run_id"] == "r1" and b["items"] == 20
    assert a["source"] == "prior" and a["age_seconds"] is None and a["measured_at"] == 0.0
    assert c["excluded"] and c["reason"] == "breaker open" and c["source"] == "config"
    assert b["source_detail"] == "r1" and a["source_detail"] == "gpt-4o-mini"
    assert opsdata.ScoreSource.parse("something-new") == (opsdata.ScoreSource.DEFAULT, "something-new")
    assert board["weights"]["quality"] == 0.6


def test_day_range_ends_today() -> None:
    assert opsdata.day_range(dt.date(2026, 3, 2), 3) == ["2026-02-28", "2026-03-01", "2026-03-02"]


def test_spend_sums_per_day_and_provider_against_budgets() -> None:
    days = ["2026-01-01", "2026-01-02"]
    rows = [
        {"day": "2026-01-01", "user_id": "u1", "provider": "a", "cost_usd": 0.25, "requests": 2},
        {"day": "2026-01-02", "user_id": "u1", "provider": "a", "cost_usd": 0.5, "requests": 1},
        {"day": "2026-01-02", "user_id": "u2", "provider": "a", "cost_usd": 0.25, "requests": 1},
        {"day": "2026-01-02", "user_id": "u2", "provider": "c", "cost_usd": 1.0, "requests": 3},
        {"day": "2025-12-31", "user_id": "u2", "provider": "old", "cost_usd": 9.0, "requests": 3},
    ]
    out = opsdata.spend(rows, days, {"a": 1.0, "b": 0.0})
    assert out["providers"] == ["a", "b", "c"]
    assert out["series"] == {"a": [0.25, 0.75], "b": [0.0, 0.0], "c": [0.0, 1.0]}
    assert out["per_day"] == [0.25, 1.75] and out["total_usd"] == 2.0
    assert out["requests"] == {"a": 4, "b": 0, "c": 3}
    today = {t["provider"]: t for t in out["today"]}
    assert today["a"] == {"provider": "a", "spent_usd": 0.75, "budget_usd": 1.0, "used": 0.75}
    assert today["b"]["used"] is None and today["c"]["budget_usd"] == 0.0


def test_recent_runs_newest_first_with_progress() -> None:
    runs = [
        {"run_id": "old", "started_at": 1.0, "total_items": 4, "completed_items": 4},
        {"run_id": "new", "started_at": 3.0, "total_items": 10, "completed_items": 3, "skipped_items": 2},
        {"run_id": "mid", "started_at": 2.0, "total_items": 0, "completed_items": 0},
    ]
    out = opsdata.recent_runs(runs, limit=2)
    assert [r["run_id"] for r in out] == ["new", "mid"]
    assert out[0]["progress"] == 0.5 and out[1]["progress"] == 0.0
