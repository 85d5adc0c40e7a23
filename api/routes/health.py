"""`GET /health` (the process answers) and `GET /ready` (it can serve: database, Redis, each chain's
node), both without authentication, at /api/v1/... and at the root for container health checks.

/ready is public, so what it costs must not grow with its traffic: probes are cached and never
run twice at once (api.readiness: a chain node is asked at most once per CHAIN_TTL_S, the database
and Redis once per LOCAL_TTL_S), each on its own thread (nothing queues behind a slow chain), and
an answer takes at most READY_TIMEOUT_S: a probe still running then is `down` (error `timeout`),
and a request that finds another's probe running answers its last result (`pending` before the
first). A probe is a cheap real call: `SELECT 1`, Redis PING, and per chain a read through its
adapter (the native balance of a throwaway address on account chains, which also checks the node
serves the registry's chain; the node's chain info on UTXO chains, where a balance would scan the
UTXO set). Only the kind of failure is shown, never an endpoint (RPC URLs may carry credentials).
On a devnet registry, a chain without a configured endpoint (its registry URL is a placeholder: no
node was started for it) is `skipped` and does not make the service unready.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response

from api import schemas
from api.readiness import Readiness, Result
from api.routes.common import context_of
from pipeline.settings import Settings
from pipeline.steps import StepContext

REDIS_TIMEOUT_S = 2.0
router = APIRouter(tags=["health"])
_addresses: dict[str, str] = {}
_addresses_lock = threading.Lock()


@router.get("/health", response_model=schemas.Health)
def health() -> dict[str, str]:
    """The process is up (no dependency is asked)."""
    return {"status": "ok"}


def readiness_of(app: FastAPI) -> Readiness:
    """The app's probe cache (made by create_app; made here for an app built otherwise)."""
    readiness = getattr(app.state, "readiness", None)
    if readiness is None:
        readiness = app.state.readiness = Readiness()
    return readiness


@router.get("/ready", response_model=schemas.Ready, responses={503: {"model": schemas.Ready,
                                                                      "description": "a component is down"}})
async def ready(request: Request, response: Response) -> dict[str, Any]:
    """Database, Redis and every chain's node, each `ok`, `down` (with the kind of error), `skipped`
    or `pending` (not probed yet); 503 unless all are `ok` or `skipped`. Results may be a few
    seconds old (cached: this URL is public); the answer comes within a few seconds."""
    settings: Settings = request.app.state.settings
    readiness = readiness_of(request.app)
    deadline = time.monotonic() + readiness.timeout_s
    try:  # the context is built once per process; bounded all the same
        ctx = await asyncio.wait_for(asyncio.to_thread(context_of, request), readiness.timeout_s)
    except Exception as exc:  # noqa: BLE001 - no context (bad settings, registry): not ready, say what kind
        down = {"status": "down", "error": type(exc).__name__}
        response.status_code = 503
        return {"status": "unavailable", "database": down, "redis": down, "chains": {}}
    checks: dict[str, tuple[Callable[[], None], float]] = {
        "database": (lambda: _database(ctx), readiness.local_ttl_s),
        "redis": (lambda: _redis(settings), readiness.local_ttl_s),
    }
    skipped = []
    for chain in ctx.registry.names():
        if ctx.registry.is_devnet and chain not in settings.rpc_urls:
            skipped.append(chain)
        else:
            checks[f"chain:{chain}"] = ((lambda name: lambda: _chain(ctx, name))(chain), readiness.chain_ttl_s)
    results = await _run(readiness, checks, deadline)
    chains = {name.removeprefix("chain:"): result for name, result in results.items() if name.startswith("chain:")}
    chains.update({chain: {"status": "skipped"} for chain in skipped})
    answer = {"database": results["database"], "redis": results["redis"], "chains": dict(sorted(chains.items()))}
    healthy = all(result["status"] == "ok" for result in results.values())
    response.status_code = 200 if healthy else 503
    return {"status": "ok" if healthy else "unavailable", **answer}


async def _run(readiness: Readiness, checks: dict[str, tuple[Callable[[], None], float]],
               deadline: float) -> dict[str, Result]:
    """Start the probes that are due (none already running), wait for those until `deadline`, and
    report every component. Waiting holds no thread: the probes' futures wake the event loop."""
    started: dict[str, Future[Result] | None] = {
        name: readiness.begin(name, check, ttl_s) for name, (check, ttl_s) in checks.items()}
    waiting = [asyncio.wrap_future(future) for future in started.values() if future is not None]
    if waiting:
        await asyncio.wait(waiting, timeout=max(0.0, deadline - time.monotonic()))
    return {name: readiness.report(name, started[name]) for name in checks}


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
