"""Every process of a chaos run: redis-server, the database, a devnet node and a fault proxy per
chain, several Celery worker processes and one beat; and the blunt instruments used on them.

Everything is started from the main thread (devnet.processes: a child's parent-death signal fires
when the thread that started it exits) and everything is stopped by `stop()`, which the harness
calls on success, failure and Ctrl-C; `kill_now()` is the watchdog's last resort.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from devnet.processes import ManagedProcess
from tests.chaos.proxy import FaultProxy, FaultRates

LAGGING_FAMILIES = {"solana", "tron"}
MIN_AGE_S = 8.0  # a worker is a kill target once it has been up this long

# Short deadlines so that recovery happens within the run: the sweeper runs every 2 s and takes
# over a transfer whose driver's step lease (30 s, the least the app accepts: longer than any RPC,
# timeout 10 s) ran out; a queued message is published again after 10 s; countdowns are capped at 5 s and
# Redis redelivers an unacknowledged task after 60 s (the app wants >= 10x the countdown cap).
PIPELINE_ENV = {
    "PARATRO_SWEEP_INTERVAL_S": "2",
    "PARATRO_STALL_AFTER_S": "10",
    "PARATRO_STEP_LEASE_S": "30",
    "PARATRO_RELAY_INTERVAL_S": "2",
    "PARATRO_MAX_COUNTDOWN_S": "5",
    "PARATRO_VISIBILITY_TIMEOUT_S": "60",
    "PARATRO_LOG_JSON": "true",
    "PARATRO_LOG_LEVEL": "INFO",
}


@dataclass
class Worker:
    name: str
    process: ManagedProcess
    log_path: Path
    started: float = field(default_factory=time.monotonic)


class ChaosCluster:
    def __init__(self, workdir: Path, db: str, chains: tuple[str, ...], *, block_time: float, rates: FaultRates,
                 seed: int, workers: int, concurrency: int, lag_range: tuple[float, float]) -> None:
        self.workdir = workdir
        self.db = db
        self.chains = chains
        self.block_time = block_time
        self.rates = rates
        self.rng = random.Random(seed)
        self.seed = seed
        self.worker_count = workers
        self.concurrency = concurrency
        self.lag_range = lag_range
        self.env: dict[str, str] = {}
        self.nodes: dict[str, object] = {}
        self.direct_urls: dict[str, str] = {}
        self.proxies: dict[str, FaultProxy] = {}
        self.redis: object | None = None
        self.postgres: object | None = None
        self.workers: list[Worker] = []
        self.beat: ManagedProcess | None = None
        self.beat_interval: float | None = None
        self.exited: list[str] = []  # workers that died on their own (not killed by us)
        self._serial = 0
        self._beats = 0
        self._stack = ExitStack()

    # -- start ---------------------------------------------------------------------------------
    def start(self, say: Callable[[str], None]) -> None:
        from chains.registry import load_registry
        from devnet.nodes import start_node
        from devnet.redis_server import RedisServer
        from pipeline.sealing import new_secrets_key
        from signer.local import new_master_key
        from tests.chaos.lag import SolanaLag, TronLag
        from workers.stack import project_home

        self.workdir.mkdir(parents=True, exist_ok=True)
        registry = load_registry("devnet")
        self.redis = self._stack.enter_context(RedisServer())
        if self.db == "postgresql":
            from devnet.postgres import PostgresServer

            self.postgres = self._stack.enter_context(PostgresServer())
            database_url = self.postgres.url  # type: ignore[attr-defined]
        else:
            database_url = f"sqlite:///{self.workdir / 'paratro.db'}"
        say(f"redis {self.redis.url}, database {database_url}")  # type: ignore[attr-defined]
        for i, chain in enumerate(self.chains):
            spec = registry.chain(chain)
            node = start_node(spec, project_home(), self.block_time, self._stack)
            self.nodes[chain] = node
            self.direct_urls[chain] = node.rpc_url
            lagger = None
            if spec.family in LAGGING_FAMILIES:
                lag_s = round(self.rng.uniform(*self.lag_range), 1)
                lagger = SolanaLag(lag_s) if spec.family == "solana" else TronLag(lag_s)
            proxy = FaultProxy(chain, node.rpc_url, self.rates, seed=self.seed * 100 + i, lagger=lagger)
            self._stack.enter_context(proxy)
            self.proxies[chain] = proxy
            lag = f", lagging view {lagger.lag_s} s behind" if lagger else ""
            say(f"{chain}: node {node.rpc_url}, fault proxy {proxy.url}{lag}")
        self.env = {
            "PARATRO_DATABASE_URL": database_url,
            "PARATRO_BROKER_URL": self.redis.url,  # type: ignore[attr-defined]
            "PARATRO_CHAIN_REGISTRY": "devnet",
            "PARATRO_RPC_URLS": json.dumps({chain: proxy.url for chain, proxy in self.proxies.items()}),
            "PARATRO_SIGNER_MASTER_KEY": new_master_key(),
            "PARATRO_SECRETS_KEY": new_secrets_key(),
            "PARATRO_BEAT_SCHEDULE_PATH": str(self.workdir / "celerybeat-schedule"),
            **PIPELINE_ENV,
        }
        from workers.stack import activate

        activate(self.env)
        try:
            from workers.schema import install_schema
        except ImportError:  # older layout
            from paratro.cli import install_schema  # type: ignore[no-redef]

        install_schema()

    def start_processes(self) -> None:
        self.start_beat(None)
        for _ in range(self.worker_count):
            self.start_worker()

    # -- workers and beat ----------------------------------------------------------------------
    def start_worker(self) -> Worker:
        self._serial += 1
        name = f"w{self._serial}"
        log_path = self.workdir / f"worker-{name}.log"
        argv = [sys.executable, "-m", "paratro.cli", "worker", "-c", str(self.concurrency), "--hostname", f"{name}@%h"]
        process = ManagedProcess(argv, name=f"worker-{name}", ready=None, log_path=log_path,
                                 env={**os.environ, **self.env}, grace=5.0, cwd=Path.cwd())
        process.start()
        worker = Worker(name, process, log_path)
        self.workers.append(worker)
        return worker

    def start_beat(self, interval_s: float | None) -> None:
        """(Re)start the one beat; `interval_s` overrides the sweep interval (the driver storm)."""
        if self.beat is not None:
            self.beat.stop(grace=3.0)
        self._beats += 1
        env = {**os.environ, **self.env,
               "PARATRO_BEAT_SCHEDULE_PATH": str(self.workdir / f"celerybeat-schedule-{self._beats}")}
        if interval_s is not None:
            env["PARATRO_SWEEP_INTERVAL_S"] = str(int(interval_s))
        self.beat = ManagedProcess([sys.executable, "-m", "paratro.cli", "beat"], name="beat", ready=None,
                                   log_path=self.workdir / f"beat-{self._beats}.log", env=env, grace=3.0,
                                   cwd=Path.cwd())
        self.beat.start()
        self.beat_interval = interval_s

    def reap_exited(self) -> list[str]:
        """Workers (or beat) that exited on their own: noted and replaced."""
        notes = []
        for worker in list(self.workers):
            code = worker.process.returncode
            if code is not None:
                notes.append(f"worker {worker.name} exited by itself with code {code} (log {worker.log_path})")
                worker.process.stop(grace=0)
                self.workers.remove(worker)
                self.start_worker()
        if self.beat is not None and self.beat.returncode is not None:
            notes.append(f"beat exited by itself with code {self.beat.returncode}")
            self.start_beat(self.beat_interval)
        self.exited += notes
        return notes

    def kill_random_worker(self) -> tuple[str, str] | None:
        """SIGKILL a random worker process among workers up for MIN_AGE_S (a worker killed while it
        still imports its libraries tests nothing), at one of three levels:
        - "worker-kill": the whole process group (supervisor, Celery worker, pool), then a
          replacement starts, as an orchestrator would after a lost machine;
        - "celery-kill": the Celery worker under `paratro worker`'s supervisor, which restarts it;
        - "pool-kill": one prefork pool process, which Celery replaces (its task is lost or,
          with acks_late and reject_on_worker_lost, delivered again).
        (kind, description), or None when no worker is old enough."""
        now = time.monotonic()
        mature = [w for w in self.workers if w.process.is_running() and now - w.started >= MIN_AGE_S]
        if not mature:
            return None
        victim = self.rng.choice(mature)
        pid = victim.process.pid or 0
        kids = _children(pid)
        grandkids = [g for k in kids for g in _children(k)]
        celery, pool = (kids, grandkids) if grandkids else ([], kids)
        r = self.rng.random()
        if r < 0.3 and celery:
            target = self.rng.choice(celery)
            _kill(target)
            victim.started = now  # it starts again under the supervisor
            return "celery-kill", f"Celery worker {target} of {victim.name} (its supervisor restarts it)"
        if r < 0.65 and pool:
            target = self.rng.choice(pool)
            _kill(target)
            return "pool-kill", f"pool process {target} of {victim.name}"
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        victim.process.stop(grace=0)
        self.workers.remove(victim)
        replacement = self.start_worker()
        return "worker-kill", f"{victim.name} (replaced by {replacement.name})"

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Until every worker answers a ping (seconds waited); the fault phase starts on a warm cluster."""
        from workers.app import app

        began = time.monotonic()
        wanted = {w.name for w in self.workers}
        while time.monotonic() - began < timeout:
            try:
                replies = app.control.ping(timeout=1.0)
            except Exception:  # noqa: BLE001 - broker not reachable yet
                replies = []
            answered = {name.split("@", 1)[0] for reply in replies for name in reply}
            if wanted <= answered:
                break
            time.sleep(0.5)
        return time.monotonic() - began

    def ensure_workers(self) -> None:
        while len(self.workers) < self.worker_count:
            self.start_worker()

    # -- broker and database faults --------------------------------------------------------------
    def restart_redis(self) -> float:
        began = time.monotonic()
        self.redis.restart()  # type: ignore[attr-defined]
        return time.monotonic() - began

    def terminate_backends(self) -> int:
        """pg_terminate_backend on every other client backend of the pipeline's database."""
        if self.postgres is None:
            return 0
        import psycopg

        with psycopg.connect(self.postgres.dsn, autocommit=True, connect_timeout=5) as conn:  # type: ignore[attr-defined]
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            ).fetchall()
        return sum(1 for (ok,) in rows if ok)

    def set_faults(self, enabled: bool) -> None:
        for proxy in self.proxies.values():
            (proxy.enabled.set if enabled else proxy.enabled.clear)()

    # -- stop ----------------------------------------------------------------------------------
    def stop_processes(self) -> None:
        """SIGTERM every worker and beat at once (warm shutdown in parallel), then reap each."""
        processes = [worker.process for worker in self.workers] + ([self.beat] if self.beat is not None else [])
        for process in processes:
            if process.is_running():
                try:
                    os.killpg(process.pid or 0, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
        for process in processes:
            process.stop(grace=5.0)

    def stop(self) -> None:
        """Workers and beat first (they use everything else), then proxies, nodes, redis, database."""
        try:
            self.stop_processes()
        finally:
            self._stack.close()

    def kill_now(self) -> None:
        """The watchdog's last resort: SIGKILL every process group we know of, no waiting."""
        from devnet import processes

        with processes._live_lock:
            live = list(processes._live)
        for proc in live:
            if proc.pid:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _children(pid: int) -> list[int]:
    """The direct children of `pid` (the prefork pool of a worker)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except (OSError, ValueError):
        pass
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found
