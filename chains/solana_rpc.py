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
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any

from chains.errors import ChainRpcError
from chains.transport import (
    REQUEST_TIMEOUT_S,
    HttpEndpoint,
    NodeRpcError,
    json_rpc_result,
    unusable_value,
)
from chains.transport import mapped_errors as rpc_errors

_ids = itertools.count(1)

__all__ = ["NodeRpcError", "REQUEST_TIMEOUT_S", "SolanaRpc", "rpc_errors", "to_int", "value_of"]


class SolanaRpc(HttpEndpoint):
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
        out: list[Any] = []
        for i, (method, _) in zip(ids, calls):
            try:
                out.append(json_rpc_result(method, replies[i], self.url))
            except NodeRpcError as exc:
                out.append(exc)
        return out


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
