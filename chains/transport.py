"""What every chain family's node client does alike: one HTTP endpoint, errors mapped, secrets hidden.

Why this module exists: `evm_rpc`, `solana_rpc`, `tron_rpc` and `bitcoin_rpc` sit on the same
boundary and must obey the same rules there, and each used to write them out on its own. Kept
here once, a fix to redaction or to the error mapping reaches every family at the same time:

- an endpoint is only ever named as scheme://host:port (`redact_endpoint`): its user info, path
  and query may hold credentials or an API key;
- transport trouble (refused, reset, DNS, TLS, timeout, HTTP error status, a body that is not
  JSON) becomes ChainRpcError, which is transient (`transport_error`, `mapped_errors`). The
  `requests` exception is never chained (its text carries the full URL): `mapped_errors` raises
  `from None`; a caller that must not keep it even as the context raises `transport_error(...)`
  outside its handler (bitcoin_rpc);
- a JSON-RPC error object from the node becomes NodeRpcError with the node's code, message and
  `data` (`NodeRpcError.from_error`, `json_rpc_result`; per call of a batch, `json_rpc_results`):
  a ChainRpcError, so transient unless the adapter classifies it as a refusal;
- `HttpEndpoint`: URL, timeout, redacted name and one keep-alive `requests.Session` per thread (a
  session is not promised thread-safe).

What differs stays in the family's module: web3's HTTPProvider and its exception types (evm),
the HTTP wallet API, which is not JSON-RPC, and its API-key header (tron), basic auth from the
URL, Decimal amounts and HTTP 401/500 answers (bitcoin), RpcResponse `value`s and plain-number
quantities (solana).

`requests` is imported on first use only, so that `import chains` stays cheap.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any, Iterator
from urllib.parse import urlsplit

from chains.errors import ChainError, ChainRpcError

REQUEST_TIMEOUT_S = 10.0

#: Called once per HTTP request sent to a node, with (the redacted endpoint, what it asks: the
#: JSON-RPC method, "batch" for a JSON-RPC batch, or the HTTP API path such as
#: "wallet/getnowblock"). The worker registers its request counter here (workers.metrics), so
#: chains/ needs no metrics library. Never handed a URL: its path or query may hold an API key.
REQUEST_OBSERVERS: list[Callable[[str, str], None]] = []
_METHOD = re.compile(rb'"method"\s*:\s*"([A-Za-z0-9_.-]{1,64})"')
_LABEL = re.compile(r"[A-Za-z0-9_./-]{1,64}")


def _notify(endpoint: str, method: str) -> None:
    """Tell every observer about one HTTP request; an observer's error never fails the request."""
    for observer in REQUEST_OBSERVERS:
        try:
            observer(endpoint, method)
        except Exception:  # noqa: BLE001 - counting must not break a node call
            pass


def request_method(body: bytes | str | None, path: str = "") -> str:
    """What one HTTP request asks, as a bounded label: the JSON-RPC `method` of the body, "batch"
    for a JSON array of calls, else the last two segments of the path (TRON's HTTP API: a key
    placed earlier in the path stays out), "other" for anything unexpected."""
    head = (body.encode() if isinstance(body, str) else body or b"")[:256].lstrip()
    if head.startswith(b"["):
        return "batch"
    found = _METHOD.search(head)
    if found:
        return found.group(1).decode()
    tail = "/".join(segment for segment in path.split("?", 1)[0].split("/") if segment)
    tail = "/".join(tail.split("/")[-2:])
    return tail if _LABEL.fullmatch(tail) else "other"


def redact_endpoint(url: str) -> str:
    """scheme://host:port only; the user info, path and query may hold credentials or an API key."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme or '?'}://{parts.hostname or '?'}{port}"
    except ValueError:
        return "<endpoint>"


def transport_error(
    operation: str, endpoint: str, exc: BaseException, *, sdk_errors: tuple[type[BaseException], ...] = ()
) -> ChainRpcError | None:
    """The ChainRpcError for a requests / decoding exception, naming only scheme://host:port.

    None for anything else (a ChainError, a bug): the caller re-raises it as it is. `sdk_errors`
    are a client library's own exception types, reported by name.
    """
    import requests

    if isinstance(exc, ChainError):
        return None
    where = redact_endpoint(endpoint)
    name = type(exc).__name__
    if isinstance(exc, requests.JSONDecodeError):  # a RequestException too, but about the body
        return ChainRpcError(f"{operation}: unusable answer from {where} ({name})")
    if isinstance(exc, requests.Timeout):
        return ChainRpcError(f"{operation}: timed out talking to {where}")
    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        return ChainRpcError(f"{operation}: HTTP {status} from {where}")
    if isinstance(exc, (requests.RequestException, OSError)):  # refused/reset, DNS, TLS, redirects, ...
        return ChainRpcError(f"{operation}: cannot reach {where} ({name})")
    if sdk_errors and isinstance(exc, sdk_errors):
        return ChainRpcError(f"{operation}: {name} from {where}")
    if isinstance(exc, (ValueError, TypeError, KeyError)):  # a body that is not JSON / not the expected shape
        return ChainRpcError(f"{operation}: unusable answer from {where} ({name})")
    return None


@contextlib.contextmanager
def mapped_errors(
    operation: str, endpoint: str, *, sdk_errors: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """Map what `transport_error` knows, raised inside, to ChainRpcError (not chained)."""
    try:
        yield
    except Exception as exc:
        failure = transport_error(operation, endpoint, exc, sdk_errors=sdk_errors)
        if failure is None:
            raise
        raise failure from None


class NodeRpcError(ChainRpcError):
    """The node answered with a JSON-RPC error object (transient unless the caller classifies it)."""

    max_message: int | None = None  # a family may cut long node messages

    def __init__(self, method: str, code: int | None, message: str, data: Any = None) -> None:
        super().__init__(f"{method}: node error {code}: {message}"[: self.max_message])
        self.method = method
        self.code = code
        self.node_message = message
        self.data = data

    @classmethod
    def from_error(cls, method: str, error: Any) -> "NodeRpcError":
        """The exception for a JSON-RPC `error` member: an object with code/message/data, or anything."""
        if isinstance(error, dict):
            return cls(method, error.get("code"), str(error.get("message", "")), error.get("data"))
        return cls(method, None, str(error))


def json_rpc_result(method: str, answer: Any, endpoint: str) -> Any:
    """The `result` of a decoded JSON-RPC 2.0 answer; NodeRpcError for an error object."""
    if not isinstance(answer, dict):
        raise ChainRpcError(f"{method}: unusable answer from {redact_endpoint(endpoint)} (not a JSON object)")
    error = answer.get("error")
    if error is not None:
        raise NodeRpcError.from_error(method, error)
    if "result" not in answer:
        raise ChainRpcError(f"{method}: unusable answer from {redact_endpoint(endpoint)} (no result)")
    return answer["result"]


def json_rpc_results(methods: Iterable[str], answers: Iterable[Any], endpoint: str) -> list[Any]:
    """Per call of a JSON-RPC batch, in order, its `result` or the NodeRpcError the node answered
    for it, not raised: one refused call must not sink the others. An answer that is not JSON-RPC
    raises ChainRpcError (`json_rpc_result`)."""
    results: list[Any] = []
    for method, answer in zip(methods, answers):
        try:
            results.append(json_rpc_result(method, answer, endpoint))
        except NodeRpcError as exc:
            results.append(exc)
    return results


def unusable_value(what: str, value: Any) -> ChainRpcError:
    """The error for a value in the node's answer that cannot be used: garbage is not a crash."""
    return ChainRpcError(f"node answered an unusable {what}: {value!r}"[:200])


class HttpEndpoint:
    """One node endpoint: URL, timeout, redacted name, and one requests.Session per thread."""

    def __init__(self, url: str, timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.url = url
        self.timeout = timeout
        self._local = threading.local()

    @property
    def endpoint(self) -> str:
        return redact_endpoint(self.url)

    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = requests.Session()
            self._setup_session(session)
            session.send = observed(session.send, self.endpoint)  # type: ignore[method-assign]
            self._local.session = session
        return session

    def _setup_session(self, session: Any) -> None:
        """Per-family session settings (auth, headers, retries); none by default."""


def observed(send: Callable[..., Any], endpoint: str) -> Callable[..., Any]:
    """A Session.send that reports each request to REQUEST_OBSERVERS first: every request to a
    node passes here (HttpEndpoint's sessions, and the EVM client's sessions under web3), retries
    and batches included."""

    def send_observed(request: Any, **kwargs: Any) -> Any:
        if REQUEST_OBSERVERS:
            _notify(endpoint, request_method(request.body, request.path_url or ""))
        return send(request, **kwargs)

    return send_observed
