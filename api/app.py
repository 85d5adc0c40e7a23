"""The FastAPI application: routes under /api/v1, the signed-request gate in front of them, one
error shape for everything, and a structured access log line per request.

`create_app()` builds a fresh app; `paratro api`, the sandbox and the tests each serve their own.
The gate is a plain ASGI middleware rather than a FastAPI dependency so that it runs before
anything reads the request: it takes the raw body once (capped at MAX_BODY_BYTES), verifies the
signature over exactly those bytes and the raw request target, and only then lets the router
parse JSON. An unauthenticated caller therefore learns nothing, not even whether its JSON was
valid or a route exists.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI

from api.auth import Guard, database_lookup
from api.errors import INTERNAL_MESSAGE, ApiError, error_response, install_error_handlers, translate
from api.readiness import Readiness
from pipeline.settings import Settings, get_settings
from pipeline.steps import StepContext

log = structlog.get_logger("paratro.api")

API_PREFIX = "/api/v1"
UNSIGNED_PATHS = frozenset({f"{API_PREFIX}/health", f"{API_PREFIX}/ready"})
MAX_BODY_BYTES = 64 * 1024

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]


def needs_signature(path: str) -> bool:
    """Everything under /api/v1 except health and readiness."""
    return (path == API_PREFIX or path.startswith(API_PREFIX + "/")) and path not in UNSIGNED_PATHS


class _BodyTooLarge(Exception):
    pass


async def _read_body(scope: Scope, receive: Receive) -> bytes:
    for name, value in scope.get("headers", ()):
        if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY_BYTES:
            raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body already read, then the connection's own messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class Gate:
    """Signed-request check for /api/v1, 500 `internal_error` for anything unexpected (logged, never
    answered), and one access log line per request: method, path (no query), status, latency and
    client id. Headers are never logged, so no signature or key material reaches the logs."""

    def __init__(self, app: Any, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: dict[str, Any] = {"status": None, "client_id": None}

        async def send_noting_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            await send(message)

        try:
            if needs_signature(scope["path"]):
                try:
                    body = await _read_body(scope, receive)
                except _BodyTooLarge:
                    raise ApiError(413, "payload_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes") from None
                state["client_id"] = await self.guard.authenticate(scope, body)
                scope.setdefault("state", {})["client_id"] = state["client_id"]
                receive = _replaying(body, receive)
            await self.app(scope, receive, send_noting_status)
        except Exception as exc:  # noqa: BLE001 - the one place an unexpected error becomes a 500
            mapped = translate(exc)
            if mapped is None:
                log.error("api.internal_error", error=type(exc).__name__, method=scope.get("method"),
                          path=scope.get("path"), exc_info=True)
            if state["status"] is None:
                answer = mapped.response() if mapped else error_response(500, "internal_error", INTERNAL_MESSAGE)
                await answer(scope, receive, send_noting_status)
        finally:
            log.info("api.request", method=scope.get("method"), path=scope.get("path"), status=state["status"],
                     ms=round((time.perf_counter() - started) * 1000, 1), client_id=state["client_id"])


def create_app(faucet: Any = None, *, settings: Settings | None = None,
               context: Callable[[], StepContext] | None = None) -> FastAPI:
    """The API app.

    `faucet`: a devnet faucet (workers.faucet.DevnetFaucet); when given AND the registry is a
    devnet, `POST /api/v1/devnet/faucet` exists (api.devnet) and the faucet is `app.state.faucet`.
    `settings`: overrides of the API's own knobs (rate limit, signature window, broker URL) for
    tests; the pipeline itself reads the process settings. `context`: what gives the StepContext
    (default `workers.runtime.context`, built once per process).
    """
    from workers import runtime

    settings = settings or get_settings()
    provider = context or runtime.context
    guard = Guard(settings.broker_url, settings.api_signature_window_s, settings.api_rate_limit_per_min,
                  database_lookup(provider, settings), failures_per_ip=settings.api_auth_failures_per_ip_per_min,
                  failures_per_key=settings.api_auth_failures_per_key_per_min)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await guard.aclose()

    app = FastAPI(
        title="Paratro API",
        version="1",
        description=_DESCRIPTION,
        lifespan=lifespan,
        redirect_slashes=False,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.context = provider
    app.state.guard = guard
    app.state.readiness = Readiness()  # /ready's probe cache: a public URL must not fan out to every node
    install_error_handlers(app)
    app.add_middleware(Gate, guard=guard)

    from api.routes import accounts, assets, chains, health, transactions, wallets, webhook

    app.include_router(health.router, prefix=API_PREFIX)
    app.include_router(health.router, include_in_schema=False)  # /health and /ready for container checks
    for module in (wallets, accounts, assets, transactions, chains, webhook):
        app.include_router(module.router, prefix=API_PREFIX)
    _include_metrics(app)
    if faucet is not None and runtime.registry_from(settings).is_devnet:
        if importlib.util.find_spec("api.devnet") is None:
            log.warning("api.no_faucet_routes", reason="api.devnet is missing")
        else:
            from api import devnet

            app.state.faucet = faucet
            app.include_router(devnet.router, prefix=API_PREFIX)
    return app


def _include_metrics(app: FastAPI) -> None:
    """`GET /metrics` (unauthenticated, like health: do not expose it publicly) when api.metrics exists."""
    if importlib.util.find_spec("api.metrics") is None:
        return
    from api import metrics

    metrics.install(app)  # the /metrics route and the request metrics middleware


_DESCRIPTION = """
Paratro custody API. Every request under /api/v1 except /health and /ready is signed:

    X-Paratro-Key: <api key id>
    X-Paratro-Timestamp: <unix seconds>
    X-Paratro-Nonce: <8-64 chars of [A-Za-z0-9_-], fresh per request>
    X-Paratro-Signature: hex(HMAC-SHA256(api_secret,
        timestamp + "\\n" + nonce + "\\n" + METHOD + "\\n" + path_with_query + "\\n" + hex(sha256(body))))

Amounts are decimal strings in token units, ids prefixed ULIDs, timestamps ISO-8601 UTC. Errors are
`{"error": {"code", "message", "field"}}`. Lists are `{"data": [...], "next_cursor"}`, newest first.
"""
