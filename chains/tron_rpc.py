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
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from chains.errors import ChainRpcError
from chains.transport import REQUEST_TIMEOUT_S, HttpEndpoint, mapped_errors, unusable_value

CONNECT_RETRIES = 2
API_KEY_HEADER = "TRON-PRO-API-KEY"
_API_KEY_PARAMS = ("api_key", "apikey")


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


def with_port(url: str, port: int) -> str:
    """`url` with its port replaced (a self-hosted java-tron serves /walletsolidity/ on its own port)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class TronHttpClient(HttpEndpoint):
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
