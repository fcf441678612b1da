"""Per-student trend: PAD exponential moving average and a trajectory from the pleasure slope.

Pure functions over a chronological list of PAD triples, so the same code serves Analyze (the
stored window plus the new message) and GetTrajectory (the stored window alone).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

PadTriple = tuple[float, float, float]


class Trend(StrEnum):
    """Trajectory names; they match the common.proto Trajectory enum (TRAJECTORY_<NAME>)."""

    IMPROVING = "improving"
    DECLINING = "declining"
    STABLE_POSITIVE = "stable_positive"
    STABLE_NEUTRAL = "stable_neutral"
    STABLE_NEGATIVE = "stable_negative"
    INSUFFICIENT_DATA = "insufficient_data"


@dataclass(frozen=True)
class TrajectoryParams:
    """Thresholds from config (see EmotionSettings)."""

    ema_alpha: float = 0.3
    window: int = 8
    min_messages: int = 3
    slope_threshold: float = 0.02
    positive_pleasure: float = 0.58
    negative_pleasure: float = 0.42

    def ema_lookback(self, residual: float = 1e-3) -> int:
        """Entries needed so that older messages weigh less than ``residual`` in the EMA."""
        if self.ema_alpha >= 1.0:
            return 1
        return max(1, math.ceil(math.log(residual) / math.log(1.0 - self.ema_alpha)))

    def lookback(self) -> int:
        """History entries to read to compute both the EMA and the trend."""
        return max(self.window, self.ema_lookback())


@dataclass(frozen=True)
class TrajectoryResult:
    trend: Trend
    slope: float
    pad_ema: PadTriple
    window_mean_pleasure: float


def pad_ema(pads: Sequence[PadTriple], alpha: float) -> PadTriple:
    """EMA of PAD, oldest first, initialised with the first value."""
    if not pads:
        raise ValueError("pad_ema needs at least one value")
    p, a, d = pads[0]
    for np_, na, nd in pads[1:]:
        p += alpha * (np_ - p)
        a += alpha * (na - a)
        d += alpha * (nd - d)
    return (p, a, d)


def slope(values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against their index (change per message)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x = (n - 1) / 2.0
    mean_y = sum(values) / n
    sxx = sum((i - mean_x) ** 2 for i in range(n))
    sxy = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    return sxy / sxx


def classify(pads: Sequence[PadTriple], params: TrajectoryParams) -> TrajectoryResult:
    """Trajectory of a chronological PAD sequence (the newest message last)."""
    if not pads:
        raise ValueError("classify needs at least one message")
    ema = pad_ema(pads[-params.ema_lookback() :], params.ema_alpha)
    recent = [p for p, _, _ in pads[-params.window :]]
    mean_p = sum(recent) / len(recent)
    if len(pads) < params.min_messages:
        return TrajectoryResult(Trend.INSUFFICIENT_DATA, slope(recent), ema, mean_p)
    s = slope(recent)
    if s >= params.slope_threshold:
        trend = Trend.IMPROVING
    elif s <= -params.slope_threshold:
        trend = Trend.DECLINING
    elif mean_p >= params.positive_pleasure:
        trend = Trend.STABLE_POSITIVE
    elif mean_p <= params.negative_pleasure:
        trend = Trend.STABLE_NEGATIVE
    else:
        trend = Trend.STABLE_NEUTRAL
    return TrajectoryResult(trend, s, ema, mean_p)
