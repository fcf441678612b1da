"""EmotionResult construction: a model prediction plus the learning models -> the proto the RPCs return.

:class:`ResultBuilder` turns a :class:`~services.emotion.engine.Prediction` and the served
:class:`~services.emotion.learning.LearningParams` into a ``common_pb2.EmotionResult`` (scores,
PAD, learning state, readiness, intervention, Ekman groups, categories, urgency) and into the
:class:`~services.emotion.turns.Turn` the outcome loop stores. The enum tables between the
domain's names ("confused", "high") and the proto enums live here too; the servicer reuses them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from masterx.common.v1 import common_pb2
from masterx.emotion.v1 import emotion_pb2
from services.emotion.engine import EmotionModel, Prediction
from services.emotion.learning import LearningParams, StudentContext, has_context
from services.emotion.outcomes import OUTCOME_NAMES
from services.emotion.turns import Turn

STATE_ENUM = {
    s: common_pb2.LearningState.Value(f"LEARNING_STATE_{s.upper()}")
    for s in ("confused", "frustrated", "anxious", "bored", "engaged", "confident", "neutral")
}
STATE_NAME = {v: k for k, v in STATE_ENUM.items()}
READINESS_ENUM = {
    s: common_pb2.ReadinessLevel.Value(f"READINESS_LEVEL_{s.upper()}")
    for s in ("not_ready", "low", "moderate", "high", "optimal")
}
INTERVENTION_ENUM = {
    s: common_pb2.InterventionLevel.Value(f"INTERVENTION_LEVEL_{s.upper()}")
    for s in ("none", "low", "medium", "high", "critical")
}
INTERVENTION_NAME = {v: k for k, v in INTERVENTION_ENUM.items()}
OUTCOME_NAME = {emotion_pb2.OutcomeKind.Value(f"OUTCOME_KIND_{n.upper()}"): n for n in OUTCOME_NAMES}


def category_enum(name: str) -> common_pb2.Category.ValueType:
    return common_pb2.Category.Value(f"CATEGORY_{name.upper()}")


def trajectory_enum(name: str) -> common_pb2.Trajectory.ValueType:
    return common_pb2.Trajectory.Value(f"TRAJECTORY_{name.upper()}")


def pad_message(p: Sequence[float]) -> common_pb2.PAD:
    return common_pb2.PAD(pleasure=p[0], arousal=p[1], dominance=p[2])


def predicted(result: common_pb2.EmotionResult) -> dict[str, Any]:
    """What the service predicted for a turn, as stored with turns and outcomes."""
    out: dict[str, Any] = {
        "learning_state": STATE_NAME.get(result.learning_state),
        "readiness_score": result.readiness.score,
        "intervention_level": INTERVENTION_NAME.get(result.intervention.level),
        "intervention_score": result.intervention.score,
    }
    if result.HasField("urgency"):
        out["urgency_probability"] = result.urgency.probability
    return out


def urgency_doc(result: common_pb2.EmotionResult) -> dict[str, float] | None:
    """The urgency head's answer as stored with turns and outcomes (None without the head)."""
    if not result.HasField("urgency"):
        return None
    return {"probability": result.urgency.probability, "score": result.urgency.score}


def context_doc(ctx: StudentContext | None) -> dict[str, float]:
    if ctx is None:
        return {}
    values = (
        ("engagement", ctx.engagement),
        ("cognitive_load", ctx.cognitive_load),
        ("time_on_task_seconds", ctx.time_on_task_seconds),
    )
    return {k: float(v) for k, v in values if v is not None}


class ResultBuilder:
    """Builds results for one loaded model (its labels, Ekman groups and categories)."""

    def __init__(self, model: EmotionModel, labels: Sequence[str]) -> None:
        self.model = model
        self.labels = list(labels)
        self.category_enums = [category_enum(c) for c in model.categories]
        # The repeated score messages with their names filled in: build() merges this template
        # (one C-level copy) and sets only the numbers, instead of making 40-odd messages.
        self._label_index = {lab: j for j, lab in enumerate(self.labels)}
        self._scores = common_pb2.EmotionResult(
            scores=[common_pb2.EmotionScore(label=lab) for lab in self.labels],
        )
        self._ekman = common_pb2.EmotionResult(
            ekman_scores=[common_pb2.EkmanScore(group=g) for g in model.ekman_groups],
        )
        self._categories = common_pb2.EmotionResult(
            category_scores=[common_pb2.CategoryScore(category=c) for c in self.category_enums],
        )
        self._versions: dict[str, str] = {}

    def build(
        self, pred: Prediction, ctx: StudentContext | None, params: LearningParams
    ) -> tuple[common_pb2.EmotionResult, str]:
        """EmotionResult without latency/trajectory; also returns the learning-state name."""
        urgency = pred.urgency_probability
        out = params.evaluate(params.feature_vector(pred.probabilities, pred.pad, ctx, urgency), has_context(ctx))
        model = self.model
        version = self._versions.get(params.version)
        if version is None:
            version = self._versions.setdefault(params.version, f"{model.model_version}+{params.version}")
        pleasure, arousal, dominance = pred.pad
        result = common_pb2.EmotionResult(
            primary_emotion=pred.primary_label,
            confidence=pred.confidence,
            ekman_group=pred.ekman,
            pad=common_pb2.PAD(pleasure=pleasure, arousal=arousal, dominance=dominance),
            learning_state=STATE_ENUM[out.state],
            readiness=common_pb2.Readiness(score=out.readiness_score, level=READINESS_ENUM[out.readiness_level]),
            intervention=common_pb2.Intervention(
                level=INTERVENTION_ENUM[out.intervention_level], reasons=out.reasons, score=out.intervention_score
            ),
            model_version=version,
            truncated=pred.truncated,
            learning_state_scores=out.state_scores,
            ekman_active=pred.ekman_active,
        )
        probs = pred.probabilities
        if len(probs) != len(self.labels):
            raise ValueError(f"{len(probs)} probabilities for {len(self.labels)} labels")
        result.MergeFrom(self._scores)
        scores = result.scores
        for score, p in zip(scores, probs, strict=True):
            score.probability = p
        index = self._label_index
        for lab in pred.active_labels:
            j = index.get(lab)
            if j is not None:
                scores[j].active = True
        groups = pred.ekman_probabilities
        if len(groups) == len(model.ekman_groups):
            result.MergeFrom(self._ekman)
            for ekman, p in zip(result.ekman_scores, groups, strict=True):
                ekman.probability = p
        else:  # as many as both have (zip without strict)
            result.ekman_scores.extend(
                common_pb2.EkmanScore(group=g, probability=p) for g, p in zip(model.ekman_groups, groups, strict=False)
            )
        cats = pred.category_probabilities
        if cats and len(cats) == len(self.category_enums):
            result.MergeFrom(self._categories)
            for category, p in zip(result.category_scores, cats, strict=True):
                category.probability = p
            result.followup_probability = pred.followup_probability
        if urgency is not None:
            u = result.urgency
            u.probability = urgency
            u.score = pred.urgency_score
            u.model_version = model.heads_version
        return result, out.state

    def turn(
        self,
        pred: Prediction,
        result: common_pb2.EmotionResult,
        *,
        user_id: str,
        turn_id: str,
        session_id: str,
        ctx: StudentContext | None,
    ) -> Turn:
        """What the outcome loop keeps of an analysed turn."""
        return Turn(
            user_id=user_id,
            turn_id=turn_id,
            session_id=session_id,
            probabilities=dict(zip(self.labels, pred.probabilities, strict=True)),
            pad=pred.pad,
            context=context_doc(ctx),
            urgency=urgency_doc(result),
            predicted=predicted(result),
            model_version=result.model_version,
            parameters_version=result.model_version.rpartition("+")[2],
        )
