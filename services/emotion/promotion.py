"""Promoted parameter versions in MongoDB (``emotion_params``), and the rule that promotes one.

``python -m services.emotion.refit --promote`` writes a new parameter file and, when the new
version beats the one currently served on held-out outcomes (:func:`decide`), stores it here
with ``promoted_at``. Every emotion service replica polls the newest promoted document every
``EMOTION_PARAMS_RELOAD_SECONDS`` and swaps to it when its version differs from the one it
serves (the file named by ``EMOTION_PARAMS_PATH`` is served until a version is promoted).

Promotion rule (all must hold, on the held-out split of the outcomes, a hash of the outcome id):

1. at least ``min_held_out`` held-out outcomes (default 20);
2. the intervention log-loss falls by at least ``min_gain`` (default 0.005 nats);
3. neither the readiness log-loss nor, where observed states were recorded, the learning-state
   log-loss rises by more than ``max_loss`` (default 0.005 nats).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

PARAMS = "emotion_params"


@dataclass(frozen=True)
class PromotionRule:
    """Thresholds of the promotion rule (module docstring)."""

    min_held_out: int = 20
    min_gain: float = 0.005
    max_loss: float = 0.005


@dataclass(frozen=True)
class Decision:
    """Whether to promote and why (one line per check)."""

    promote: bool
    reasons: list[str]


def decide(report: dict[str, Any], rule: PromotionRule) -> Decision:
    """Apply the promotion rule to a refit report (pure: no I/O)."""
    reasons: list[str] = []
    held = report.get("held_out_split")
    n = int(report.get("held_out", 0))
    if held is None or n < rule.min_held_out:
        return Decision(False, [f"only {n} held-out outcomes; the rule needs {rule.min_held_out}"])
    before, after = held["before"], held["after"]
    ok = True
    b, a = before.get("intervention_log_loss"), after.get("intervention_log_loss")
    if b is None or a is None:
        return Decision(False, ["no intervention log-loss on the held-out split"])
    gain = b - a
    if gain >= rule.min_gain:
        reasons.append(f"intervention log-loss {b:.4f} -> {a:.4f} (gain {gain:.4f} >= {rule.min_gain})")
    else:
        ok = False
        reasons.append(f"intervention log-loss {b:.4f} -> {a:.4f}: gain {gain:.4f} < {rule.min_gain}")
    for key in ("readiness_log_loss", "state_log_loss"):
        b2, a2 = before.get(key), after.get(key)
        if b2 is None or a2 is None:
            continue
        if a2 - b2 > rule.max_loss:
            ok = False
            reasons.append(f"{key} {b2:.4f} -> {a2:.4f}: worse by more than {rule.max_loss}")
        else:
            reasons.append(f"{key} {b2:.4f} -> {a2:.4f} (within {rule.max_loss})")
    return Decision(ok, reasons)


def promoted_doc(params_doc: dict[str, Any], report: dict[str, Any], decision: Decision) -> dict[str, Any]:
    """The MongoDB document of a promoted version."""
    return {
        "_id": str(params_doc["version"]),
        "version": str(params_doc["version"]),
        "params": params_doc,
        "promoted_at": datetime.now(UTC),
        "from_version": report.get("from_version"),
        "reasons": decision.reasons,
    }


LATEST = {"sort": [("promoted_at", -1)]}
