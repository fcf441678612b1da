"""Router service application: wiring (providers, Redis, MongoDB, breakers, scores, policy).

The RPCs are in ``servicer.py`` (proto <-> domain); the routing decision in ``decision.py``;
the I/O that carries it out in ``engine.py``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc
import redis.asyncio as aioredis

from masterx.router.v1 import router_pb2_grpc
from masterx_runtime.config import load
from masterx_runtime.errors import Unavailable
from masterx_runtime.readiness import Dependency
from masterx_runtime.server import ServiceApp
from masterx_runtime.settings import PeerSettings
from masterx_runtime.stores.mongo_store import MongoSettings, MongoStore
from masterx_runtime.stores.redis_store import RedisSettings, connect_redis, redis_dependency
from services.router.breaker import BreakerBoard, BreakerConfig
from services.router.category import CategoryDetector
from services.router.classifier.model import MODEL_PATH, CategoryClassifier
from services.router.config import RouterSettings
from services.router.emotion_peer import EmotionPeer
from services.router.engine import Router
from services.router.ledger import INDEXES, CostLedger, RateLimiter
from services.router.policy import load_policy
from services.router.priors import load_priors
from services.router.providers.base import Provider, ProviderSpec
from services.router.providers.http import HttpClient, make_http_client
from services.router.providers.registry import build_provider, load_specs
from services.router.scores import ScoreBook, ScoreRefresher
from services.router.servicer import RouterServicer, analyze_scores, evidence_from
from services.router.sessions import SessionStore

log = logging.getLogger("masterx.router")


def breaker_config(cfg: RouterSettings) -> BreakerConfig:
    return BreakerConfig(
        window_type=cfg.breaker_window_type,
        window_size=cfg.breaker_window_size,
        min_calls=cfg.breaker_min_calls,
        failure_rate=cfg.breaker_failure_rate,
        slow_call_seconds=cfg.breaker_slow_call_seconds,
        slow_call_rate=cfg.breaker_slow_call_rate,
        open_seconds=cfg.breaker_open_seconds,
        open_multiplier=cfg.breaker_open_multiplier,
        open_max_seconds=cfg.breaker_open_max_seconds,
        half_open_calls=cfg.breaker_half_open_calls,
        permit_ttl_seconds=max(2 * cfg.attempt_timeout_seconds, 10.0),
    )


class RouterApp(ServiceApp):
    """Everything is configured from the environment (see services/router/config.py).

    ``environ`` overrides ``os.environ`` (tests point one app at the fake LLM server this way);
    ``clock`` is the breakers' clock (unix seconds), injectable for tests.
    """

    name = "router"
    service_names = ("masterx.router.v1.RouterService",)
    default_grpc_port = 50053
    default_metrics_port = 9103

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.environ: dict[str, str] = dict(os.environ if environ is None else environ)
        self.cfg = load(RouterSettings, self.environ)
        self.redis_cfg = load(RedisSettings, self.environ)
        self.mongo_cfg = load(MongoSettings, self.environ)
        self.peers = load(PeerSettings, self.environ)
        self.specs: list[ProviderSpec] = load_specs(self.cfg, self.environ)
        self.policy = load_policy(self.cfg.policy_file or None)
        self.priors = load_priors(self.cfg.priors_file or None)
        self.clock = clock
        self._router: Router | None = None
        self.redis: aioredis.Redis | None = None
        self.mongo: MongoStore | None = None
        self.http: HttpClient | None = None
        self.providers: dict[str, Provider] = {}
        self.breakers: BreakerBoard | None = None
        self.refresher: ScoreRefresher | None = None
        self.book = ScoreBook(
            self.specs,
            self.priors,
            unknown_quality=self.policy.unknown_quality,
            default_speed=self.policy.default_speed,
        )
        self.detector: CategoryDetector | None = None
        self.emotion: EmotionPeer | None = None

    @property
    def category_emotion_addr(self) -> str:
        """Where a request without an emotion result gets its category ('' = TF-IDF only)."""
        addr = self.cfg.category_emotion_addr
        return self.peers.emotion_addr if addr == "auto" else addr

    @property
    def router(self) -> Router:
        if self._router is None:
            raise Unavailable("the router is starting (not SERVING yet); retry shortly", reason="NOT_READY")
        return self._router

    def register(self, server: grpc.aio.Server) -> None:
        router_pb2_grpc.add_RouterServiceServicer_to_server(RouterServicer(self), server)

    async def start(self) -> None:
        """Connect Redis and MongoDB, build providers and breakers; SERVING only after this returns."""
        self.redis = await connect_redis(self.redis_cfg)
        self.mongo = MongoStore(self.mongo_cfg)
        await self.mongo.connect(indexes=INDEXES)
        prefix = self.redis_cfg.key_prefix
        self.http = make_http_client(connect_timeout=self.cfg.connect_timeout_seconds)
        self.providers = {s.name: build_provider(s, self.http, self.environ) for s in self.specs}
        for provider in self.providers.values():
            await provider.start()
            if not provider.unavailable_reason():
                await provider.wait_ready()
        self.breakers = BreakerBoard(
            self.redis,
            self.providers,
            breaker_config(self.cfg),
            key_prefix=prefix,
            clock=self.clock,
            refresh_seconds=self.cfg.breaker_refresh_seconds,
        )
        await self.breakers.start()
        classifier = CategoryClassifier(self.cfg.classifier_path or MODEL_PATH)
        self.detector = CategoryDetector(
            classifier,
            emotion_addr=self.category_emotion_addr,
            timeout_seconds=self.cfg.category_timeout_ms / 1000,
            retry_seconds=self.cfg.category_retry_seconds,
            convert=analyze_scores,
        )
        self.emotion = EmotionPeer(
            self.peers.emotion_addr,
            timeout_seconds=self.cfg.emotion_timeout_ms / 1000,
            convert=evidence_from,
            stream=self.cfg.emotion_stream,
        )
        self._router = Router(
            self.cfg,
            self.policy,
            self.providers,
            breakers=self.breakers,
            sessions=SessionStore(self.redis, key_prefix=prefix, ttl_seconds=self.cfg.session_ttl_seconds),
            book=self.book,
            ledger=CostLedger(
                self.mongo.db, self.redis, key_prefix=prefix, flush_seconds=self.cfg.ledger_flush_seconds
            ),
            limiter=RateLimiter(self.redis, {s.name: (s.rpm, s.tpm) for s in self.specs}, key_prefix=prefix),
            detector=self.detector,
            emotion=self.emotion,
        )
        if self.cfg.scores_enabled:
            self.refresher = ScoreRefresher(
                self.book, self.peers.benchmark_addr, self.cfg.scores_refresh_seconds, self.cfg.scores_max_age_seconds
            )
            self.refresher.start()
        log.info(
            "router ready",
            extra={
                "providers": [f"{s.name}:{s.kind}:{s.model}" for s in self.specs],
                "classifier": classifier.version,
                "category_from": self.category_emotion_addr or "classifier only",
                "priors": self.priors.version,
            },
        )

    async def stop(self) -> None:
        if self._router is not None:
            await self._router.close()
            await self._router.ledger.close()
        if self.refresher is not None:
            await self.refresher.stop()
        if self.detector is not None:
            await self.detector.close()
        if self.emotion is not None:
            await self.emotion.close()
        if self.breakers is not None:
            await self.breakers.stop()
        for provider in self.providers.values():
            await provider.close()
        if self.http is not None:
            await self.http.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        if self.mongo is not None:
            await self.mongo.close()

    def dependencies(self) -> list[Dependency]:
        """Both optional: chat goes on without Redis (degraded sessions/breakers) and without
        MongoDB (ledger charges wait in the outbox); /health reports them."""
        deps = [redis_dependency(self.redis, required=False)] if self.redis is not None else []
        return deps + ([self.mongo.dependency(required=False)] if self.mongo is not None else [])

    def health_details(self) -> Mapping[str, Any]:
        details: dict[str, Any] = {"providers": [s.name for s in self.specs]}
        if self.breakers is not None:
            details["breakers"] = {n: v.state for n, v in self.breakers.views.items()}
        details["scores"] = "benchmark" if self.book.last_refresh else "priors"
        details["priors_version"] = self.priors.version
        if self._router is not None:
            # charges of answered requests not yet handed to the ledger's outbox (at most one flush
            # interval old); the outbox's own backlog is under "outboxes"
            details["ledger"] = {
                "queued_charges": self._router.ledger.queued,
                "flush_seconds": self._router.ledger.flush_seconds,
            }
        return details
