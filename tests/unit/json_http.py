"""The answer of the tests' tiny HTTP nodes (`http.server` handlers standing in for a chain node).

Why: several unit tests serve JSON-RPC or TRON answers from a `BaseHTTPRequestHandler`; the
keep-alive reply (status, JSON type, exact length, body) is written here once.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any


def send_json(handler: BaseHTTPRequestHandler, answer: Any, status: int = 200) -> None:
    """Answer the request with `answer` as JSON; its Content-Length keeps HTTP/1.1 keep-alive working."""
    data = json.dumps(answer).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
