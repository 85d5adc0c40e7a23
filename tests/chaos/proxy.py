"""A fault-injecting HTTP reverse proxy in front of one devnet node.

Devnet-agnostic: it relays any HTTP/1.1 request (JSON-RPC on "/", TRON's /wallet/* paths) to
its upstream over a keep-alive connection and relays the answer. While its faults are enabled,
each request rolls once for a network fault:

- delay:   sleep 0.05-1.5 s before (or after) forwarding;
- drop:    close the client connection without an answer, either before forwarding (the node
           never saw the request) or after it (the node acted on it, e.g. accepted a transaction,
           but the client never learns so);
- timeout: hold the request past the client's RPC timeout (chains/transport.py REQUEST_TIMEOUT_S,
           10 s), then close without an answer; forwarded or not, as for drops.

A proxy may also carry a `Lagger` (tests/chaos/lag.py): then a share of its read requests is
answered from a time-delayed view of the same node, as a lagging second node behind a load
balancer would answer. A JSON-RPC batch of reads is one request here (one roll, one "lag" fault),
lagged call by call by the lagger; writes, and batches with a write in them, are never lagged.

Faults are counted per kind, once per request; the harness reads the counters for its K figure
(and `requests`, every HTTP request seen, for the share).
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from devnet.ports import LOOPBACK

if TYPE_CHECKING:
    from tests.chaos.lag import Lagger

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length"}


@dataclass(frozen=True)
class FaultRates:
    """Per-request probabilities while faults are enabled."""

    delay: float = 0.06
    drop: float = 0.02
    timeout: float = 0.003
    lag: float = 0.5  # share of eligible reads answered by the lagging view (lag-enabled proxies only)
    delay_s: tuple[float, float] = (0.05, 1.5)
    hold_s: tuple[float, float] = (10.5, 11.5)  # just past the clients' 10 s RPC timeout


class Upstream:
    """One keep-alive connection to the node (one per client connection, so no sharing between threads)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or LOOPBACK
        self.port = parts.port or 80
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str]:
        """(status, body, content type); reconnects once if the kept-alive connection went stale."""
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self._conn.request(method, path, body=body if method != "GET" else None,
                                   headers={**headers, "Content-Length": str(len(body))} if method != "GET" else headers)
                response = self._conn.getresponse()
                data = response.read()
                if response.will_close:
                    self.close()
                return response.status, data, response.getheader("Content-Type", "application/json")
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


class FaultProxy:
    """`with FaultProxy("solana", upstream_url) as proxy:` -> clients use `proxy.url`."""

    def __init__(self, name: str, upstream_url: str, rates: FaultRates, *, seed: int = 0,
                 lagger: "Lagger | None" = None) -> None:
        self.name = name
        self.upstream_url = upstream_url.rstrip("/")
        self.rates = rates
        self.lagger = lagger
        self.enabled = threading.Event()  # faults on
        self.closing = threading.Event()  # wakes held requests at stop
        self.counts: Counter[str] = Counter()
        self.requests = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"proxy {self.name} is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- decisions -----------------------------------------------------------------------------
    def roll(self) -> tuple[str, float]:
        """One request's network fault: ("pass"|"delay"|"drop"|"timeout", seconds), plus where."""
        with self._lock:
            self.requests += 1
            if not self.enabled.is_set():
                return "pass", 0.0
            r = self._rng.random()
            rates = self.rates
            if r < rates.timeout:
                return "timeout", self._rng.uniform(*rates.hold_s)
            if r < rates.timeout + rates.drop:
                return "drop", 0.0
            if r < rates.timeout + rates.drop + rates.delay:
                return "delay", self._rng.uniform(*rates.delay_s)
            return "pass", 0.0

    def chance(self, p: float) -> bool:
        with self._lock:
            return self.enabled.is_set() and self._rng.random() < p

    def coin(self) -> bool:
        with self._lock:
            return self._rng.random() < 0.5

    def count(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "FaultProxy":
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = _Server((LOOPBACK, 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"proxy-{self.name}", daemon=True)
        self._thread.start()
        if self.lagger is not None:
            self.lagger.start(self.upstream_url)
        return self

    def stop(self) -> None:
        self.enabled.clear()
        self.closing.set()
        if self.lagger is not None:
            self.lagger.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (a killed worker, a timed-out call) is no news; anything else is."""
        import sys

        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    proxy: FaultProxy
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._upstream = Upstream(self.proxy.upstream_url)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._upstream.close()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self._relay("POST")

    def do_GET(self) -> None:  # noqa: N802
        self._relay("GET")

    def _relay(self, method: str) -> None:
        proxy = self.proxy
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method != "GET" else b""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        fault, seconds = proxy.roll()
        before = proxy.coin() if fault in ("delay", "drop", "timeout") else False
        if fault != "pass":
            proxy.count(fault)
        if before and self._inflict(fault, seconds):
            return

        def forward(path: str, data: bytes) -> tuple[int, bytes]:
            status, answer, _ = self._upstream.request("POST", path, data, headers)
            return status, answer

        answer: tuple[int, bytes, str] | None = None
        lagger = proxy.lagger
        if lagger is not None and method == "POST" and lagger.eligible(self.path, body) and proxy.chance(proxy.rates.lag):
            try:
                lagged = lagger.answer(self.path, body, forward)
            except (OSError, http.client.HTTPException, ValueError):
                lagged = None
            if lagged is not None:
                proxy.count("lag")
                answer = (200, lagged, "application/json")
        if answer is None:
            try:
                answer = self._upstream.request(method, self.path, body, headers)
            except (OSError, http.client.HTTPException) as exc:
                answer = (502, f'{{"error": "bad gateway: {type(exc).__name__}"}}'.encode(), "application/json")
            else:
                if lagger is not None and answer[0] == 200 and method == "POST":
                    lagger.observe(self.path, body, answer[1])
        if not before and self._inflict(fault, seconds):
            return
        status, data, content_type = answer
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True

    def _inflict(self, fault: str, seconds: float) -> bool:
        """Delay, or drop (at once, or after holding past the client's timeout); True if dropped."""
        if fault == "delay":
            time.sleep(seconds)
        elif fault in ("drop", "timeout"):
            if fault == "timeout":
                self.proxy.closing.wait(seconds)
            self._drop()
            return True
        return False

    def _drop(self) -> None:
        """Close the connection without a byte of answer."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
