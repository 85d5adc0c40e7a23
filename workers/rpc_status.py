"""The RPC endpoints of `paratro status`: every endpoint of every chain the deployment uses,
probed now, with its health as the failover pool judges it (chains/failover.py).

Why here and not in pipeline/stats.py: the pipeline imports no chain code; this is a worker-side
look at the nodes, next to the queue depths.

Which chains: those the deployment configured endpoints for (settings `rpc_urls`); with none
configured, every chain of the registry (its own endpoints are then the deployment's).

How: a status command runs in a fresh process, so the pools have no health data yet. Each
chain's adapter is made with a short request timeout (`PROBE_TIMEOUT_S`) and its pools are
refreshed (`chains.endpoint_health(adapter, refresh=True)`: every endpoint's head asked once,
in parallel). Chains are probed in parallel too, in daemon threads, and the whole waits at most
`DEADLINE_S`: a chain still unanswered then (a hanging DNS lookup, a node that accepts and
never answers, connect retries) is shown unhealthy, "no answer within N s". A chain whose
adapter cannot even be made (a bad option) is shown unhealthy with the error. Nothing here
raises, and nothing waits beyond the deadline (the threads are daemons: the process exits).

An endpoint that did not answer its head probe is unhealthy ("unreachable"), though the pool
would still try it (one failure does not open its breaker): the command says what a node does
now. The pool keeps no error text, so such an endpoint's head is asked once more for the reason
(refused, timed out, HTTP 401, ...), within the same deadline. Endpoints are named only as
`chains.endpoint_health` names them, scheme://host:port (`chains.transport.redact_endpoint`):
the user info, path and query of a URL may hold credentials or an API key, and error text passes
`workers.logconfig.redact` as well.

Row: chain, client (the adapter's pool: "rpc"; TRON "api" and "solidity_api"), endpoint,
healthy, status, reason, head, failures.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from chains.registry import ChainSpec, Registry
from pipeline.settings import Settings

PROBE_TIMEOUT_S = 3.0  # per HTTP request of a probe
DEADLINE_S = 12.0  # for all chains together (a probe may retry a refused connection a few times)
MAX_REASON = 160


def deployment_chains(settings: Settings, registry: Registry) -> list[ChainSpec]:
    """The chains whose endpoints are configured, in name order (every registry chain with
    endpoints when the settings configure none)."""
    names = sorted(settings.rpc_urls) if settings.rpc_urls else registry.names()
    return [spec for spec in (registry.chain(name) for name in names) if spec.rpc_urls]


def gather_rpc(settings: Settings, *, timeout_s: float = PROBE_TIMEOUT_S,
               deadline_s: float = DEADLINE_S) -> list[dict[str, Any]]:
    """One row per endpoint of every chain the deployment uses (module docstring); never raises."""
    from workers.runtime import registry_from

    try:
        specs = deployment_chains(settings, registry_from(settings))
    except Exception as exc:  # noqa: BLE001 - a bad registry or rpc_urls is shown, not raised
        return [_row("-", "rpc", "-", status="error", reason=f"chain registry: {_reason(exc)}")]
    found: dict[str, list[dict[str, Any]]] = {}
    threads = [threading.Thread(target=probe_chain, args=(spec, timeout_s, found), name=f"rpc-status-{spec.name}",
                                daemon=True) for spec in specs]
    with _quiet_retries():
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + deadline_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
    return [dict(row) for spec in specs for row in found.get(spec.name) or _late(spec, deadline_s)]


def probe_chain(spec: ChainSpec, timeout_s: float,
                found: dict[str, list[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """Every endpoint of `spec` probed now; an adapter that cannot be made is one row per URL.
    The rows are in `found[spec.name]` as soon as the probes are judged; an unreachable
    endpoint's reason is then completed by asking its head once more (`_why`)."""
    from chains import endpoint_health
    from chains.families import adapter_class

    found = {} if found is None else found
    try:
        adapter = adapter_class(spec.family)(spec, timeout=timeout_s)
        pools = endpoint_health(adapter, refresh=True)
    except Exception as exc:  # noqa: BLE001 - the status shows it; it must not stop the other chains
        found[spec.name] = _each_url(spec, status="error", reason=_reason(exc))
        return found[spec.name]
    judged = [(client, index, _judged(spec.name, client, health))
              for client, rows in pools.items() for index, health in enumerate(rows)]
    found[spec.name] = [row for _, _, row in judged]
    clients = _clients(adapter)
    for client, index, row in judged:
        if row["status"] == "unreachable":
            row["reason"] = _why(clients[client], index)
    return found[spec.name]


def _judged(chain: str, client: str, health: dict[str, Any]) -> dict[str, Any]:
    """The pool's row; one that got no head from its probe is unreachable (unhealthy)."""
    row = _row(chain, client, health["endpoint"], healthy=health["healthy"], status=health["status"],
               reason=health["reason"], head=health["head"], failures=health["failures"])
    if health["head"] is None and health["status"] != "wrong_chain":
        row.update(healthy=False, status="unreachable", reason="no answer to the head probe")
    return row


def _clients(adapter: object) -> dict[str, Any]:
    """The adapter's endpoint pools by the names `chains.endpoint_health` gives them."""
    from chains.failover import PooledClient

    return {name.lstrip("_"): value for name, value in vars(adapter).items() if isinstance(value, PooledClient)}


def _why(client: Any, index: int) -> str:
    """Why endpoint `index` of `client` gave no head: its error to one more head request (the
    pool's probe keeps only the count)."""
    pool = client.pool
    try:
        pool.family.head(pool.members[index])
    except Exception as exc:  # noqa: BLE001 - any failure is the answer here
        return f"no answer to the head probe: {_reason(exc)}"
    return "no answer to the head probe (a second probe answered: flaky)"


@contextlib.contextmanager
def _quiet_retries() -> Iterator[None]:
    """urllib3 warns of each retried connection (TRON's client retries refused ones): the table
    already says the endpoint is unreachable, so those lines stay out of the command's stderr."""
    logger = logging.getLogger("urllib3.connectionpool")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _late(spec: ChainSpec, deadline_s: float) -> list[dict[str, Any]]:
    return _each_url(spec, status="unreachable", reason=f"no answer within {deadline_s:g} s")


def _each_url(spec: ChainSpec, *, status: str, reason: str) -> list[dict[str, Any]]:
    from chains.transport import redact_endpoint

    return [_row(spec.name, "rpc", redact_endpoint(url), status=status, reason=reason) for url in spec.rpc_urls]


def _row(chain: str, client: str, endpoint: str, *, healthy: bool = False, status: str, reason: str,
         head: int | None = None, failures: int = 0) -> dict[str, Any]:
    return {"chain": chain, "client": client, "endpoint": endpoint, "healthy": healthy, "status": status,
            "reason": reason, "head": head, "failures": failures}


def _reason(exc: BaseException) -> str:
    """One redacted line: the error's message (and type, unless it is one of chains' errors,
    which say what happened in words and name endpoints as scheme://host:port only)."""
    from chains.errors import ChainError
    from workers.logconfig import redact

    text = str(exc) if isinstance(exc, ChainError) else f"{type(exc).__name__}: {exc}"
    text = redact(" ".join(text.split()))
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."


def rpc_table(rows: list[dict[str, Any]]) -> Any:
    """The rich table "rpc endpoints"."""
    from rich.table import Table

    table = Table("chain", "endpoint", "healthy", "status", "head", "failures", title="rpc endpoints")
    for row in rows:
        endpoint = row["endpoint"] if row["client"] in ("rpc", "api") else f"{row['endpoint']} ({row['client']})"
        table.add_row(row["chain"], endpoint, "yes" if row["healthy"] else "NO", f"{row['status']}: {row['reason']}",
                      "-" if row["head"] is None else str(row["head"]), str(row["failures"]))
    if not rows:
        table.caption = "no chain has an RPC endpoint configured"
    return table
