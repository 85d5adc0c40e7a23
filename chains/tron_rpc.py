"""TRON's HTTP wallet API (java-tron's /wallet/* and /walletsolidity/*), every failure mapped to chains/errors.

Why plain `requests` and not tronpy's `Tron`/`HTTPProvider`: the adapter needs the node's own
answer (`code` and `message` of a refused broadcast, `{}` for "not found") to classify it, and
tronpy's provider has traps for a custody backend: it joins paths with `urljoin` (a provider URL
carrying its API key in the path loses its last segment), it silently adds tronpy's shared
public TronGrid API keys to any "trongrid" URL, and on a rate limit it prints and recurses.

API keys: a key in the URL path (`https://host/<key>`) is kept in the path; `?api_key=` (or
`apikey`) in the query is sent as TronGrid's `TRON-PRO-API-KEY` header instead. Either way,
error messages show only scheme://host:port, and no requests exception (whose text carries the
full URL) is chained.

The one rule: no requests/urllib3/JSON exception leaves this module. Transport trouble becomes
ChainRpcError (transient); a `{"Error": ...}` answer (a java exception on the node) becomes
NodeApiError, also a ChainRpcError, which callers may classify further. The mapping, redaction
and per-thread session are `chains.transport`'s, shared with the other families; the wallet API
is not JSON-RPC, so its answers, key header and connect retries are handled here.

Several endpoints: `TronHttpClient(url_or_urls)` sends every request through a `chains.failover`
pool of `TronEndpoint`s (one endpoint: exactly the requests and errors of that endpoint alone).
wallet/broadcasttransaction and wallet/broadcasthex go to every healthy endpoint: `{"result": true}`
is an acceptance, DUP_TRANSACTION_ERROR an "already known", any other answer a refusal (returned,
as from one endpoint, for the adapter to classify). A `{"Error": ...}` answer is the node's answer:
not failed over. The solidity API's pool (`with_port(urls, port)`) probes walletsolidity/getnowblock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from chains.errors import ChainRpcError
from chains.failover import Family, FailoverSettings, Outcome, PooledClient
from chains.transport import REQUEST_TIMEOUT_S, HttpEndpoint, mapped_errors, unusable_value

CONNECT_RETRIES = 2
API_KEY_HEADER = "TRON-PRO-API-KEY"
_API_KEY_PARAMS = ("api_key", "apikey")
BROADCAST_PATHS = frozenset({"wallet/broadcasttransaction", "wallet/broadcasthex"})
HEAD_PATH = "wallet/getnowblock"
SOLIDITY_HEAD_PATH = "walletsolidity/getnowblock"


class NodeApiError(ChainRpcError):
    """The node answered `{"Error": ...}`: a java exception while serving the request."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: node error: {message}"[:500])
        self.path = path
        self.node_message = message


def split_api_key(url: str) -> tuple[str, dict[str, str]]:
    """(base URL without a trailing slash or key query parameter, extra headers)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    keys = [value for name, value in query if name.lower() in _API_KEY_PARAMS]
    rest = [(name, value) for name, value in query if name.lower() not in _API_KEY_PARAMS]
    base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), urlencode(rest), ""))
    return base, ({API_KEY_HEADER: keys[0]} if keys else {})


@overload
def with_port(url: str, port: int) -> str: ...
@overload
def with_port(url: Sequence[str], port: int) -> list[str]: ...


def with_port(url: str | Sequence[str], port: int) -> str | list[str]:
    """`url` with its port replaced (a self-hosted java-tron serves /walletsolidity/ on its own
    port); for a list of URLs, each of them."""
    if not isinstance(url, str):
        return [with_port(one, port) for one in url]
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class TronEndpoint(HttpEndpoint):
    """One endpoint; one requests.Session per thread (sessions are not promised thread-safe)."""

    def __init__(self, url: str, timeout: float = REQUEST_TIMEOUT_S) -> None:
        super().__init__(url, timeout)
        self._base, self._headers = split_api_key(url)

    def _setup_session(self, session: Any) -> None:
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        # Only connection failures are retried here (the request never reached the node);
        # the pipeline retries everything else.
        # read=False: a read timeout is raised as such (not wrapped into a ConnectionError).
        retry = Retry(total=CONNECT_RETRIES, connect=CONNECT_RETRIES, read=False, status=0, other=0,
                      backoff_factor=0.1, allowed_methods=None, raise_on_status=False)
        session.mount("http://", HTTPAdapter(max_retries=retry))
        session.mount("https://", HTTPAdapter(max_retries=retry))
        session.headers.update({"Content-Type": "application/json", **self._headers})

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The node's JSON answer to POST `path` (e.g. "wallet/getnowblock"); `{}` means "none"."""
        answer = self.post_json(path, body)
        if not isinstance(answer, dict):
            raise ChainRpcError(f"{path}: unusable answer from {self.endpoint} (not a JSON object)")
        return answer

    def post_json(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """The node's decoded answer whatever its JSON type: a few APIs answer an array
        (wallet/gettransactioninfobyblocknum); an `{"Error": ...}` object still raises NodeApiError."""
        with mapped_errors(path, self.url):
            response = self._session().post(f"{self._base}/{path}", json=body or {}, timeout=self.timeout)
            response.raise_for_status()
            answer = response.json()
        if isinstance(answer, dict) and "Error" in answer:
            raise NodeApiError(path, str(answer["Error"]))
        return answer


def _number(answer: Any) -> int:
    """The block number of a getnowblock answer (protobuf JSON omits a zero number)."""
    header = answer.get("block_header") if isinstance(answer, dict) else None
    raw = header.get("raw_data") if isinstance(header, dict) else None
    if not isinstance(raw, dict):
        raise unusable_value("block header", answer)
    return to_int(raw.get("number", 0), "block number")


def _genesis_id(answer: Any) -> str:
    return str(answer.get("blockID")) if isinstance(answer, dict) else repr(answer)[:80]


def _answered(exc: ChainRpcError) -> bool:
    return isinstance(exc, NodeApiError)


def _send_outcome(answer: Any, exc: ChainRpcError | None) -> Outcome:
    if exc is not None:
        return Outcome.ANSWERED if isinstance(exc, NodeApiError) else Outcome.UNANSWERED
    if isinstance(answer, dict) and answer.get("result") is True:
        return Outcome.ACCEPTED
    return Outcome.KNOWN if isinstance(answer, dict) and answer.get("code") == "DUP_TRANSACTION_ERROR" else Outcome.ANSWERED


class TronHttpClient(PooledClient[TronEndpoint]):
    """One endpoint or several (`chains.failover`). `head_path` is the cheapest head request of
    the API this client serves (the solidity API's client: SOLIDITY_HEAD_PATH)."""

    family = Family("tron", head=lambda node: _number(node.post(HEAD_PATH)), answered=_answered,
                    identity=lambda node: _genesis_id(node.post("wallet/getblockbynum", {"num": 0})),
                    outcome=_send_outcome)

    def __init__(self, url: str | Sequence[str], timeout: float = REQUEST_TIMEOUT_S, *,
                 failover: FailoverSettings | None = None, head_path: str = HEAD_PATH) -> None:
        if head_path != HEAD_PATH:
            self.family = Family("tron", head=lambda node: _number(node.post(head_path)), answered=_answered,
                                 outcome=_send_outcome)  # no identity: block 0 is asked of the full API
        super().__init__(url, lambda u: TronEndpoint(u, timeout), failover)
        self.timeout = timeout

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The node's JSON answer to POST `path` (e.g. "wallet/getnowblock"); `{}` means "none".
        A broadcast goes to every healthy endpoint."""
        if path in BROADCAST_PATHS:
            return self.pool.broadcast(lambda node: node.post(path, body))
        identity = _genesis_id if path == "wallet/getblockbynum" and body == {"num": 0} else None
        return self.pool.read(lambda node: node.post(path, body), identity=identity)

    def post_json(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """The node's decoded answer whatever its JSON type (`TronEndpoint.post_json`)."""
        if path in BROADCAST_PATHS:
            return self.pool.broadcast(lambda node: node.post_json(path, body))
        return self.pool.read(lambda node: node.post_json(path, body))


def node_message(answer: dict[str, Any]) -> str:
    """A refusal's `message`: hex-encoded UTF-8 with visible=false, plain text otherwise."""
    message = answer.get("message", "")
    if not isinstance(message, str):
        return str(message)
    try:
        return bytes.fromhex(message).decode("utf-8")
    except ValueError:
        return message


def to_int(value: Any, what: str) -> int:
    """A JSON integer from the node; garbage is a ChainRpcError, not a crash."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise unusable_value(what, value)
