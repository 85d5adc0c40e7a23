"""Prometheus metrics: what the step tasks count, what the database and Redis show, and the worker
exporter that serves both.

Two kinds of numbers, two mechanisms:
- Events that happen inside a Celery prefork child (a step ran for N seconds with outcome X, a
  retry, an RPC error, an SQL statement, an HTTP request to a chain node) are counters and
  histograms. Each child has its own memory, so they use prometheus_client's multiprocess mode:
  every process writes its values to mmap files in
  PROMETHEUS_MULTIPROC_DIR, and the exporter sums the files at scrape time. The supervising
  `paratro worker` parent creates (and empties) that directory before it starts the Celery child,
  which passes it on to its forked pool processes through the environment.
- State (transfers by chain and status, pending by stage, outbox lag, webhook backlog, queue depths)
  is read at scrape time by `SnapshotCollector` from the database (`pipeline.stats.snapshot`) and
  from Redis (LLEN of each queue): the source of truth, identical from every process that asks.

Labels are bounded sets (step names, outcome words, chain names, exception class names, queue names);
never a URL, an address, an id or an error message. Every worker exporter and the API's `/metrics`
report the same snapshot gauges: aggregate them with max(), not sum(). Neither endpoint has auth:
keep them on the internal network, never behind the public ingress.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from celery.signals import worker_process_init
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from pipeline.models import Transaction, utcnow
from pipeline.stages import FINAL, Stage, Status
from pipeline.stats import Snapshot, snapshot

if TYPE_CHECKING:
    from pipeline.db import Database
    from pipeline.settings import Settings
    from pipeline.steps import StepContext
    from pipeline.steps.runner import StepReport

log = structlog.get_logger("paratro.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
EXPORTER_ADDR = "0.0.0.0"  # noqa: S104 - scraped from the deployment's network; no secrets are served
BROKER_TIMEOUT_S = 1.0
# What run_message can report (OutcomeKind values + the runner's own words); anything else is "other".
STEP_OUTCOMES = frozenset({"advanced", "noop", "final", "wait", "stalled", "restart",
                           "dropped", "retry", "exhausted", "held", "unrecorded", "unknown"})
# Exceptions that mean "the node could not be reached or answered garbage" (or is the wrong node).
RPC_ERROR_BASES = ("ChainRpcError", "ChainMismatch")
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# Kombu's Redis transport keeps priority > 0 messages in sibling lists named queue + sep + priority.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)

STEP_SECONDS = Histogram("paratro_step_duration_seconds", "Time to run one step message, by step and outcome",
                         ["step", "outcome"], buckets=STEP_BUCKETS)
STEP_RETRIES = Counter("paratro_step_retries", "Step runs that ended in a transient error and were rescheduled",
                       ["step"])
RPC_ERRORS = Counter("paratro_rpc_errors", "Step runs that ended in a chain node error, by chain and error type",
                     ["chain", "error"])
DB_STATEMENTS = Counter("paratro_db_statements", "SQL statements the worker processes sent to the database, by verb",
                        ["verb"])
RPC_REQUESTS = Counter("paratro_rpc_requests", "HTTP requests to chain nodes, by chain and JSON-RPC method or API "
                       "path (a JSON-RPC batch is one request, method \"batch\")", ["chain", "method"])
# Statement verbs counted by name; anything else (PRAGMA, WITH, ...) is "other".
_VERBS = frozenset({"select", "insert", "update", "delete", "begin", "savepoint", "release", "rollback", "commit"})


def _class_names(base: type) -> set[str]:
    names = {base.__name__}
    for sub in base.__subclasses__():
        names |= _class_names(sub)
    return names


def rpc_error_type(error: str | None) -> str | None:
    """The exception class name a StepReport's error starts with, if it is a chain node error."""
    if not error:
        return None
    import chains.errors

    name = error.split(":", 1)[0].strip()
    known = set().union(*(_class_names(getattr(chains.errors, base)) for base in RPC_ERROR_BASES))
    return name if name in known else None


def _chain_of(ctx: "StepContext", transaction_id: str) -> str:
    from sqlalchemy import select

    try:
        with ctx.db.reading() as session:
            chain = session.scalar(select(Transaction.chain).where(Transaction.transaction_id == transaction_id))
    except Exception:  # noqa: BLE001 - the database is down too: still count the error
        return "unknown"
    return chain if chain in ctx.registry.names() else "unknown"


def observe_step(ctx: "StepContext", step: str, transaction_id: str, report: "StepReport", seconds: float) -> None:
    """Count one step run (called by workers.tasks.run_step). Never raises: metrics must not fail a step."""
    try:
        outcome = report.result if report.result in STEP_OUTCOMES else "other"
        STEP_SECONDS.labels(step, outcome).observe(max(0.0, seconds))
        if report.result == "retry":
            STEP_RETRIES.labels(step).inc()
        error_type = rpc_error_type(report.error)
        if error_type is not None:
            RPC_ERRORS.labels(_chain_of(ctx, transaction_id), error_type).inc()
    except Exception as exc:  # noqa: BLE001
        log.warning("metrics.observe_failed", error=type(exc).__name__)


def statement_verb(statement: str) -> str:
    """The bounded label of one SQL statement: its first word, lowercased, if a known verb."""
    words = statement[:32].split(None, 1)
    verb = words[0].lower() if words else ""
    return verb if verb in _VERBS else "other"


_statement_count_broken = False  # this process's statement counter failed once (then stays quiet)


def _count_statement(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
    global _statement_count_broken
    try:
        DB_STATEMENTS.labels(statement_verb(statement)).inc()
    except Exception as exc:  # noqa: BLE001 - metrics must not fail a statement; said once, not per statement
        if not _statement_count_broken:
            _statement_count_broken = True
            log.warning("metrics.statement_count_failed", error=type(exc).__name__)


class _EndpointChains:
    """Redacted endpoint -> chain name, from the current settings' registry (its RPC overrides
    included), rebuilt when the settings object changes. Chains sharing one endpoint are named
    together ("bsc+ethereum"); an endpoint no chain uses is "other"."""

    def __init__(self) -> None:
        self._settings: object = None
        self._names: dict[str, str] = {}

    def chain(self, endpoint: str) -> str:
        from pipeline.settings import get_settings

        settings = get_settings()
        if settings is not self._settings:
            self._names = self._build(settings)
            self._settings = settings
        return self._names.get(endpoint, "other")

    @staticmethod
    def _build(settings: "Settings") -> dict[str, str]:
        from collections import defaultdict

        from chains.transport import redact_endpoint
        from workers.runtime import registry_from

        try:
            registry = registry_from(settings)
        except Exception:  # noqa: BLE001 - a bad registry is reported by the worker's own checks
            return {}
        by_endpoint: dict[str, set[str]] = defaultdict(set)
        for name in registry.names():
            for url in registry.chain(name).rpc_urls:
                by_endpoint[redact_endpoint(url)].add(name)
        return {endpoint: "+".join(sorted(names)) for endpoint, names in by_endpoint.items()}


_endpoint_chains = _EndpointChains()


def _count_request(endpoint: str, method: str) -> None:
    RPC_REQUESTS.labels(_endpoint_chains.chain(endpoint), method).inc()


_counters_installed = False


def install_counters() -> None:
    """Count this process's SQL statements (SQLAlchemy `before_cursor_execute` on every engine)
    and its HTTP requests to chain nodes (`chains.transport.REQUEST_OBSERVERS`). Idempotent.

    Connected to Celery's `worker_process_init`, so every prefork child (where the steps run)
    counts and the exporter sums them; the pipeline and the chain clients import no metrics
    library. What the exporter's own snapshot queries cost is left out (it runs in the parent)."""
    global _counters_installed
    if _counters_installed:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from chains.transport import REQUEST_OBSERVERS

    event.listen(Engine, "before_cursor_execute", _count_statement)
    REQUEST_OBSERVERS.append(_count_request)
    _counters_installed = True


@worker_process_init.connect
def _install_in_worker_process(**_: object) -> None:
    install_counters()


def queue_depths(broker_url: str, queues: Iterable[str], timeout_s: float = BROKER_TIMEOUT_S) -> dict[str, int]:
    """Messages waiting in each queue (Redis LLEN, priority lists included). Raises the Redis
    client's error when the broker cannot be reached (whose message names host and port only)."""
    import redis

    names = list(queues)
    client = redis.Redis.from_url(broker_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        pipe = client.pipeline(transaction=False)
        for queue in names:
            pipe.llen(queue)
            for priority in _PRIORITY_STEPS:
                pipe.llen(f"{queue}{_PRIORITY_SEP}{priority}")
        lengths = pipe.execute()
    finally:
        client.close()
    per_queue = 1 + len(_PRIORITY_STEPS)
    return {queue: int(sum(lengths[i * per_queue:(i + 1) * per_queue])) for i, queue in enumerate(names)}


class SnapshotCollector(Collector):
    """Gauges (and DB-derived counters) read at scrape time from the database and the broker.

    A database or broker that does not answer is reported as `paratro_database_up 0` /
    `paratro_broker_up 0` (and its series left out), never as a failed scrape.
    """

    def __init__(self, database: Callable[[], "Database"], broker_url: Callable[[], str],
                 queues: Callable[[], Iterable[str]], chains: Callable[[], Iterable[str]] = tuple) -> None:
        self._database = database
        self._broker_url = broker_url
        self._queues = queues
        self._chains = chains

    def describe(self) -> Iterable[Metric]:
        return []  # names are known only by collecting; the registry must not collect at register time

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        yield from self._database_metrics()
        yield from self._broker_metrics()
        duration = GaugeMetricFamily("paratro_snapshot_seconds", "Time to read the database and broker snapshot")
        duration.add_metric([], time.monotonic() - started)
        yield duration

    def _database_metrics(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("paratro_database_up", "1 if the snapshot query answered")
        try:
            with self._database().reading() as session:
                snap = snapshot(session, utcnow())
        except Exception as exc:  # noqa: BLE001 - one line, no URL (the exception type is enough)
            log.warning("metrics.snapshot_failed", error=type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from snapshot_metrics(snap, self._chains())

    def _broker_metrics(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("paratro_broker_up", "1 if Redis answered the queue length query")
        try:
            depths = queue_depths(self._broker_url(), self._queues())
        except Exception as exc:  # noqa: BLE001
            log.warning("metrics.queue_depths_failed", error=type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily("paratro_queue_depth", "Messages waiting in a Celery queue (Redis)", labels=["queue"])
        for queue, count in sorted(depths.items()):
            depth.add_metric([queue], count)
        yield depth


def snapshot_metrics(snap: Snapshot, chains: Iterable[str] = ()) -> Iterator[Metric]:
    """The metric families of one snapshot. Known chains and every pending stage appear even at 0,
    so a series does not vanish when its count drops to nothing."""
    transfers = GaugeMetricFamily("paratro_transfers", "Transfers by chain and status", labels=["chain", "status"])
    counts = dict(snap.transfers)
    for chain in set(chains) | {chain for chain, _ in counts}:
        for status in Status:
            counts.setdefault((chain, status.value), 0)
    for (chain, status), count in sorted(counts.items()):
        transfers.add_metric([chain, status], count)
    yield transfers
    pending = GaugeMetricFamily("paratro_transfers_pending", "PENDING transfers by stage", labels=["stage"])
    for stage in Stage:
        if stage not in FINAL:
            pending.add_metric([stage.value], snap.pending_by_stage.get(stage.value, 0))
    yield pending
    yield _gauge("paratro_transfers_held", "PENDING transfers held for ops (replay after fixing the cause)", snap.held)
    yield _gauge("paratro_oldest_pending_age_seconds", "Age of the oldest PENDING transfer (0: none)",
                 snap.oldest_pending.age_s if snap.oldest_pending else 0.0)
    failures = CounterMetricFamily("paratro_transfer_failures", "FAILED transfers by failure reason", labels=["reason"])
    for reason, count in sorted(snap.failures_total.items()):
        failures.add_metric([reason], count)
    yield failures
    recent = GaugeMetricFamily("paratro_transfer_failures_24h", "Transfers FAILED in the last 24 h by reason",
                               labels=["reason"])
    for reason, count in sorted(snap.failures_24h.items()):
        recent.add_metric([reason], count)
    yield recent
    yield _gauge("paratro_outbox_due_messages", "Step messages past their deadline, not picked up yet", snap.outbox_due)
    yield _gauge("paratro_outbox_lag_seconds", "Age of the oldest due step message (0: none due)", snap.outbox_lag_s or 0.0)
    yield _gauge("paratro_webhook_events_pending", "Webhook events not delivered yet", snap.webhooks_pending)
    yield _gauge("paratro_webhook_events_due", "Pending webhook events whose next attempt is due", snap.webhooks_due)
    yield _gauge("paratro_webhook_oldest_due_age_seconds", "How long the most overdue webhook event has waited",
                 snap.webhooks_oldest_due_s or 0.0)
    yield _gauge("paratro_webhook_events_failed", "Webhook events given up on", snap.webhooks_failed)
    attempts = CounterMetricFamily("paratro_webhook_attempts", "Webhook delivery attempts by outcome", labels=["outcome"])
    for outcome in sorted(set(snap.webhook_attempts) | {"delivered", "retry", "failed"}):
        attempts.add_metric([outcome], snap.webhook_attempts.get(outcome, 0))
    yield attempts


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    family.add_metric([], value)
    return family


def settings_collector(settings_source: Callable[[], "Settings"]) -> SnapshotCollector:
    """A SnapshotCollector over the current settings' database, broker and registry."""
    from pipeline.db import get_database
    from workers.app import ALL_QUEUES

    def chains() -> Iterable[str]:
        from chains.registry import load_registry

        try:
            return tuple(load_registry(settings_source().chain_registry).names())
        except Exception:  # noqa: BLE001 - the chains seen in the database are still reported
            return ()

    return SnapshotCollector(database=lambda: get_database(settings_source().database_url),
                             broker_url=lambda: settings_source().broker_url,
                             queues=lambda: ALL_QUEUES, chains=chains)


def prepare_multiprocess_dir() -> tuple[Path, bool]:
    """The directory for the Celery processes' metric files, exported as PROMETHEUS_MULTIPROC_DIR
    for the children started after this; emptied now (values of a previous run must not be added
    to this one's). Returns it and whether it is a temporary one (to be removed at exit)."""
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        path, temporary = Path(configured), False
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    else:
        path, temporary = Path(tempfile.mkdtemp(prefix="paratro-metrics-")), True
    os.environ[MULTIPROC_ENV] = str(path)
    return path, temporary


def exporter_registry(multiprocess_dir: Path, settings_source: Callable[[], "Settings"]) -> CollectorRegistry:
    """The worker exporter's registry: every process's step metrics summed, plus the snapshot."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(multiprocess_dir))
    registry.register(settings_collector(settings_source))
    return registry


@dataclass
class Exporter:
    """A running exporter: where it listens and its metric files."""

    port: int
    multiprocess_dir: Path
    server: Any
    temporary: bool = False  # the directory was made for this exporter: removed by stop()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        _forget_dir(self.multiprocess_dir, self.temporary)


def start_exporter(port: int, settings_source: Callable[[], "Settings"], addr: str = EXPORTER_ADDR) -> Exporter:
    """Prepare the metric files' directory and serve /metrics on `port` (0: any free port) in a
    daemon thread. An unusable port raises ConfigurationError (one line, naming the setting)."""
    from pipeline.errors import ConfigurationError

    path, temporary = prepare_multiprocess_dir()
    try:
        server, _thread = start_http_server(port, addr=addr, registry=exporter_registry(path, settings_source))
    except OSError as exc:
        _forget_dir(path, temporary)
        raise ConfigurationError(f"PARATRO_METRICS_PORT {port}: cannot listen: {exc.strerror or exc}") from None
    return Exporter(port=server.server_address[1], multiprocess_dir=path, server=server, temporary=temporary)


def _forget_dir(path: Path, temporary: bool) -> None:
    if temporary:
        shutil.rmtree(path, ignore_errors=True)
        if os.environ.get(MULTIPROC_ENV) == str(path):
            del os.environ[MULTIPROC_ENV]


@contextmanager
def worker_exporter(settings: "Settings") -> Iterator[Exporter | None]:
    """Around the supervised Celery worker (the parent `paratro worker` process): with
    settings.metrics_port > 0, the metric files' directory (inherited by the Celery child through
    the environment) and the exporter; nothing at all with 0."""
    if settings.metrics_port <= 0:
        yield None
        return
    exporter = start_exporter(settings.metrics_port, lambda: settings)
    log.info("metrics.exporter_started", port=exporter.port)
    try:
        yield exporter
    finally:
        exporter.stop()
