"""The embedded stack: redis-server, one devnet node per chain (tokens deployed), a migrated
database and real Celery worker processes, all on loopback, all stopped on exit.

The demo and the integration tests use the same stack so that what the demo shows is what the
tests check. The stack's settings are exported as `PARATRO_*` variables, to the worker processes
and to this process, so every component reads the same configuration.

A supervisor thread starts a worker process again when it dies (`paratro worker` restarts its own
Celery child; this covers the `paratro worker` process itself, e.g. killed by a test or the OOM
killer). `stop_worker(name)` stops one for good.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import structlog

from devnet.nodes import DevnetNode, start_node
from devnet.processes import ManagedProcess
from devnet.redis_server import RedisServer
from devnet.rpc_proxy import RpcProxy

log = structlog.get_logger("paratro.stack")
SUPERVISE_EVERY_S = 0.5


def project_home() -> Path:
    """Where `.devnet/` (the anvil install) and `var/` live: $PARATRO_HOME or the current directory."""
    return Path(os.environ.get("PARATRO_HOME", Path.cwd())).resolve()


@dataclass
class StackOptions:
    workdir: Path
    chains: tuple[str, ...] = ("ethereum",)
    database_url: str | None = None  # default: SQLite file in workdir
    block_time: float | None = 0.5  # seconds between devnet blocks; None = a block per transaction
    concurrency: int = 2
    beat: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    supervise: bool = True  # start a worker process again when it dies
    # >0: each chain is reached through this many fault-injecting proxies over its node (RPC
    # failover: `stack.proxies[chain]`, primary first; `set_mode("dead")` kills one)
    rpc_proxies: int = 0


@dataclass(frozen=True)
class _WorkerSpec:
    concurrency: int
    beat: bool
    queues: str | None


class EmbeddedStack:
    """Start with `with EmbeddedStack(options) as stack:`; `stack.env` holds the settings."""

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.env: dict[str, str] = {}
        self.nodes: dict[str, DevnetNode] = {}
        self.proxies: dict[str, list[RpcProxy]] = {}
        self.redis: RedisServer | None = None
        self.workers: dict[str, ManagedProcess] = {}
        self.restarts: Counter[str] = Counter()  # worker name -> times the supervisor started it again
        self._specs: dict[str, _WorkerSpec] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._exit = ExitStack()

    def __enter__(self) -> "EmbeddedStack":
        try:
            self._start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stopping.set()
        self._exit.close()

    def _start(self) -> None:
        from chains.registry import load_registry
        from pipeline.sealing import new_secrets_key
        from signer.local import new_master_key

        opts = self.options
        opts.workdir.mkdir(parents=True, exist_ok=True)
        registry = load_registry("devnet")
        self.redis = self._exit.enter_context(RedisServer())
        rpc_urls: dict[str, str | list[str]] = {}
        for chain in opts.chains:
            node = start_node(registry.chain(chain), project_home(), opts.block_time, self._exit)
            self.nodes[chain] = node
            rpc_urls[chain] = node.rpc_url
            if opts.rpc_proxies:
                self.proxies[chain] = [self._exit.enter_context(RpcProxy(node.rpc_url)) for _ in range(opts.rpc_proxies)]
                rpc_urls[chain] = [proxy.url for proxy in self.proxies[chain]]
        self.env = {
            "PARATRO_DATABASE_URL": opts.database_url or f"sqlite:///{opts.workdir / 'paratro.db'}",
            "PARATRO_BROKER_URL": self.redis.url,
            "PARATRO_CHAIN_REGISTRY": "devnet",
            "PARATRO_RPC_URLS": json.dumps(rpc_urls),
            "PARATRO_SIGNER_MASTER_KEY": new_master_key(),
            "PARATRO_SECRETS_KEY": new_secrets_key(),
            "PARATRO_SWEEP_INTERVAL_S": "5",
            "PARATRO_STALL_AFTER_S": "20",
            "PARATRO_BEAT_SCHEDULE_PATH": str(opts.workdir / "celerybeat-schedule"),
            **opts.extra_env,
        }
        activate(self.env)
        from workers.schema import install_schema

        install_schema()
        self._exit.callback(self._stop_workers)  # before redis and the nodes stop (LIFO)
        self.start_worker("w1", opts.concurrency, beat=opts.beat)

    def start_worker(self, name: str, concurrency: int, beat: bool = False, queues: str | None = None) -> ManagedProcess:
        """Start one more real prefork worker process (its log is in the workdir), supervised."""
        with self._lock:
            self._specs[name] = _WorkerSpec(concurrency, beat, queues)
            process = self._spawn(name)
            self.workers[name] = process
        if self.options.supervise and self._supervisor is None:
            self._supervisor = threading.Thread(target=self._supervise, name="stack-supervisor", daemon=True)
            self._supervisor.start()
        return process

    def stop_worker(self, name: str) -> int | None:
        """Stop a worker for good (the supervisor leaves it stopped); returns its exit code."""
        with self._lock:
            self._specs.pop(name, None)
            process = self.workers.pop(name, None)
        return process.stop() if process is not None else None

    def _spawn(self, name: str) -> ManagedProcess:
        spec = self._specs[name]
        argv = [sys.executable, "-m", "paratro.cli", "worker", "-c", str(spec.concurrency), "--hostname", f"{name}@%h"]
        if spec.beat:
            argv.append("--beat")
        if spec.queues:
            argv += ["--queues", spec.queues]
        env = {**os.environ, **self.env}
        process = ManagedProcess(argv, name=f"worker-{name}", ready=lambda: _worker_answers(name),
                                 log_path=self.options.workdir / f"worker-{name}.log", env=env, timeout=60.0,
                                 grace=10.0, cwd=Path.cwd(), term_leader_only=True)
        process.start()
        return process

    def _supervise(self) -> None:
        """Start again every supervised worker whose process died. Processes started here die with
        this thread (PR_SET_PDEATHSIG), which therefore lives until the workers are stopped."""
        while not self._stopping.wait(SUPERVISE_EVERY_S):
            for name, process in list(self.workers.items()):
                if process.is_running() or self._stopping.is_set():
                    continue
                with self._lock:
                    if self.workers.get(name) is not process or name not in self._specs:
                        continue  # stopped on purpose, or already replaced
                    log.warning("stack.worker_died", worker=name, exit_code=process.returncode)
                    process.stop()  # reap it
                    try:
                        self.workers[name] = self._spawn(name)
                        self.restarts[name] += 1
                    except Exception as exc:  # noqa: BLE001 - try again on the next round
                        log.error("stack.worker_restart_failed", worker=name, error=str(exc).splitlines()[0][:200])

    def _stop_workers(self) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=90)
        for process in list(self.workers.values()):
            process.stop()


def activate(env: dict[str, str]) -> None:
    """Make this process use `env`'s settings (CLI, tests): settings, contexts and Celery's broker."""
    os.environ.update(env)
    from pipeline.settings import get_settings
    from workers import runtime
    from workers.app import apply_settings

    get_settings.cache_clear()
    runtime.reset()
    apply_settings()


def _worker_answers(name: str) -> bool:
    from workers.app import app

    replies = app.control.ping(timeout=0.5)
    return any(name in "".join(reply) for reply in replies)
