"""bitcoind JSON-RPC over HTTP (requests), with every failure mapped to chains/errors.

bitcoind takes HTTP basic auth; the credentials ride in the endpoint URL
(`http://user:password@host:8332/`, or `/wallet/<name>` for wallet calls) and are sent as an
Authorization header, never shown: messages name only scheme://host:port, and the requests
exception (whose text can carry the URL) is neither chained nor kept as the context.

Answers are parsed with `Decimal` for every JSON number, because bitcoind reports amounts as BTC
numbers (`0.00012345`) and a float would lose satoshi. bitcoind answers a failed call with HTTP
500 (JSON-RPC 1.0) or 200 (2.0) and an error object in the body; both become NodeRpcError with
the node's code and message. Transport trouble becomes ChainRpcError (transient).

Redaction, the transport error mapping, NodeRpcError and the per-thread session are shared with
the other families in `chains.transport`; the basic auth, the Decimal parsing and bitcoind's HTTP
status handling are bitcoind's own and stay here.

Several endpoints: `BitcoinRpcClient(url_or_urls)` sends every call through a `chains.failover`
pool of `BitcoinEndpoint`s (one endpoint: exactly the requests and errors of that endpoint alone).
sendrawtransaction goes to every healthy endpoint; a batch is one call for failover; a node still
warming up (-28) is asked no further, the next endpoint is.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from chains import transport
from chains.errors import ChainRpcError
from chains.failover import Family, FailoverSettings, Outcome, PooledClient, send_outcome
from chains.transport import REQUEST_TIMEOUT_S, HttpEndpoint, transport_error, unusable_value

SATOSHI_PER_BTC = 100_000_000

# bitcoind error codes (src/rpc/protocol.h) the adapter tells apart.
RPC_MISC_ERROR = -1
RPC_INVALID_ADDRESS_OR_KEY = -5  # also "No such mempool or blockchain transaction", "Block not found"
RPC_INVALID_PARAMETER = -8
RPC_IN_WARMUP = -28
RPC_VERIFY_ERROR = -25
RPC_VERIFY_REJECTED = -26
RPC_VERIFY_ALREADY_IN_CHAIN = -27
RPC_METHOD_NOT_FOUND = -32601

SEND_METHODS = frozenset({"sendrawtransaction"})
# The node has these very bytes (same words as chains.bitcoin's classification): preferred to a
# refusal from another endpoint.
_ALREADY_HAVE = ("txn-already-in-mempool", "txn-already-known", "already in block chain", "already in utxo set",
                 "txn-same-nonwitness-data-in-mempool")


class NodeRpcError(transport.NodeRpcError):
    """The node answered with a JSON-RPC error object (transient unless the caller classifies it)."""

    max_message = 500


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """(URL without user info, (user, password) or None)."""
    from urllib.parse import unquote

    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return bare, (unquote(parts.username), unquote(parts.password or ""))


class BitcoinEndpoint(HttpEndpoint):
    """One bitcoind endpoint; one HTTP session per thread (keep-alive, no shared state).

    `url` is the endpoint without its user info; the credentials are sent as basic auth.
    """

    def __init__(self, url: str, timeout: float = REQUEST_TIMEOUT_S) -> None:
        bare, self._auth = split_credentials(url)
        super().__init__(bare, timeout)
        self._ids = itertools.count(1)

    def _setup_session(self, session: Any) -> None:
        session.auth = self._auth

    def call(self, method: str, params: list[Any] | None = None, timeout: float | None = None) -> Any:
        """The `result` of a call; NodeRpcError for an error object, ChainRpcError otherwise."""
        body = json.dumps({"jsonrpc": "1.0", "id": next(self._ids), "method": method, "params": params or []},
                          default=_json_default)
        return self._result(method, self._post(method, body, timeout))

    def batch(self, calls: Sequence[tuple[str, list[Any]]], timeout: float | None = None) -> list[Any]:
        """Many calls in ONE HTTP request: bitcoind takes a JSON array of requests and answers an
        array of replies (matched here by id, not by position). Returns, per call in order, its
        result or the NodeRpcError the node answered for that call, not raised: one unknown
        transaction must not sink the others. Transport trouble raises ChainRpcError."""
        if not calls:
            return []
        ids = [next(self._ids) for _ in calls]
        body = json.dumps([{"jsonrpc": "1.0", "id": i, "method": m, "params": p} for i, (m, p) in zip(ids, calls)],
                          default=_json_default)
        label = f"batch of {len(calls)} ({calls[0][0]}, ...)"
        response = self._post(label, body, timeout)
        try:
            answer = json.loads(response.content, parse_float=Decimal)
        except ValueError:
            answer = None
        if isinstance(answer, dict) and answer.get("error") is not None:  # the batch as a whole was refused
            raise NodeRpcError.from_error(label, answer["error"])
        if response.status_code == 401:
            raise ChainRpcError(f"{label}: {self.endpoint} refused the RPC credentials (HTTP 401)")
        if response.status_code != 200 or not isinstance(answer, list):
            raise ChainRpcError(f"{label}: unusable answer from {self.endpoint} (HTTP {response.status_code})")
        replies = {item.get("id"): item for item in answer if isinstance(item, dict)}
        results: list[Any] = []
        for ident, (method, _) in zip(ids, calls):
            reply = replies.get(ident)
            if reply is None or (reply.get("error") is None and "result" not in reply):
                raise ChainRpcError(f"{method}: {self.endpoint} left a call of the batch unanswered")
            error = reply.get("error")
            results.append(NodeRpcError.from_error(method, error) if error is not None else reply["result"])
        return results

    def _post(self, operation: str, body: str, timeout: float | None) -> Any:
        """The HTTP response to one POST; transport trouble as ChainRpcError naming scheme://host:port only."""
        try:
            return self._session().post(self.url, data=body, timeout=timeout or self.timeout,
                                        headers={"Content-Type": "application/json"})
        except Exception as exc:  # noqa: BLE001 - translated below, or re-raised
            failure = transport_error(operation, self.url, exc)
            if failure is None:
                raise
        raise failure  # outside the handler: the requests exception (its text has the URL) is not kept

    def _result(self, method: str, response: Any) -> Any:
        try:
            answer = json.loads(response.content, parse_float=Decimal)
        except ValueError:
            answer = None
        if isinstance(answer, dict) and answer.get("error") is not None:
            raise NodeRpcError.from_error(method, answer["error"])
        if response.status_code == 401:
            raise ChainRpcError(f"{method}: {self.endpoint} refused the RPC credentials (HTTP 401)")
        if response.status_code != 200 or not isinstance(answer, dict) or "result" not in answer:
            raise ChainRpcError(f"{method}: unusable answer from {self.endpoint} (HTTP {response.status_code})")
        return answer["result"]


def _head(node: BitcoinEndpoint) -> int:
    return to_int(node.call("getblockcount", []), "block count")


def _chain_name(info: Any) -> str:
    return str(info.get("chain")) if isinstance(info, dict) else repr(info)[:80]


def _warming_up(exc: ChainRpcError) -> bool:
    return isinstance(exc, NodeRpcError) and exc.code == RPC_IN_WARMUP


def _send_outcome(result: Any, exc: ChainRpcError | None) -> Outcome:
    if isinstance(exc, NodeRpcError) and (exc.code == RPC_VERIFY_ALREADY_IN_CHAIN
                                          or any(k in exc.node_message.lower() for k in _ALREADY_HAVE)):
        return Outcome.KNOWN
    return send_outcome(result, exc)


class BitcoinRpcClient(PooledClient[BitcoinEndpoint]):
    """One bitcoind endpoint or several (`chains.failover`). `url` is the current endpoint's URL
    without its user info; the credentials are sent as basic auth."""

    family = Family("bitcoin", head=_head, identity=lambda node: _chain_name(node.call("getblockchaininfo", [])),
                    retry_elsewhere=_warming_up, outcome=_send_outcome)

    def __init__(self, url: str | Sequence[str], timeout: float = REQUEST_TIMEOUT_S, *,
                 failover: FailoverSettings | None = None) -> None:
        super().__init__(url, lambda u: BitcoinEndpoint(u, timeout), failover)
        self.timeout = timeout

    def call(self, method: str, params: list[Any] | None = None, timeout: float | None = None) -> Any:
        """The `result` of a call; NodeRpcError for an error object, ChainRpcError otherwise.
        sendrawtransaction goes to every healthy endpoint."""
        if method in SEND_METHODS:
            return self.pool.broadcast(lambda node: node.call(method, params, timeout))
        identity = _chain_name if method == "getblockchaininfo" else None
        return self.pool.read(lambda node: node.call(method, params, timeout), identity=identity)

    def batch(self, calls: Sequence[tuple[str, list[Any]]], timeout: float | None = None) -> list[Any]:
        """`BitcoinEndpoint.batch` on the first endpoint that answers: a batch is one call for failover."""
        if not calls:
            return []
        return self.pool.read(lambda node: node.batch(calls, timeout))


def _json_default(value: object) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot send {type(value).__name__} over JSON-RPC")


def btc_to_sat(value: Any, what: str = "amount") -> int:
    """An amount the node gave in BTC (Decimal, int or numeric string) as integer satoshi, exactly."""
    try:
        if isinstance(value, bool) or isinstance(value, float):
            raise TypeError
        sats = Decimal(value) * SATOSHI_PER_BTC
    except (TypeError, ValueError, ArithmeticError):
        raise unusable_value(what, value) from None
    if sats != sats.to_integral_value() or sats < 0:
        raise ChainRpcError(f"node answered a {what} that is not a whole number of satoshi: {value!r}"[:200])
    return int(sats)


def sat_to_btc(sats: int) -> Decimal:
    return Decimal(sats) / SATOSHI_PER_BTC


def to_int(value: Any, what: str) -> int:
    """An integer the node answered; garbage is a ChainRpcError, not a crash."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    raise unusable_value(what, value)
