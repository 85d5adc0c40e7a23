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
carries the full URL) is not chained.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
from typing import Any, Iterator

from chains.errors import ChainError, ChainRpcError
from chains.evm_rpc import NodeRpcError, redact_endpoint

REQUEST_TIMEOUT_S = 10.0
_ids = itertools.count(1)

__all__ = ["NodeRpcError", "REQUEST_TIMEOUT_S", "SolanaRpc", "rpc_errors", "to_int", "value_of"]


@contextlib.contextmanager
def rpc_errors(operation: str, endpoint: str) -> Iterator[None]:
    """Map requests / decoding exceptions raised inside to ChainRpcError (the one mapping point)."""
    import requests

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
    except (ValueError, TypeError, KeyError) as exc:  # a body that is not JSON / not JSON-RPC
        raise ChainRpcError(f"{operation}: unusable answer from {where} ({type(exc).__name__})") from None


class SolanaRpc:
    """One endpoint; one keep-alive HTTP session per thread (a requests Session is not thread-safe)."""

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

            session = self._local.session = requests.Session()
        return session

    def call(self, method: str, params: list[Any]) -> Any:
        """The `result` of a JSON-RPC call; NodeRpcError for an error object, ChainRpcError otherwise.

        A dropped keep-alive connection is retried once (every call here is idempotent: a
        transaction sent twice is the same signature).
        """
        import requests

        body = {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params}
        with rpc_errors(method, self.url):
            try:
                response = self._session().post(self.url, json=body, timeout=self.timeout)
            except requests.ConnectionError:
                self._local.session = None
                response = self._session().post(self.url, json=body, timeout=self.timeout)
            response.raise_for_status()
            answer = json.loads(response.content)
            if not isinstance(answer, dict):
                raise ChainRpcError(f"{method}: unusable answer from {self.endpoint} (not a JSON object)")
            error = answer.get("error")
            if error is not None:
                if isinstance(error, dict):
                    raise NodeRpcError(method, error.get("code"), str(error.get("message", "")), error.get("data"))
                raise NodeRpcError(method, None, str(error))
            if "result" not in answer:
                raise ChainRpcError(f"{method}: unusable answer from {self.endpoint} (no result)")
            return answer["result"]


def to_int(value: Any, what: str) -> int:
    """A JSON integer (Solana quantities are plain numbers); garbage is ChainRpcError, not a crash."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():  # token amounts come as decimal strings
        return int(value)
    raise ChainRpcError(f"node answered an unusable {what}: {value!r}"[:200])


def value_of(result: Any, what: str) -> Any:
    """The `value` of an RpcResponse (`{"context": {...}, "value": ...}`)."""
    if not isinstance(result, dict) or "value" not in result:
        raise ChainRpcError(f"node answered an unusable {what}: {result!r}"[:200])
    return result["value"]
