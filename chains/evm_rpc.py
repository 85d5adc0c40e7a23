"""JSON-RPC to an EVM node through web3's HTTPProvider, with every failure mapped to chains/errors.

Why raw JSON-RPC and not `w3.eth.*`: the adapter needs the node's own error code and message to
tell "the node refused this transaction" from "the node is unreachable", and hex results it
parses itself; web3's method layer would add formatters, middleware round trips and its own
exception types on top. web3 still does the HTTP part (sessions, timeouts, a short retry).

The one rule here: no SDK exception leaves this module. Transport trouble (refused, timeout,
HTTP error status, a body that is not JSON-RPC) becomes ChainRpcError (transient); an error
object the node returns becomes NodeRpcError (a ChainRpcError, so transient unless the caller
classifies it as a rejection). Messages never contain the endpoint's path or query, where API
keys live: only scheme://host:port is shown, and the requests exception (whose text carries the
full URL) is not chained. The mapping, redaction and JSON-RPC envelope are `chains.transport`'s,
shared with the other families; only web3 (the provider, its retry, its exception types) is here.

Several endpoints: `JsonRpcClient(url_or_urls)` sends every call through a `chains.failover`
pool of `EvmEndpoint`s (one endpoint: exactly the requests and errors of that endpoint alone).
eth_sendRawTransaction goes to every healthy endpoint; a batch is one call for failover; the
answers of a node that is merely behind ("header not found", ...) are retried on the next endpoint.
In a pool, web3 retries only failed connections, not timeouts (the next endpoint is the better retry).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, ContextManager

from chains.errors import ChainRpcError
from chains.failover import Family, FailoverSettings, Outcome, PooledClient, endpoint_urls, send_outcome
from chains.transport import (
    REQUEST_TIMEOUT_S,
    NodeRpcError,
    json_rpc_result,
    json_rpc_results,
    mapped_errors,
    observed,
    redact_endpoint,
    unusable_value,
)

RETRIES = 2  # web3 retries transport errors of idempotent calls; the pipeline retries beyond that

SEND_METHODS = frozenset({"eth_sendRawTransaction"})
# A node that is behind answers these for a block or state it does not have (yet): ask the next one.
_LAGGING = ("header not found", "unknown block", "block not found", "missing trie node")
# The node has these very bytes, or their nonce is used (the adapter then looks the hash up): such an
# answer is preferred to a refusal from another endpoint (same words as chains.evm's classification).
_KNOWN = ("already known", "known transaction", "already imported", "alreadyknown", "already exists",
          "nonce too low", "nonce is too low", "oldnonce")

__all__ = ["REQUEST_TIMEOUT_S", "RETRIES", "EvmEndpoint", "JsonRpcClient", "NodeRpcError", "batch_results",
           "redact_endpoint", "rpc_errors", "to_int"]


def rpc_errors(operation: str, endpoint: str) -> ContextManager[None]:
    """Map web3 / requests / decoding exceptions raised inside to ChainRpcError."""
    from web3.exceptions import Web3Exception

    return mapped_errors(operation, endpoint, sdk_errors=(Web3Exception,))


class ThreadSessions:
    """The `session` web3's HTTPProvider posts through: one keep-alive requests.Session per thread
    (a Session is not promised thread-safe), each made once and reused for every call.

    Why not web3's own per-thread sessions: a default Session re-reads the proxy variables and
    ~/.netrc on every request (`trust_env`), about a quarter of a loopback call's cost. Here the
    proxies for this URL are read from the environment once, when the client is made, and the
    sessions do not look again (credentials belong in the URL, never in a netrc the worker reads).
    """

    def __init__(self, url: str) -> None:
        import requests

        self._proxies = requests.utils.get_environ_proxies(url)
        self._endpoint = redact_endpoint(url)
        self._local = threading.local()

    def session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = requests.Session()
            session.trust_env = False
            session.proxies.update(self._proxies)
            session.send = observed(session.send, self._endpoint)  # counted like every node request
            self._local.session = session
        return session

    def post(self, *args: Any, **kwargs: Any) -> Any:
        return self.session().post(*args, **kwargs)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self.session().get(*args, **kwargs)


class EvmEndpoint:
    """One endpoint; the Web3 object is created on first use, once, and shared by threads (its
    HTTP goes through one reused session per thread: `ThreadSessions`). `retry_timeouts=False`
    (in a pool): web3 retries refused connections only."""

    def __init__(self, url: str, timeout: float = REQUEST_TIMEOUT_S, *, retry_timeouts: bool = True) -> None:
        self.url = url
        self.timeout = timeout
        self.retry_timeouts = retry_timeouts
        self._w3: Any = None
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return redact_endpoint(self.url)

    def web3(self) -> Any:
        if self._w3 is None:
            with self._lock:
                if self._w3 is None:
                    self._w3 = self._make_web3()
        return self._w3

    def _make_web3(self) -> Any:
        import requests
        from web3 import HTTPProvider, Web3
        from web3.providers.rpc.utils import ExceptionRetryConfiguration

        provider = HTTPProvider(
            self.url,
            # headers given once: web3 would otherwise rebuild them (user agent included) per call
            request_kwargs={"timeout": self.timeout, "headers": HTTPProvider.get_request_headers()},
            session=ThreadSessions(self.url),
            exception_retry_configuration=ExceptionRetryConfiguration(
                errors=(requests.ConnectionError, requests.Timeout) if self.retry_timeouts else (requests.ConnectionError,),
                retries=RETRIES, backoff_factor=0.1
            ),
        )
        return Web3(provider, middleware=[])

    def call(self, method: str, params: list[Any]) -> Any:
        """The `result` of a JSON-RPC call; NodeRpcError for an error object, ChainRpcError otherwise."""
        with rpc_errors(method, self.url):
            return json_rpc_result(method, self.web3().provider.make_request(method, params), self.url)

    def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """Many JSON-RPC calls in one HTTP request (`batch_results`)."""
        with rpc_errors("batch", self.url):
            answers = self.web3().provider.make_batch_request([(method, params) for method, params in calls])
        if not isinstance(answers, list) or len(answers) != len(calls):
            raise ChainRpcError(f"batch of {len(calls)}: unusable answer from {self.endpoint}")
        return json_rpc_results([method for method, _ in calls], answers, self.url)


def _head(node: EvmEndpoint) -> int:
    return to_int(node.call("eth_blockNumber", []), "block number")


def _lagging(exc: ChainRpcError) -> bool:
    return isinstance(exc, NodeRpcError) and any(k in exc.node_message.lower() for k in _LAGGING)


def _send_outcome(result: Any, exc: ChainRpcError | None) -> Outcome:
    if isinstance(exc, NodeRpcError) and any(k in exc.node_message.lower() for k in _KNOWN):
        return Outcome.KNOWN
    return send_outcome(result, exc)


def _chain_id(answer: Any) -> str:
    return str(answer).lower()


class JsonRpcClient(PooledClient[EvmEndpoint]):
    """One endpoint or several (`chains.failover`); `url`/`endpoint` are the current one's, and
    `web3()` is the current endpoint's Web3."""

    family = Family("evm", head=_head, identity=lambda node: _chain_id(node.call("eth_chainId", [])),
                    retry_elsewhere=_lagging, outcome=_send_outcome)

    def __init__(self, url: str | Sequence[str], timeout: float = REQUEST_TIMEOUT_S, *,
                 failover: FailoverSettings | None = None) -> None:
        pooled = len(endpoint_urls(url)) > 1
        super().__init__(url, lambda u: EvmEndpoint(u, timeout, retry_timeouts=not pooled), failover)
        self.timeout = timeout

    def call(self, method: str, params: list[Any]) -> Any:
        """The `result` of a JSON-RPC call; NodeRpcError for an error object, ChainRpcError otherwise.
        A send goes to every healthy endpoint."""
        if method in SEND_METHODS:
            return self.pool.broadcast(lambda node: node.call(method, params))
        identity = _chain_id if method == "eth_chainId" else None
        return self.pool.read(lambda node: node.call(method, params), identity=identity)

    def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """`batch_results` on the first endpoint that answers: a batch is one call for failover."""
        return self.pool.read(lambda node: node.batch(calls))


def batch_results(client: JsonRpcClient, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
    """Many JSON-RPC calls in one HTTP request: each call's `result`, or its NodeRpcError (as a
    value, not raised: one unknown receipt must not hide the others); ChainRpcError for transport
    trouble or an answer that is not one response per call."""
    if not calls:
        return []
    return client.batch(calls)


def to_int(value: Any, what: str) -> int:
    """A JSON-RPC quantity ("0x1a") as int; garbage is a ChainRpcError, not a crash."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise unusable_value(what, value)
