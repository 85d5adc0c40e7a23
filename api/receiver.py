"""A webhook receiver that checks every delivery: what a client's endpoint should do, runnable.

The demo and the sandbox walkthrough point the client's webhook here. Each POST is verified with
`verify_webhook` (signature over timestamp + "." + raw body, timestamp within tolerance) before
its JSON is trusted; a bad one is answered 401 and counted, never recorded as an event. Events
are kept by `event_id`, so a redelivery of the same event is counted once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pipeline.webhook_signing import WebhookSignatureError, verify_webhook

MAX_BODY_BYTES = 1 << 20


@dataclass
class Received:
    """What arrived: events by id (verified only), and the counts of every POST."""

    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    posts: int = 0
    signature_ok: int = 0
    signature_bad: int = 0

    def of_resource(self, resource_id: str) -> list[dict[str, Any]]:
        """Verified events whose data belongs to `resource_id`, in `sequence` order."""
        found = [e for e in self.events.values() if resource_id in (e["data"].get("transaction_id"),
                                                                      e["data"].get("wallet_id"))]
        return sorted(found, key=lambda e: e["sequence"])


class WebhookReceiver:
    """`with WebhookReceiver() as receiver:` listens on a free loopback port; set `secret` once
    `PUT /webhook` returned it (deliveries before that get 401, which is final: not retried)."""

    def __init__(self, tolerance_s: int = 300) -> None:
        self.secret: str | None = None
        self.tolerance_s = tolerance_s
        self.received = Received()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/webhooks"

    def __enter__(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, done: Callable[[Received], bool], timeout: float) -> bool:
        """Poll until `done(received)` holds or `timeout` seconds pass; returns whether it held."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if done(self.received):
                    return True
            time.sleep(0.1)
        with self._lock:
            return done(self.received)

    def accept(self, headers: dict[str, str], body: bytes) -> int:
        """Verify one delivery and record it; the HTTP status to answer."""
        secret = self.secret
        with self._lock:
            self.received.posts += 1
            try:
                if secret is None:
                    raise WebhookSignatureError("no secret configured yet")
                verify_webhook(secret, headers, body, tolerance_s=self.tolerance_s)
            except WebhookSignatureError:
                self.received.signature_bad += 1
                return 401
            self.received.signature_ok += 1
            event = json.loads(body)
            self.received.events[event["event_id"]] = event
            return 200

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, MAX_BODY_BYTES))
                status = receiver.accept({k: v for k, v in self.headers.items()}, body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:  # quiet: the counts tell the story
                return

        return Handler
