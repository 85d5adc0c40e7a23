"""A reverse proxy in front of one devnet node whose faults a test (or a benchmark) sets at run time.

Why: RPC failover (chains/failover.py) must be shown to survive an endpoint that dies, lags or
stalls, against the real devnet nodes. Two proxies over one node are two endpoints of one chain.

    with RpcProxy(anvil.rpc_url) as proxy:
        spec = replace(spec, rpc_urls=(proxy.url, anvil.rpc_url))
        proxy.set_mode("dead")          # every request is answered by a TCP reset
        proxy.set_mode("lagging", 5)    # head queries answered 5 blocks behind
        proxy.set_mode("frozen")        # the head stays where it is now
        proxy.set_mode("pass")          # forward everything again
        proxy.calls["eth_sendRawTransaction"]  # requests seen, by JSON-RPC method or API path

It speaks plain HTTP/1.1 to any node: JSON-RPC (anvil, the Bitcoin and Solana devnets) and TRON's
HTTP wallet API; requests are forwarded with their path and headers (basic auth included), one
keep-alive upstream connection per client connection. `proxy.url` is the upstream URL with the
proxy's host and port (its user info, path and query are kept). `close()` stops listening: the
port then refuses connections ("killed").

What `lagging(n)` fakes (`frozen` is the same with n growing from 0 as the chain moves on):
- EVM: eth_blockNumber answers head - n; every "latest" parameter (eth_getBalance, eth_call,
  eth_getBlockByNumber, ...) is rewritten to that height;
- Bitcoin: getblockcount answers head - n; getbestblockhash answers getblockhash(head - n);
  getblockchaininfo's `blocks` and `bestblockhash` follow;
- Solana: getSlot and getBlockHeight answer their value - n;
- TRON: wallet/getnowblock (and walletsolidity/getnowblock) answer getblockbynum(head - n).
Everything else (balances at a given height, transactions, sends) is the live node's answer: this
is enough for a health check to see the lag, not a consistent old view of the chain.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from devnet.ports import LOOPBACK

MODES = ("pass", "dead", "lagging", "frozen")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
               "transfer-encoding", "upgrade", "host", "content-length"}
_MODE = re.compile(r"^(lagging)\((\d+)\)$")
_TRON_HEADS = {"/wallet/getnowblock": "/wallet/getblockbynum", "/walletsolidity/getnowblock": "/walletsolidity/getblockbynum"}

Forward = Callable[[str, bytes], Any]  # (path, body) -> decoded JSON answer of the upstream node


class RpcProxy:
    """One node behind a proxy with a fault mode (module docstring). Thread-safe."""

    def __init__(self, upstream_url: str, *, host: str = LOOPBACK) -> None:
        self.upstream_url = upstream_url
        parts = urlsplit(upstream_url)
        self._upstream = (parts.hostname or LOOPBACK, parts.port or 80)
        self._host = host
        self._lock = threading.Lock()
        self._mode, self._behind = "pass", 0
        self._frozen: dict[str, int] = {}
        self.calls: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "RpcProxy":
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer((self._host, 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="rpc-proxy",
                         daemon=True).start()
        return self

    def close(self) -> None:
        """Stop listening (new connections are then refused); a kept-alive connection's next
        request is reset."""
        self.set_mode("dead")
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "RpcProxy":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The upstream URL with the proxy's host and port: same credentials, path and query."""
        parts = urlsplit(self.upstream_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{self._host}:{self.port}" if userinfo else f"{self._host}:{self.port}"
        return urlunsplit((parts.scheme or "http", netloc, parts.path, parts.query, parts.fragment))

    # -- modes ----------------------------------------------------------------------------------
    def set_mode(self, mode: str, blocks: int = 0) -> None:
        """"pass", "dead", "lagging" (with `blocks`, or "lagging(5)"), "frozen"."""
        found = _MODE.match(mode)
        if found:
            mode, blocks = found.group(1), int(found.group(2))
        if mode not in MODES or not isinstance(blocks, int) or blocks < 0:
            raise ValueError(f"unknown proxy mode {mode!r} (one of {MODES}; lagging takes a block count >= 0)")
        with self._lock:
            self._mode, self._behind = mode, blocks if mode == "lagging" else 0
            self._frozen.clear()

    @property
    def mode(self) -> str:
        with self._lock:
            return f"lagging({self._behind})" if self._mode == "lagging" else self._mode

    def _shown(self, kind: str, real: int) -> int:
        """The head this proxy admits to, given the node's real head of this `kind`."""
        with self._lock:
            if self._mode == "frozen":
                return min(real, self._frozen.setdefault(kind, real))
            return max(real - self._behind, 0) if self._mode == "lagging" else real

    def _count(self, label: str) -> None:
        with self._lock:
            self.calls[label] += 1

    # -- rewriting (lagging, frozen) ------------------------------------------------------------
    def rewrite_tron(self, path: str, forward: Forward) -> Any:
        """A TRON getnowblock answered with the block `_shown` heights below (or the live head)."""
        now = forward(path, b"{}")
        header = now.get("block_header", {}).get("raw_data", {}) if isinstance(now, dict) else {}
        real = int(header.get("number", 0))
        shown = self._shown(path, real)
        return now if shown == real else forward(_TRON_HEADS[path], json.dumps({"num": shown}).encode())

    def rewrite_call(self, call: dict[str, Any], forward: Callable[[dict[str, Any]], Any]) -> Any:
        """One JSON-RPC call's answer (a reply object), head queries faked, "latest" pinned."""
        method, params = call.get("method"), call.get("params") or []
        if method == "eth_blockNumber":
            return _reply(call, hex(self._shown("evm", int(_result(forward(call)), 16))))
        if method in ("getblockcount", "getbestblockhash", "getblockchaininfo"):
            return self._bitcoin(call, forward)
        if method in ("getSlot", "getBlockHeight"):
            return _reply(call, self._shown(method, int(_result(forward(call)))))
        if isinstance(params, list) and "latest" in params:
            head = self._shown("evm", int(_result(forward({"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber",
                                                           "params": []})), 16))
            call = {**call, "params": [hex(head) if p == "latest" else p for p in params]}
        return forward(call)

    def _bitcoin(self, call: dict[str, Any], forward: Callable[[dict[str, Any]], Any]) -> Any:
        count = {"jsonrpc": "1.0", "id": 0, "method": "getblockcount", "params": []}
        shown = self._shown("bitcoin", int(_result(forward(count))))
        if call["method"] == "getblockcount":
            return _reply(call, shown)
        best = _result(forward({**count, "method": "getblockhash", "params": [shown]}))
        if call["method"] == "getbestblockhash":
            return _reply(call, best)
        info = forward(call)
        if isinstance(info, dict) and isinstance(info.get("result"), dict):
            info["result"].update(blocks=shown, bestblockhash=best)
        return info


def _reply(call: dict[str, Any], result: Any) -> dict[str, Any]:
    return {"jsonrpc": call.get("jsonrpc", "2.0"), "id": call.get("id"), "result": result, "error": None}


def _result(answer: Any) -> Any:
    if not isinstance(answer, dict) or answer.get("error") is not None:
        raise ValueError(f"the node answered {answer!r}"[:200])
    return answer["result"]


class _Handler(BaseHTTPRequestHandler):
    """One client connection: its requests, forwarded over one upstream connection."""

    owner: RpcProxy
    protocol_version = "HTTP/1.1"
    _conn: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.owner._count(_label(self.path, body))
        mode = self.owner.mode
        if mode == "dead":
            self._reset()
            return
        try:
            status, answer = self._answer(mode, body)
        except (OSError, http.client.HTTPException, ValueError):
            self._reset()  # the node is gone or answered garbage: so is this endpoint
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST

    def _answer(self, mode: str, body: bytes) -> tuple[int, bytes]:
        if mode == "pass":
            return self._upstream(self.path, body)
        path = self.path.split("?", 1)[0]
        if path in _TRON_HEADS:
            return 200, json.dumps(self.owner.rewrite_tron(path, self._forward_path)).encode()
        try:
            request = json.loads(body)
        except ValueError:
            return self._upstream(self.path, body)
        if isinstance(request, list):
            return 200, json.dumps([self.owner.rewrite_call(c, self._forward_call) for c in request]).encode()
        if isinstance(request, dict):
            return 200, json.dumps(self.owner.rewrite_call(request, self._forward_call)).encode()
        return self._upstream(self.path, body)

    def _forward_call(self, call: dict[str, Any]) -> Any:
        return json.loads(self._upstream(self.path, json.dumps(call).encode())[1])

    def _forward_path(self, path: str, body: bytes) -> Any:
        return json.loads(self._upstream(path, body)[1])

    def _upstream(self, path: str, body: bytes) -> tuple[int, bytes]:
        """(status, body) of the node; reconnects once if the kept-alive connection went stale."""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(*self.owner._upstream, timeout=30)
            try:
                self._conn.request(self.command, path, body=body, headers=headers)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _reset(self) -> None:
        """Abort the client's connection with a TCP reset (SO_LINGER 0): the request is never answered."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass

    def finish(self) -> None:
        super().finish()
        if self._conn is not None:
            self._conn.close()


def _label(path: str, body: bytes) -> str:
    """The JSON-RPC method(s) of a request, or its path (TRON's HTTP API)."""
    try:
        request = json.loads(body) if body else None
    except ValueError:
        request = None
    if isinstance(request, dict) and isinstance(request.get("method"), str):
        return request["method"]
    if isinstance(request, list):
        return "batch"
    return path.split("?", 1)[0].strip("/") or "/"
