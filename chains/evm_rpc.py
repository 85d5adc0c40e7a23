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
full URL) is not chained.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator
from urllib.parse import urlsplit

from chains.errors import ChainError, ChainRpcError

REQUEST_TIMEOUT_S = 10.0
RETRIES = 2  # web3 retries transport errors of idempotent calls; the pipeline retries beyond that


class NodeRpcError(ChainRpcError):
    """The node answered with a JSON-RPC error object."""

    def __init__(self, method: str, code: int | None, message: str, data: Any = None) -> None:
        super().__init__(f"{method}: node error {code}: {message}")
        self.method = method
        self.code = code
        self.node_message = message
        self.data = data


def redact_endpoint(url: str) -> str:
    """scheme://host:port only; the path, query and credentials may hold an API key."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme or '?'}://{host}{port}"
    except ValueError:
        return "<endpoint>"


@contextlib.contextmanager
def rpc_errors(operation: str, endpoint: str) -> Iterator[None]:
    """Map web3 / requests / decoding exceptions raised inside to ChainRpcError."""
    import requests
    from web3.exceptions import Web3Exception

    where = redact_endpoint(endpoint)
    try:
        yield
    except ChainError:
        raise
    except requests.Timeout:
        raise ChainRpcError(f"{operation}: timed out talking to {where}") from None
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise ChainRpcError(f"{operation}: HTTP {status} from {where}") from None
    except requests.RequestException as exc:  # connection refused/reset, DNS, TLS, ...
        raise ChainRpcError(f"{operation}: cannot reach {where} ({type(exc).__name__})") from None
    except OSError as exc:
        raise ChainRpcError(f"{operation}: cannot reach {where} ({type(exc).__name__})") from None
    except Web3Exception as exc:
        raise ChainRpcError(f"{operation}: {type(exc).__name__} from {where}") from None
    except (ValueError, TypeError, KeyError) as exc:  # a body that is not JSON / not JSON-RPC
        raise ChainRpcError(f"{operation}: unusable answer from {where} ({type(exc).__name__})") from None


class JsonRpcClient:
    """One endpoint; the Web3 object is created on first use, once, and shared by threads."""

    def __init__(self, url: str, timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.url = url
        self.timeout = timeout
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
            request_kwargs={"timeout": self.timeout},
            exception_retry_configuration=ExceptionRetryConfiguration(
                errors=(requests.ConnectionError, requests.Timeout), retries=RETRIES, backoff_factor=0.1
            ),
        )
        return Web3(provider, middleware=[])

    def call(self, method: str, params: list[Any]) -> Any:
        """The `result` of a JSON-RPC call; NodeRpcError for an error object, ChainRpcError otherwise."""
        with rpc_errors(method, self.url):
            response = self.web3().provider.make_request(method, params)
            if not isinstance(response, dict):
                raise ChainRpcError(f"{method}: unusable answer from {self.endpoint} (not a JSON object)")
            error = response.get("error")
            if error is not None:
                if isinstance(error, dict):
                    raise NodeRpcError(method, error.get("code"), str(error.get("message", "")), error.get("data"))
                raise NodeRpcError(method, None, str(error))
            if "result" not in response:
                raise ChainRpcError(f"{method}: unusable answer from {self.endpoint} (no result)")
            return response["result"]


def to_int(value: Any, what: str) -> int:
    """A JSON-RPC quantity ("0x1a") as int; garbage is a ChainRpcError, not a crash."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise ChainRpcError(f"node answered an unusable {what}: {value!r}"[:200])
