"""Router service application: wiring (providers, Redis, MongoDB, breakers, scores, policy).

The RPCs are in ``servicer.py`` (proto <-> domain); the routing decision in ``decision.py``;
the I/O that carries it out in ``engine.py``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc
import redis.asyncio as aioredis

from masterx.router.v1 import router_pb2, router_pb2_grpc
from masterx_runtime.config import load
from masterx_runtime.errors import InvalidArgument, NotFound, Unavailable
from masterx_runtime.readiness import Dependency
from masterx_runtime.server import ServiceApp
from masterx_runtime.settings import PeerSettings
from masterx_runtime.stores.mongo_store import MongoSettings, MongoStore
from masterx_runtime.stores.redis_store import RedisSettings, connect_redis, redis_dependency
from services.router.breaker import BreakerBoard, BreakerConfig
from services.router.category import CategoryDetector
from services.router.classifier.model import CATEGORY_ENUM, MODEL_PATH, CategoryClassifier
from services.router.config import RouterSettings
from services.router.engine import Router
from services.router.ledger import INDEXES, CostLedger, RateLimiter, parse_day, utc_day
from services.router.policy import load_policy
from services.router.priors import load_priors
from services.router.providers.base import Provider, ProviderSpec
from services.router.providers.http import ClientShards
from services.router.providers.registry import build_provider, load_specs
from services.router.scores import ScoreBook, ScoreRefresher
from services.router.servicer import RouterServicer, analyze_scores
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
        self.http: ClientShards | None = None
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
        self.http = ClientShards(connect_timeout=self.cfg.connect_timeout_seconds)
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
            emotion_addr=self.cfg.category_emotion_addr,
            timeout_seconds=self.cfg.category_timeout_ms / 1000,
            retry_seconds=self.cfg.category_retry_seconds,
            convert=analyze_scores,
        )
        self._router = Router(
            self.cfg,
            self.policy,
            self.providers,
            breakers=self.breakers,
            sessions=SessionStore(self.redis, key_prefix=prefix, ttl_seconds=self.cfg.session_ttl_seconds),
            book=self.book,
            ledger=CostLedger(self.mongo.db, self.redis, key_prefix=prefix),
            limiter=RateLimiter(self.redis, {s.name: (s.rpm, s.tpm) for s in self.specs}, key_prefix=prefix),
            detector=self.detector,
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
                "category_from": self.cfg.category_emotion_addr or "classifier only",
                "priors": self.priors.version,
            },
        )

    async def stop(self) -> None:
        if self._router is not None:
            await self._router.ledger.close()
        if self.refresher is not None:
            await self.refresher.stop()
        if self.detector is not None:
            await self.detector.close()
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
        return details

    # ------------------------------------------------------------------ read-only RPCs

    def list_providers(self) -> router_pb2.ListProvidersResponse:
        assert self.breakers is not None
        out = router_pb2.ListProvidersResponse()
        for spec in self.specs:
            view = self.breakers.views[spec.name]
            out.providers.add(
                name=spec.name,
                kind=spec.kind,
                model=spec.model,
                breaker_state=self.breakers.state_for_ranking(spec.name),
                failure_rate=view.failure_rate,
                window_calls=view.window_calls,
                input_price_per_mtok=spec.input_price_per_mtok,
                output_price_per_mtok=spec.output_price_per_mtok,
                context_window=spec.context_window,
                max_output_tokens=spec.max_output_tokens,
                consecutive_trips=view.trips,
                open_until=view.open_until,
                daily_budget_usd=spec.daily_budget_usd or self.cfg.provider_daily_budget_usd,
            )
        return out

    async def get_costs(self, request: router_pb2.GetCostsRequest) -> router_pb2.GetCostsResponse:
        today = utc_day()
        until = parse_day(request.until_day, "until_day") if request.until_day else today
        since = (
            parse_day(request.since_day, "since_day")
            if request.since_day
            else (dt.date.fromisoformat(until) - dt.timedelta(days=30)).isoformat()
        )
        if since > until:
            raise InvalidArgument(
                f"since_day {since} is after until_day {until}", reason="BAD_RANGE", field="since_day"
            )
        rows = await self.router.ledger.costs(request.user_id, request.provider, since, until)
        out = router_pb2.GetCostsResponse()
        for r in rows:
            out.rows.add(
                day=r.day,
                user_id=r.user_id,
                provider=r.provider,
                requests=r.requests,
                input_tokens=r.input_tokens,
                output_tokens=r.output_tokens,
                cost_usd=r.cost_usd,
            )
        out.total_cost_usd = sum(r.cost_usd for r in rows)
        out.total_tokens = sum(r.input_tokens + r.output_tokens for r in rows)
        out.total_requests = sum(r.requests for r in rows)
        return out

    async def get_session(self, request: router_pb2.GetSessionRequest) -> router_pb2.Session:
        if not request.session_id:
            raise InvalidArgument("session_id is required", reason="NO_SESSION_ID", field="session_id")
        session, ttl = await self.router.sessions.load_with_ttl(request.session_id)
        if session is None:
            raise NotFound(f"no session {request.session_id!r} (never routed, or expired)", reason="UNKNOWN_SESSION")
        return router_pb2.Session(
            session_id=session.session_id,
            provider=session.provider,
            category=CATEGORY_ENUM.get(session.category, 0),  # type: ignore[arg-type]
            provider_history=session.provider_history,
            topic_history=[CATEGORY_ENUM[c] for c in session.topic_history if c in CATEGORY_ENUM],  # type: ignore[misc]
            turns=session.turns,
            ttl_seconds=ttl,
        )
