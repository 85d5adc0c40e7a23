"""The HTTP under one webhook POST: a total deadline, and a cap on what is read back.

httpx's timeouts are per operation (connect, each write, each read), not per request: a receiver
that sends its answer a byte at a time never trips a 10 s read timeout, and holds a webhook worker
as long as it likes (measured: timeout 1 s, a POST took 8.1 s and returned 200). Here every socket
operation of the POST - connect, TLS handshake, each send, each receive - gets at most the time
left until one deadline, so the POST is over at the deadline whatever the receiver does (the
operation that crosses it raises the httpx timeout of its phase). The answer is read up to its
status line and headers only, at most MAX_ANSWER_BYTES in all: the status code is what matters,
and the body is never read.

The deadline lives in an httpcore network backend (`httpcore.ConnectionPool(network_backend=...)`,
httpcore's public extension point, httpcore being httpx's own engine) under `DeadlineTransport`, an
`httpx.BaseTransport`, so httpx still builds the request (Host, Content-Length). No watchdog thread:
nothing closes a socket under another thread's feet, and the deadline holds on the thread that
sends. Name resolution is not bounded here: webhook targets outside devnet are pinned IP literals
(resolved, with a timeout, by pipeline.webhooks.delivery_target); in devnet mode a name is a local
one (`localhost`).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

MAX_ANSWER_BYTES = 32 * 1024  # status line + headers (+ whatever body arrives with them), never more

_HTTPX_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout), (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout), (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError), (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError), (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError), (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol), (httpcore.ProxyError, httpx.ProxyError),
)


class _Budget:
    """What one POST may still spend: time until its deadline, bytes of answer."""

    def __init__(self, deadline_s: float, max_answer_bytes: int) -> None:
        self.deadline_s = deadline_s
        self.deadline = time.monotonic() + deadline_s
        self.max_answer_bytes = max_answer_bytes
        self.answer_room = max_answer_bytes

    def time_left(self, timeout: float | None, expired: type[Exception]) -> float:
        """The time an operation may take: its own timeout, but never past the deadline (then
        `expired` is raised: a socket timeout of 0 would mean non-blocking, not "no time")."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise expired(f"the POST's {self.deadline_s:g} s deadline has passed")
        return left if timeout is None else min(timeout, left)


@contextmanager
def _mapped(timed_out: type[Exception], failed: type[Exception]) -> Iterator[None]:
    """Socket errors as the httpcore errors of the phase (what httpcore's own backend raises)."""
    try:
        yield
    except TimeoutError as exc:  # socket.timeout
        raise timed_out(str(exc) or "timed out") from exc
    except OSError as exc:  # ssl.SSLError included
        raise failed(str(exc) or type(exc).__name__) from exc


class _DeadlineStream(httpcore.NetworkStream):
    """A socket (plain or TLS) whose every operation ends by the budget's deadline."""

    def __init__(self, sock: socket.socket, budget: _Budget) -> None:
        self._sock = sock
        self._budget = budget

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._budget.answer_room <= 0:
            raise httpcore.ReadError(f"the answer's status line and headers are longer than "
                                     f"{self._budget.max_answer_bytes} bytes")
        left = self._budget.time_left(timeout, httpcore.ReadTimeout)
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
            self._sock.settimeout(left)
            data = self._sock.recv(min(max_bytes, self._budget.answer_room))
        self._budget.answer_room -= len(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        view = memoryview(buffer)
        while view:  # each send is given only what is left: a slowly reading receiver cannot stretch it
            left = self._budget.time_left(timeout, httpcore.WriteTimeout)
            with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
                self._sock.settimeout(left)
                sent = self._sock.send(view)
            view = view[sent:]

    def close(self) -> None:
        self._sock.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        try:
            left = self._budget.time_left(timeout, httpcore.ConnectTimeout)
            with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
                self._sock.settimeout(left)  # the handshake as a whole (CPython's ssl keeps one deadline)
                wrapped = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname)
        except BaseException:
            self._sock.close()
            raise
        return _DeadlineStream(wrapped, self._budget)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object" and isinstance(self._sock, ssl.SSLSocket):
            return self._sock  # what httpcore asks of it (selected_alpn_protocol) an SSLSocket answers
        if info == "socket":
            return self._sock
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        return None


class _DeadlineBackend(httpcore.NetworkBackend):
    """Opens TCP connections whose streams all share one budget."""

    def __init__(self, budget: _Budget) -> None:
        self._budget = budget

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)  # an IP literal, or devnet's localhost
        failure: Exception = httpcore.ConnectError(f"{host} has no address")
        for family, kind, proto, _, address in infos:
            left = self._budget.time_left(timeout, httpcore.ConnectTimeout)
            sock = socket.socket(family, kind, proto)
            try:
                with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
                    for option in socket_options or ():
                        sock.setsockopt(*option)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    if local_address is not None:
                        sock.bind((local_address, 0))
                    sock.settimeout(left)
                    sock.connect(address)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                sock.close()
                failure = exc
                continue
            except BaseException:
                sock.close()
                raise
            return _DeadlineStream(sock, self._budget)
        raise failure

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("webhooks are not sent over unix sockets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@contextmanager
def _as_httpx(request: httpx.Request) -> Iterator[None]:
    """httpcore's errors as httpx's, as httpx.HTTPTransport does."""
    try:
        yield
    except Exception as exc:
        for core_type, httpx_type in _HTTPX_ERRORS:
            if isinstance(exc, core_type):
                raise httpx_type(str(exc), request=request) from exc
        raise


class _Answer(httpx.SyncByteStream):
    def __init__(self, response: httpcore.Response, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        with _as_httpx(self._request):
            yield from self._response.stream  # type: ignore[union-attr]

    def close(self) -> None:
        self._response.close()


_ssl_lock = threading.Lock()
_ssl_context: ssl.SSLContext | None = None


def _default_ssl_context() -> ssl.SSLContext:
    """httpx's verifying context (certifi's CAs), built once: loading the CAs per POST is waste."""
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context(trust_env=False)
        return _ssl_context


class DeadlineTransport(httpx.BaseTransport):
    """An httpx transport for ONE request that ends by `deadline_s` seconds after it is made and
    reads at most `max_answer_bytes` of the answer. HTTP/1.1, no proxies, no retries, no reuse."""

    def __init__(self, deadline_s: float, max_answer_bytes: int = MAX_ANSWER_BYTES,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        if not deadline_s > 0:
            raise ValueError("deadline_s must be positive")
        self._pool = httpcore.ConnectionPool(ssl_context=ssl_context or _default_ssl_context(), max_connections=1,
                                             max_keepalive_connections=0, retries=0,
                                             network_backend=_DeadlineBackend(_Budget(deadline_s, max_answer_bytes)))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host, port=request.url.port,
                             target=request.url.raw_path),
            headers=request.headers.raw, content=request.stream, extensions=request.extensions)
        with _as_httpx(request):
            response = self._pool.handle_request(core_request)
        return httpx.Response(status_code=response.status, headers=response.headers,
                              stream=_Answer(response, request), extensions=response.extensions)

    def close(self) -> None:
        self._pool.close()
