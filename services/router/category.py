"""Category probabilities for a request that brought none.

In a chat turn the gateway sends the emotion result, whose ``category_scores`` come from the
same encoder pass as the emotions, so the router runs no model. A direct gRPC caller sends no
emotion result; then, in order:

1. the emotion service's ``Analyze`` (no ``user_id``, so nothing is written to any history),
   over ``ROUTER_CATEGORY_EMOTION_ADDR`` with a ``ROUTER_CATEGORY_TIMEOUT_MS`` deadline; after a
   failure (unreachable, deadline, a model without a category head) it is not asked again for
   ``ROUTER_CATEGORY_RETRY_SECONDS``, so an outage costs one short wait, not one per request;
2. the TF-IDF classifier shipped with the router (``classifier/``), the documented fallback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc
from masterx_runtime.clients import channel
from masterx_runtime.errors import InvalidArgument
from services.router.classifier.model import CATEGORIES as CLASSIFIER_CATEGORIES
from services.router.classifier.model import CategoryClassifier
from services.router.domain import CATEGORIES, CategoryScores, CategorySource

log = logging.getLogger("masterx.router.category")

if CLASSIFIER_CATEGORIES != CATEGORIES:  # the fallback's probabilities are read in this order
    raise ImportError(f"classifier categories {CLASSIFIER_CATEGORIES} differ from the router's {CATEGORIES}")

#: Scores from the emotion service: (probabilities over CATEGORIES, follow-up, model version) or None.
AnalyzeResult = tuple[tuple[float, ...], float, str] | None


class CategoryDetector:
    def __init__(
        self,
        classifier: CategoryClassifier,
        *,
        emotion_addr: str = "",
        timeout_seconds: float = 0.25,
        retry_seconds: float = 30.0,
        convert: Callable[[emotion_pb2.AnalyzeResponse], AnalyzeResult] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.classifier = classifier
        self.emotion_addr = emotion_addr
        self.timeout_seconds = timeout_seconds
        self.retry_seconds = retry_seconds
        self.clock = clock
        self._convert = convert
        self._channel: grpc.aio.Channel | None = None
        self._skip_until = 0.0
        self.last_error = ""

    def classify(self, text: str) -> CategoryScores:
        """The TF-IDF fallback (about 0.1 ms)."""
        p = self.classifier.predict(text)
        return CategoryScores(
            tuple(float(x) for x in p.probabilities),
            float(p.followup),
            CategorySource.CLASSIFIER,
            f"tf-idf {self.classifier.version}",
        )

    async def detect(self, text: str) -> CategoryScores:
        if self.emotion_addr and self._convert is not None and self.clock() >= self._skip_until:
            scores = await self._ask_emotion(text)
            if scores is not None:
                return scores
        return self.classify(text)

    async def _ask_emotion(self, text: str) -> CategoryScores | None:
        assert self._convert is not None
        if self._channel is None:
            self._channel = channel(self.emotion_addr)
        stub = emotion_pb2_grpc.EmotionServiceStub(self._channel)
        try:
            response = await stub.Analyze(emotion_pb2.AnalyzeRequest(text=text), timeout=self.timeout_seconds)
            result = self._convert(response)
            why = "" if result is not None else "the emotion model has no category head"
        except grpc.aio.AioRpcError as err:
            result, why = None, f"{err.code().name}: {err.details()}"
        except InvalidArgument as err:  # malformed scores from the peer
            result, why = None, f"bad category scores: {err}"
        if result is None:
            self._skip_until = self.clock() + self.retry_seconds
            if why != self.last_error:
                log.warning(
                    "emotion service gives no category; using the TF-IDF classifier",
                    extra={"error": why, "retry_seconds": self.retry_seconds},
                )
            self.last_error = why
            return None
        self.last_error = ""
        probabilities, followup, version = result
        return CategoryScores(probabilities, followup, CategorySource.EMOTION_SERVICE, version)

    async def close(self) -> None:
        if self._channel is not None:
            await asyncio.shield(self._channel.close())
            self._channel = None
