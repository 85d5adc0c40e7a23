"""`GET /health` (the process answers) and `GET /ready` (it can serve: database, Redis, each chain's
node), both without authentication, at /api/v1/... and at the root for container health checks.

Readiness runs every probe at once in a small thread pool and waits at most READY_TIMEOUT_S: a
hung node is reported `down` (error `timeout`) instead of hanging the health check. A probe is a
cheap real call: `SELECT 1`, Redis PING, and per chain a read through its adapter (the native
balance of a throwaway address on account chains, which also checks the node serves the
registry's chain; the node's chain info on UTXO chains, where a balance would scan the UTXO set).
Only the kind of failure is shown, never an endpoint (RPC URLs may carry credentials). On a devnet
registry, a chain without a configured endpoint (its registry URL is a placeholder: no node was
started for it) is `skipped` and does not make the service unready.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from typing import Any

from fastapi import APIRouter, Request, Response

from api import schemas
from api.routes.common import context_of
from pipeline.settings import Settings
from pipeline.steps import StepContext

READY_TIMEOUT_S = 3.0
REDIS_TIMEOUT_S = 2.0
router = APIRouter(tags=["health"])
_probes = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ready-probe")
_addresses: dict[str, str] = {}
_addresses_lock = threading.Lock()


@router.get("/health", response_model=schemas.Health)
def health() -> dict[str, str]:
    """The process is up (no dependency is asked)."""
    return {"status": "ok"}


@router.get("/ready", response_model=schemas.Ready, responses={503: {"model": schemas.Ready,
                                                                      "description": "a component is down"}})
def ready(request: Request, response: Response) -> dict[str, Any]:
    """Database, Redis and every chain's node, each `ok`, `down` (with the kind of error) or `skipped`;
    503 when any is down."""
    settings: Settings = request.app.state.settings
    try:
        ctx = context_of(request)
    except Exception as exc:  # noqa: BLE001 - no context (bad settings, registry): not ready, say what kind
        down = {"status": "down", "error": type(exc).__name__}
        response.status_code = 503
        return {"status": "unavailable", "database": down, "redis": down, "chains": {}}
    checks: dict[str, Callable[[], None]] = {"database": lambda: _database(ctx), "redis": lambda: _redis(settings)}
    skipped = []
    for chain in ctx.registry.names():
        if ctx.registry.is_devnet and chain not in settings.rpc_urls:
            skipped.append(chain)
        else:
            checks[f"chain:{chain}"] = (lambda name: lambda: _chain(ctx, name))(chain)
    results = _run(checks)
    chains = {name.removeprefix("chain:"): result for name, result in results.items() if name.startswith("chain:")}
    chains.update({chain: {"status": "skipped"} for chain in skipped})
    answer = {"database": results["database"], "redis": results["redis"], "chains": dict(sorted(chains.items()))}
    healthy = all(result["status"] == "ok" for result in results.values())
    response.status_code = 200 if healthy else 503
    return {"status": "ok" if healthy else "unavailable", **answer}


def _run(checks: dict[str, Callable[[], None]]) -> dict[str, dict[str, Any]]:
    started = time.monotonic()
    futures: dict[str, Future[float]] = {name: _probes.submit(_timed, check) for name, check in checks.items()}
    wait_all(futures.values(), timeout=READY_TIMEOUT_S)
    results: dict[str, dict[str, Any]] = {}
    for name, future in futures.items():
        if not future.done():
            future.cancel()
            results[name] = {"status": "down", "error": "timeout", "latency_ms": int((time.monotonic() - started) * 1000)}
        elif future.exception() is not None:
            results[name] = {"status": "down", "error": type(future.exception()).__name__}
        else:
            results[name] = {"status": "ok", "latency_ms": int(future.result() * 1000)}
    return results


def _timed(check: Callable[[], None]) -> float:
    started = time.monotonic()
    check()
    return time.monotonic() - started


def _database(ctx: StepContext) -> None:
    from sqlalchemy import text

    with ctx.db.unit_of_work() as session:
        session.execute(text("SELECT 1"))


def _redis(settings: Settings) -> None:
    import redis

    client = redis.Redis.from_url(settings.broker_url, socket_timeout=REDIS_TIMEOUT_S,
                                  socket_connect_timeout=REDIS_TIMEOUT_S)
    try:
        client.ping()
    finally:
        client.close()


def _chain(ctx: StepContext, chain: str) -> None:
    adapter = ctx.adapter_for(chain)
    if adapter.uses_utxos:
        verify = getattr(adapter, "verify_chain", None)
        if verify is None:
            raise NotImplementedError(f"no cheap probe for {chain}")
        verify()
        return
    adapter.balance_of(_probe_address(ctx, chain), adapter.spec.native)


def _probe_address(ctx: StepContext, chain: str) -> str:
    """A valid address of the chain that nobody holds (made once per chain)."""
    with _addresses_lock:
        address = _addresses.get(chain)
    if address is None:
        from workers.services import fresh_destination

        address = fresh_destination(ctx, chain)
        with _addresses_lock:
            address = _addresses.setdefault(chain, address)
    return address
