"""The HTTP API: ingest, recommendations, admin actions, health and OpenAPI docs.

``create_app(settings)`` builds the Litestar app; ``app_from_env()`` is the factory the
production server (granian) calls in each worker process.
"""

from __future__ import annotations

import gc
import math
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Router, get
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.plugins.prometheus import PrometheusController

from freshrec.lifecycle import build_lifecycle
from freshrec.settings import Settings, load_settings
from freshrec.variants import VariantSplit
from serving.auth import admin_guard
from serving.bench_endpoints import BenchController
from serving.errors import EXCEPTION_HANDLERS, JsonBodyRequest
from serving.http_metrics import http_metrics_middleware
from serving.ingest import EventsController
from serving.item_index import ItemIndex
from serving.items import CatalogueController, CataloguePagesController, ItemsController
from serving.models import ModelsController
from serving.monitoring import MonitoringController, start_api_monitor
from serving.producer import EventProducer
from serving.rate_limit import RateLimitMiddleware, TokenBucketLimiter, client_address
from serving.recommendations import RecommendationsController
from serving.recommender import Recommender
from serving.rules import RulesController
from serving.schemas import Health
from serving.shop import ShopController, cors_config
from serving.users import ErasuresController, UserAdmin, UsersAdminController
from state.replica import UserStateReplica
from state.store import RedisStore

# Serving must answer fast or fall back: a Redis call that takes longer than this is failed.
REDIS_TIMEOUT_S = 0.05
# Admin actions may wait longer (an erasure's script scans the holdout and alarm streams).
ADMIN_REDIS_TIMEOUT_S = 5.0


def create_app(settings: Settings) -> Litestar:
    """Build the API for ``settings``."""
    store = RedisStore.from_url(
        settings.redis_url, settings.redis_prefix, settings.factors, timeout_s=REDIS_TIMEOUT_S
    )
    index = ItemIndex(
        RedisStore.from_url(
            settings.redis_url, settings.redis_prefix, settings.factors, timeout_s=1.0
        ),
        settings.item_refresh_ms / 1000,
    )
    replica = (
        UserStateReplica(
            index.store, settings.serving_replica_mb * 2**20, settings.user_retention_s
        )
        if settings.serving_replica_mb
        else None
    )
    recommender = Recommender(
        store,
        index,
        VariantSplit(settings.variants),
        new_item_share=settings.new_item_share,
        replica=replica,
    )
    lifecycle = build_lifecycle(settings)
    producer_box: list[EventProducer] = []
    users = UserAdmin(
        settings,
        RedisStore.from_url(
            settings.redis_url,
            settings.redis_prefix,
            settings.factors,
            timeout_s=ADMIN_REDIS_TIMEOUT_S,
        ),
        recommender,
        lambda: producer_box[0],
    )

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        producer_box.append(
            EventProducer(
                settings.kafka_bootstrap,
                linger_ms=settings.producer_linger_ms,
                timeout_s=settings.produce_timeout_s,
                client_config=settings.kafka_config,
            )
        )
        index.start()
        if replica is not None:
            replica.start()
        stop_monitor = threading.Event()
        start_api_monitor(index.store, stop_monitor)
        # Everything built so far lives as long as the process: keep it out of the cyclic
        # collector's full passes (one cost ~50 ms, a stalled request, every ~25k requests).
        gc.freeze()
        try:
            yield
        finally:
            stop_monitor.set()
            if replica is not None:
                replica.stop()
            index.stop()
            producer_box.pop().close()
            users.store.client.close()

    @get("/health", tags=["system"], sync_to_thread=False, summary="Liveness and dependencies")
    def health() -> Health:
        matrix = index.current
        return Health("ok", index.redis_ok, matrix.size, matrix.seq, matrix.model_version)

    return Litestar(
        route_handlers=[
            ingest_router(settings),
            RecommendationsController,
            ItemsController,
            CataloguePagesController,
            # Guards only where needed: Litestar copies the handler for every guard call,
            # which cost every request ~30 µs when the admin check was app-wide.
            Router(
                path="/",
                route_handlers=[
                    CatalogueController,
                    ModelsController,
                    RulesController,
                    UsersAdminController,
                    ErasuresController,
                ],
                guards=[admin_guard(settings)],
            ),
            health,
            MetricsController,
            MonitoringController,
            ShopController,
            *([BenchController] if settings.bench_endpoints else []),
        ],
        # Labelled by route template, not by raw path (bounded cardinality).
        middleware=[http_metrics_middleware(exclude=("/metrics", "/docs"))],
        dependencies={
            "store": Provide(lambda: store, sync_to_thread=False),
            "lifecycle": Provide(lambda: lifecycle, sync_to_thread=False),
            "settings": Provide(lambda: settings, sync_to_thread=False),
            "producer": Provide(lambda: producer_box[0], sync_to_thread=False),
            "recommender": Provide(lambda: recommender, sync_to_thread=False),
            "users": Provide(lambda: users, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        request_class=JsonBodyRequest,
        cors_config=cors_config(settings),
        lifespan=[lifespan],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="freshrec",
            version="0.1.0",
            description="Real-time personalization: send events, get recommendations.",
            path="/docs",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        ),
    )


def ingest_router(settings: Settings) -> Router:
    """The ingest endpoint, rate-limited per client when a limit is set."""
    rate = settings.ingest_rate_limit_per_s
    burst = settings.ingest_rate_burst or max(1, math.ceil(rate))
    middleware = (
        [RateLimitMiddleware(TokenBucketLimiter(rate, burst), client_address)] if rate else []
    )
    return Router(path="/", route_handlers=[EventsController], middleware=middleware)


class MetricsController(PrometheusController):
    """Prometheus ``/metrics`` (multi-process aware when PROMETHEUS_MULTIPROC_DIR is set)."""

    path = "/metrics"
    include_in_schema = False


def app_from_env() -> Litestar:
    """Factory for the production server: settings from the environment."""
    return create_app(load_settings())
