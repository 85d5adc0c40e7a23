"""A throwaway redis-server on a free loopback port (Celery's broker in tests and the demo).

Why: the pipeline's guarantees (acks_late redelivery, lost messages, Redis restarts) are only
worth testing against the real broker. The server binds 127.0.0.1 only, keeps nothing on disk
(no RDB snapshots, no AOF) and works in a temporary directory that is removed on stop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from devnet.ports import LOOPBACK, free_port
from devnet.processes import ManagedProcess
from devnet.service import Service

INSTALL_HINT = (
    "redis-server is not on PATH. On Debian/Ubuntu run "
    "`apt-get update && apt-get install -y redis-server`; elsewhere install Redis >= 6 and put "
    "redis-server on PATH."
)


class RedisServerError(RuntimeError):
    """redis-server is missing or would not start."""


def find_redis_server() -> Path:
    found = shutil.which("redis-server")
    if found is None:
        raise RedisServerError(INSTALL_HINT)
    return Path(found)


def ensure_redis_server() -> Path:
    """Return redis-server, installing it with apt-get when missing and we are root with apt."""
    found = shutil.which("redis-server")
    if found is not None:
        return Path(found)
    apt = shutil.which("apt-get")
    if os.geteuid() != 0 or apt is None:
        raise RedisServerError(INSTALL_HINT)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([apt, "update"], [apt, "install", "-y", "--no-install-recommends", "redis-server"]):
        print(f"devnet: running {' '.join(cmd)}", file=sys.stderr)
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            raise RedisServerError(f"{' '.join(cmd)} failed:\n{tail}")
    # Debian's package starts a system service on 6379; ours never uses it (own port below).
    return find_redis_server()


class RedisServer(Service):
    """A redis-server process; ``.url`` is ``redis://127.0.0.1:PORT/0``."""

    name = "redis-server"

    def __init__(
        self,
        *,
        port: int | None = None,
        binary: Path | None = None,
        timeout: float = 15.0,
        extra_args: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.port = port
        self.binary = binary
        self.timeout = timeout
        self.extra_args = list(extra_args or [])

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("redis-server is not started")
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> "RedisServer":
        binary = self.binary or find_redis_server()
        self.port = self.port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="paratro-redis-"))
        argv = [
            str(binary),
            "--port", str(self.port),
            "--bind", LOOPBACK,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", "",  # to stdout, i.e. our log file
            *self.extra_args,
        ]
        url = self.url

        def ready() -> bool:
            import redis

            client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
            try:
                return bool(client.ping())
            finally:
                client.close()

        self._process = ManagedProcess(
            argv,
            name="redis-server",
            ready=ready,
            log_path=self.dir / "redis.log",
            timeout=self.timeout,
            grace=3.0,
            on_stop=self._remove_dir,
        )
        try:
            self._process.start()
        except BaseException:
            self._remove_dir()
            raise
        return self

    def restart(self, down_s: float = 0.0) -> None:
        """Stop, stay down `down_s` seconds, start again on the same port (data is lost: there is
        no persistence), as a broker restart looks to its clients."""
        import time

        port = self.port
        self.stop()
        time.sleep(down_s)
        self.port = port
        self.start()
