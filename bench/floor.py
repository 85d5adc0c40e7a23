"""The floor: N bare 6-task Celery chains of no-op tasks through one worker of 2 prefork processes,
on the benchmark's redis-server; chains finished per second.

The worker is `celery -A bench.floor_app worker -c 2 --pool prefork` with the same command-line
options `paratro worker` gives Celery (`--without-gossip --without-mingle`). It is started here and
stopped before this returns, so it never competes with the pipeline's worker for the two cores.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devnet.processes import ManagedProcess

WARMUP_CHAINS = 10
POLL_S = 0.02


@dataclass(frozen=True)
class FloorResult:
    chains: int
    seconds: float

    @property
    def chains_per_s(self) -> float:
        return self.chains / self.seconds if self.seconds > 0 else 0.0


def floor_worker(broker_url: str, workdir: Path, concurrency: int = 2) -> ManagedProcess:
    """The floor's worker process (not started)."""
    from bench.floor_app import BROKER_ENV, QUEUES

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, BROKER_ENV: broker_url,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    argv = [sys.executable, "-m", "celery", "-A", "bench.floor_app", "worker", "-Q", ",".join(QUEUES),
            "-c", str(concurrency), "--pool", "prefork", "--loglevel", "WARNING", "--without-gossip",
            "--without-mingle", "-n", "floor@%h"]
    return ManagedProcess(argv, name="floor-worker", ready=lambda: _answers(broker_url), env=env, cwd=root,
                          log_path=workdir / "worker-floor.log", timeout=60.0, grace=10.0)


def _answers(broker_url: str) -> bool:
    from bench.floor_app import app

    app.conf.broker_url = broker_url
    return any("floor@" in name for reply in app.control.ping(timeout=0.5) for name in reply)


def run_floor(broker_url: str, workdir: Path, chains: int, say: Callable[[str], None],
              timeout_s: float = 120.0, concurrency: int = 2) -> FloorResult:
    """Start the floor worker, warm it up, time `chains` chains published at once, stop it."""
    import redis

    from bench.floor_app import DONE_KEY, app, chain_signature

    app.conf.broker_url = broker_url
    client = redis.Redis.from_url(broker_url)
    with floor_worker(broker_url, workdir, concurrency):
        client.delete(DONE_KEY)
        _publish_and_wait(client, DONE_KEY, chain_signature, WARMUP_CHAINS, timeout_s)
        say(f"floor: {chains} bare 6-task chains, 1 worker x {concurrency} prefork processes")
        client.delete(DONE_KEY)
        started = time.monotonic()
        _publish_and_wait(client, DONE_KEY, chain_signature, chains, timeout_s, say)
        seconds = time.monotonic() - started
    client.close()
    return FloorResult(chains, seconds)


def _publish_and_wait(client: object, key: str, signature: Callable[[], object], count: int, timeout_s: float,
                      say: Callable[[str], None] | None = None) -> None:
    for _ in range(count):
        signature().apply_async()  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout_s
    shown = time.monotonic()
    while True:
        done = int(client.get(key) or 0)  # type: ignore[attr-defined]
        if done >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"floor: {done} of {count} chains finished within {timeout_s:.0f} s")
        if say is not None and time.monotonic() - shown > 3:
            say(f"floor: {done}/{count} chains")
            shown = time.monotonic()
        time.sleep(POLL_S)
