"""Free loopback ports for local services.

Tests and the demo start real services (redis-server, postgres, anvil) side by side, often
several at once; fixed ports would collide, so each service asks the kernel for a free one.
There is a small race between closing the probe socket and the service binding the port;
callers that care retry the start (``ManagedProcess`` surfaces a bind failure in its log tail).
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that was free at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
