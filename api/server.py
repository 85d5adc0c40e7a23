"""Serving the API with uvicorn: in the foreground for `paratro api`, or in a thread for the tests
and the sandbox.

Uvicorn's own logging configuration is off (`log_config=None`): its loggers propagate to the root
logger that workers.logconfig set up, so every line is structured and passes the redactor. Its
access log is off too; api.app's Gate writes one line per request instead (method, path without
query, status, latency, client id; never a header, so never a signature).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

STARTUP_TIMEOUT_S = 15.0
SHUTDOWN_TIMEOUT_S = 10.0


def _config(app: Any, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, server_header=False,
                          proxy_headers=False, lifespan="on", timeout_graceful_shutdown=5)


class ServerHandle:
    """A uvicorn server running in a daemon thread on a bound socket; `.stop()` shuts it down."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = host, self._socket.getsockname()[1]
        self._server = uvicorn.Server(_config(app, host, self.port))
        self._thread = threading.Thread(target=self._run, name=f"api-{self.port}", daemon=True)
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        """`http://host:port` (no /api/v1: routes add their prefix)."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}"

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc

    def start(self) -> "ServerHandle":
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the API did not start on {self.base_url}"
                                   + (f": {type(self._error).__name__}" if self._error else ""))
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop accepting, finish requests in flight (a few seconds at most), close the socket."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(SHUTDOWN_TIMEOUT_S)
        self._socket.close()

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> ServerHandle:
    """Serve `app` on host:port (0: a free port) in a background thread; returns once it accepts."""
    return ServerHandle(app, host, port).start()


def run(app: Any, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve in the foreground until SIGINT/SIGTERM (uvicorn's handlers stop it gracefully)."""
    uvicorn.Server(_config(app, host, port)).run()
