"""HTTP JSON-RPC front of the devnet Solana cluster, and the slot clock that drives it.

Standard library only (http.server): one thread per connection, HTTP/1.1 keep-alive (the adapter
keeps a session open), JSON-RPC 2.0 single and batch requests, and `GET /health` like a
validator's RPC port. The cluster's lock serialises access to the runtime.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devnet.solana.cluster import Cluster
from devnet.solana.errors import RpcError
from devnet.solana.methods import METHODS

MAX_BODY = 4 * 1024 * 1024


def handle(cluster: Cluster, request: Any) -> dict[str, Any] | None:
    """One JSON-RPC request object -> its response object (None for a notification)."""
    request_id = request.get("id") if isinstance(request, dict) else None
    try:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            raise RpcError(-32600, "Invalid request")
        handler = METHODS.get(request["method"])
        if handler is None:
            raise RpcError(-32601, "Method not found")
        params = request.get("params", [])
        if not isinstance(params, list):
            raise RpcError(-32602, "Invalid params: expected an array")
        result = handler(cluster, params)
    except RpcError as exc:
        return {"jsonrpc": "2.0", "error": exc.to_json(), "id": request_id}
    except Exception as exc:  # noqa: BLE001 - a bug in a handler is an internal error, not a dead server
        print(f"devnet solana: {request.get('method') if isinstance(request, dict) else '?'} failed: {exc!r}",
              file=sys.stderr, flush=True)
        return {"jsonrpc": "2.0", "error": {"code": -32603, "message": f"Internal error: {exc}"}, "id": request_id}
    return {"jsonrpc": "2.0", "result": result, "id": request_id}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    cluster: Cluster  # set on the subclass made by make_server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._reply(413, {"jsonrpc": "2.0", "error": {"code": -32600, "message": "request too large"}, "id": None})
            return
        try:
            request = json.loads(self.rfile.read(length))
        except ValueError:
            self._reply(200, {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None})
            return
        if isinstance(request, list):
            answers = [a for a in (handle(self.cluster, r) for r in request) if a is not None]
            self._reply(200, answers)
        else:
            self._reply(200, handle(self.cluster, request))

    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/") == "/health":
            self._reply(200, "ok", raw=True)
        else:
            self._reply(404, "not found", raw=True)

    def _reply(self, status: int, body: Any, raw: bool = False) -> None:
        data = body.encode() if raw else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if raw else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: one line per request is noise
        pass


def make_server(cluster: Cluster, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"cluster": cluster})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


class SlotClock(threading.Thread):
    """Advances the cluster one slot every `slot_ms` milliseconds until stopped."""

    def __init__(self, cluster: Cluster, slot_ms: int) -> None:
        super().__init__(name="slot-clock", daemon=True)
        self.cluster = cluster
        self.interval = slot_ms / 1000.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.cluster.advance(1)

    def stop(self) -> None:
        self._stop_event.set()
