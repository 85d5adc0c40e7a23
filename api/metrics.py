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
from dataclasses import dataclass
from functools import lru_cache
from re import Pattern
from typing import Any

import fastapi.routing

from fastapi import APIRouter, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from starlette.routing import compile_path

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


@dataclass(frozen=True)
class RouteTemplate:
    path: str  # the full template, prefix included: "/api/v1/wallets/{wallet_id}"
    regex: Pattern[str]
    methods: frozenset[str] | None


def route_templates(app: Any) -> list[RouteTemplate]:
    """Every route of the app with its full path template, in matching order. FastAPI >= 0.16x
    keeps included routers unflattened (`scope["route"]` is then the router's own route, without
    the include prefix), so the templates come from its public `iter_route_contexts` when present."""
    routes = list(getattr(app, "routes", ()))
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    templates = []
    for entry in (iterate(routes) if iterate is not None else routes):
        path = getattr(entry, "path", None)
        if isinstance(path, str) and path.startswith("/"):
            methods = getattr(entry, "methods", None)
            templates.append(RouteTemplate(path, compile_path(path)[0], frozenset(methods) if methods else None))
    return templates


def route_label(scope: dict[str, Any], templates: list[RouteTemplate]) -> str:
    """The template of the route that serves (or would serve) this request, whether or not the
    router ran (the signature gate answers 401/429 before routing); a path that matches only with
    another method (405) still has its template. UNMATCHED when nothing matches."""
    path = scope.get("path", "")
    partial = None
    for template in templates:
        if template.regex.match(path):
            if template.methods is None or scope.get("method") in template.methods:
                return template.path
            partial = partial or template.path
    return partial or UNMATCHED


class RequestMetricsMiddleware:
    """Pure ASGI middleware: counts each HTTP request and times it until the response is sent."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._templates: list[RouteTemplate] | None = None  # built on the first request, routes complete

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
            try:
                if self._templates is None:
                    self._templates = route_templates(scope.get("app"))
                route = route_label(scope, self._templates)
            except Exception:  # noqa: BLE001 - a label is not worth failing a request
                route = UNMATCHED
            method = scope.get("method", "")
            method = method if method in METHODS else "OTHER"
            REQUESTS.labels(method, route, str(status["code"])).inc()
            LATENCY.labels(method, route).observe(time.perf_counter() - started)


def install(app: Any) -> None:
    """Add the request metrics middleware and the /metrics route to a FastAPI app."""
    app.add_middleware(RequestMetricsMiddleware)
    if not any(getattr(route, "path", None) == "/metrics" for route in app.router.routes):
        app.include_router(router)
