"""`GET /metrics` for the API process: its own request counters and latency, plus the pipeline's
snapshot gauges (transfers by chain and status, pending by stage, outbox lag, webhook backlog and
attempts, queue depths), read from the database and Redis at scrape time.

No authentication, like `/health`: the endpoint reveals volumes, not data, but it is for the
deployment's Prometheus only. Do not route `/metrics` through the public ingress (block it at the
proxy, or scrape the container port from the internal network).

Request metrics are labelled by method, the route *template* (`/api/v1/wallets/{wallet_id}`) and
status code: never the raw path, whose ids would make a series per resource. The app adds
`RequestMetricsMiddleware` (`install(app)`); the router alone serves the page.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from starlette.routing import Match

from pipeline.settings import get_settings

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
UNMATCHED = "unmatched"  # no route matched: 404s of arbitrary paths share one series
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# A registry of the API's own: the worker metrics (workers.metrics) are a Celery process's business.
REGISTRY = CollectorRegistry()
REQUESTS = Counter("paratro_api_requests", "HTTP requests by method, route template and status code",
                   ["method", "route", "status"], registry=REGISTRY)
LATENCY = Histogram("paratro_api_request_duration_seconds", "HTTP request latency by method and route template",
                    ["method", "route"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
ProcessCollector(registry=REGISTRY)

router = APIRouter()


@lru_cache(maxsize=1)
def _snapshot_registered() -> bool:
    """Register the snapshot collector on first scrape (importing the Celery app's queue names
    only when metrics are asked for); it reads the settings current at each scrape."""
    from workers.metrics import settings_collector

    REGISTRY.register(settings_collector(get_settings))
    return True


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    """Prometheus text format; for the deployment's scraper only (see the module docstring)."""
    _snapshot_registered()
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_PLAIN_0_0_4)


def route_label(scope: dict[str, Any]) -> str:
    """The matched route's path template: set on the scope by Starlette's router, or, for a request
    answered before routing (the signature gate's 401, 429), found by matching the app's routes
    the same way. UNMATCHED when no route matches."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str) and path:
        return path
    app = scope.get("app")
    partial = None
    for route in getattr(getattr(app, "router", None), "routes", ()):
        try:
            match, _ = route.matches(scope)
        except Exception:  # noqa: BLE001 - a label is not worth failing a request
            continue
        if match is Match.FULL:
            return str(route.path)
        if match is Match.PARTIAL and partial is None:
            partial = str(route.path)
    return partial or UNMATCHED


class RequestMetricsMiddleware:
    """Pure ASGI middleware: counts each HTTP request and times it until the response is sent."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}  # an exception that escapes every handler ends as a 500

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            method = scope.get("method", "")
            method = method if method in METHODS else "OTHER"
            route = route_label(scope)
            REQUESTS.labels(method, route, str(status["code"])).inc()
            LATENCY.labels(method, route).observe(time.perf_counter() - started)


def install(app: Any) -> None:
    """Add the request metrics middleware and the /metrics route to a FastAPI app."""
    app.add_middleware(RequestMetricsMiddleware)
    if not any(getattr(route, "path", None) == "/metrics" for route in app.router.routes):
        app.include_router(router)
