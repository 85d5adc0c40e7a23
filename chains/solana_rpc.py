"""JSON-RPC to a Solana node over HTTP, with every failure mapped to chains/errors.

Why not solana-py's client: 0.40 has only `AsyncClient`, and running an event loop per call
inside a Celery worker buys nothing over a plain HTTP POST; its typed responses would also have
to be unwrapped again at this boundary. The node's own error code, message and `data` (the
preflight simulation result: `err`, `logs`) are what the adapter needs to classify a refusal, and
a raw JSON-RPC answer keeps them as they are.

The one rule here: no `requests` or decoding exception leaves this module. Transport trouble
(refused, timeout, HTTP error status, a body that is not JSON-RPC) becomes ChainRpcError
(transient); an error object from the node becomes NodeRpcError (a ChainRpcError, so transient
unless the adapter classifies it as a rejection). Messages show only scheme://host:port of the
endpoint, never the path or query where API keys live, and the requests exception (whose text
carries the full URL) is not chained. The mapping, redaction, JSON-RPC envelope and per-thread
session are `chains.transport`'s, shared with the other families; Solana's own answer shapes
(RpcResponse `value`, plain-number quantities) and the reconnect-once are here.

Several endpoints: `SolanaRpc(url_or_urls)` sends every call through a `chains.failover` pool of
`SolanaEndpoint`s (one endpoint: exactly the requests and errors of that endpoint alone).
sendTransaction goes to every healthy endpoint; a batch is one call for failover; the answers of
a node that is behind (-32004, -32005, -32014, -32016) are retried on the next endpoint.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any

from chains.errors import ChainRpcError
from chains.failover import Family, FailoverSettings, Outcome, PooledClient, send_outcome
from chains.transport import (
    REQUEST_TIMEOUT_S,
    HttpEndpoint,
    NodeRpcError,
    json_rpc_result,
    json_rpc_results,
    unusable_value,
)
from chains.transport import mapped_errors as rpc_errors

_ids = itertools.count(1)

__all__ = ["NodeRpcError", "REQUEST_TIMEOUT_S", "SolanaEndpoint", "SolanaRpc", "rpc_errors", "to_int", "value_of"]

SEND_METHODS = frozenset({"sendTransaction"})
# A node behind answers these: block not available for slot, node unhealthy (behind), block status
# not yet available, minimum context slot not reached. The next endpoint may be further ahead.
_LAGGING_CODES = frozenset({-32004, -32005, -32014, -32016})


class SolanaEndpoint(HttpEndpoint):
    """One endpoint; one keep-alive HTTP session per thread (a requests Session is not thread-safe)."""

    def call(self, method: str, params: list[Any]) -> Any:
        """The `result` of a JSON-RPC call; NodeRpcError for an error object, ChainRpcError otherwise."""
        body = {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params}
        return json_rpc_result(method, self._post(method, body), self.url)

    def _post(self, what: str, body: Any) -> Any:
        """POST a JSON-RPC body, the decoded answer; a dropped keep-alive connection is retried once
        (every call here is idempotent: a transaction sent twice is the same signature)."""
        import requests

        with rpc_errors(what, self.url):
            try:
                response = self._session().post(self.url, json=body, timeout=self.timeout)
            except requests.ConnectionError:
                self._local.session = None
                response = self._session().post(self.url, json=body, timeout=self.timeout)
            response.raise_for_status()
            return json.loads(response.content)

    def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """One HTTP request carrying a JSON-RPC batch: per call, in order, its `result` or the
        NodeRpcError of its error object (the caller decides which errors matter). Transport
        trouble, or an answer that is not one reply per call, is ChainRpcError for the whole batch.
        The caller keeps a batch under agave's 50 KiB request body limit."""
        if not calls:
            return []
        ids = [next(_ids) for _ in calls]
        body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in zip(ids, calls)]
        what = f"batch of {len(calls)} {calls[0][0]}"
        answer = self._post(what, body)
        if isinstance(answer, dict):  # the node refused the batch as a whole (too large, not supported)
            json_rpc_result(what, answer, self.url)
        replies = {r.get("id"): r for r in answer if isinstance(r, dict)} if isinstance(answer, list) else {}
        if set(replies) != set(ids):
            raise ChainRpcError(f"{what}: unusable answer from {self.endpoint} (not one reply per call)")
        return json_rpc_results([method for method, _ in calls], [replies[i] for i in ids], self.url)


def _head(node: SolanaEndpoint) -> int:
    return to_int(node.call("getSlot", []), "slot")


def _lagging(exc: ChainRpcError) -> bool:
    return isinstance(exc, NodeRpcError) and exc.code in _LAGGING_CODES


def _send_outcome(result: Any, exc: ChainRpcError | None) -> Outcome:
    """"Already processed" (the node has these bytes) is preferred to another endpoint's refusal."""
    if isinstance(exc, NodeRpcError):
        err = exc.data.get("err") if isinstance(exc.data, dict) else None
        if err == "AlreadyProcessed" or "already been processed" in exc.node_message.lower():
            return Outcome.KNOWN
    return send_outcome(result, exc)


class SolanaRpc(PooledClient[SolanaEndpoint]):
    """One endpoint or several (`chains.failover`)."""

    family = Family("solana", head=_head, identity=lambda node: str(node.call("getGenesisHash", [])),
                    retry_elsewhere=_lagging, outcome=_send_outcome)

    def __init__(self, url: str | Sequence[str], timeout: float = REQUEST_TIMEOUT_S, *,
                 failover: FailoverSettings | None = None) -> None:
        super().__init__(url, lambda u: SolanaEndpoint(u, timeout), failover)
        self.timeout = timeout

    def call(self, method: str, params: list[Any]) -> Any:
        """The `result` of a JSON-RPC call; NodeRpcError for an error object, ChainRpcError otherwise.
        sendTransaction goes to every healthy endpoint."""
        if method in SEND_METHODS:
            return self.pool.broadcast(lambda node: node.call(method, params))
        return self.pool.read(lambda node: node.call(method, params), identity=str if method == "getGenesisHash" else None)

    def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """`SolanaEndpoint.batch` on the first endpoint that answers: a batch is one call for failover."""
        if not calls:
            return []
        return self.pool.read(lambda node: node.batch(calls))


def to_int(value: Any, what: str) -> int:
    """A JSON integer (Solana quantities are plain numbers); garbage is ChainRpcError, not a crash."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():  # token amounts come as decimal strings
        return int(value)
    raise unusable_value(what, value)


def value_of(result: Any, what: str) -> Any:
    """The `value` of an RpcResponse (`{"context": {...}, "value": ...}`)."""
    if not isinstance(result, dict) or "value" not in result:
        raise unusable_value(what, result)
    return result["value"]
