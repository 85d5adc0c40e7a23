"""workers.metrics: step observations, the snapshot collector (real redis-server, migrated SQLite),
and the worker exporter summing the metric files of several real processes over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from chains.registry import Registry
from devnet.ports import free_port
from devnet.redis_server import RedisServer
from pipeline.db import Database
from pipeline.errors import ConfigurationError, DatabaseUnavailable
from pipeline.models import Client, Transaction
from pipeline.settings import Settings
from pipeline.steps.runner import StepReport
from workers import metrics
from workers.app import ALL_QUEUES

ROOT = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape as {(name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


def dead_broker() -> str:
    return f"redis://:pw-not-shown@127.0.0.1:{free_port()}/0"


@pytest.fixture
def one_tx(db: Database) -> str:
    with db.unit_of_work() as s:
        s.add(Client(client_id="cli_1", name="c", api_key_id="key_1"))
        s.flush()
        s.add(Transaction(transaction_id="tx_01", client_id="cli_1", idempotency_key="k", request_fingerprint="f",
                          from_address="a", to_address="b", chain="tron", token_symbol="TRX", amount=5,
                          status="PENDING", stage="RECEIVED"))
    return "tx_01"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_rpc_error_type_knows_node_errors_only() -> None:
    import chains.tron_rpc  # noqa: F401 - its NodeApiError is a ChainRpcError subclass

    assert metrics.rpc_error_type("ChainRpcError: timed out talking to the node") == "ChainRpcError"
    assert metrics.rpc_error_type("NodeApiError: SERVER_BUSY") == "NodeApiError"
    assert metrics.rpc_error_type("ChainMismatch: chain id 5 != 1") == "ChainMismatch"
    assert metrics.rpc_error_type("TransactionRejected: insufficient_funds: x") is None
    assert metrics.rpc_error_type("http://user:pw@node:8545: refused") is None
    assert metrics.rpc_error_type("") is None and metrics.rpc_error_type(None) is None


def test_observe_step_counts_latency_retries_and_rpc_errors(db: Database, registry: Registry, one_tx: str) -> None:
    ctx = SimpleNamespace(db=db, registry=registry)
    before = {
        "count": _sample("paratro_step_duration_seconds_count", step="broadcast", outcome="retry"),
        "sum": _sample("paratro_step_duration_seconds_sum", step="broadcast", outcome="retry"),
        "retries": _sample("paratro_step_retries_total", step="broadcast"),
        "rpc": _sample("paratro_rpc_errors_total", chain="tron", error="ChainRpcError"),
        "unknown": _sample("paratro_rpc_errors_total", chain="unknown", error="ChainRpcError"),
        "other": _sample("paratro_step_duration_seconds_count", step="broadcast", outcome="other"),
    }
    metrics.observe_step(ctx, "broadcast", one_tx, StepReport("retry", error="ChainRpcError: node down"), 0.25)
    metrics.observe_step(ctx, "broadcast", "tx_missing", StepReport("retry", error="ChainRpcError: x"), 0.5)
    metrics.observe_step(ctx, "broadcast", one_tx, StepReport("something new"), 0.1)
    assert _sample("paratro_step_duration_seconds_count", step="broadcast", outcome="retry") == before["count"] + 2
    assert _sample("paratro_step_duration_seconds_sum", step="broadcast", outcome="retry") == pytest.approx(before["sum"] + 0.75)
    assert _sample("paratro_step_retries_total", step="broadcast") == before["retries"] + 2
    assert _sample("paratro_rpc_errors_total", chain="tron", error="ChainRpcError") == before["rpc"] + 1
    assert _sample("paratro_rpc_errors_total", chain="unknown", error="ChainRpcError") == before["unknown"] + 1
    assert _sample("paratro_step_duration_seconds_count", step="broadcast", outcome="other") == before["other"] + 1


def test_observe_step_survives_a_dead_database(registry: Registry) -> None:
    class DownDb:
        def unit_of_work(self) -> None:
            raise DatabaseUnavailable("database unavailable")

    before = _sample("paratro_rpc_errors_total", chain="unknown", error="ChainMismatch")
    metrics.observe_step(SimpleNamespace(db=DownDb(), registry=registry), "confirm", "tx_x",
                         StepReport("held", error="ChainMismatch: wrong node"), 0.01)
    assert _sample("paratro_rpc_errors_total", chain="unknown", error="ChainMismatch") == before + 1


def test_queue_depths_read_redis_lists_and_priority_lists(redis_server: RedisServer) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    client.lpush("paratro.confirm", "a", "b", "c")
    client.lpush("paratro.confirm\x06\x163", "d")
    client.lpush("paratro.webhooks", "e")
    depths = metrics.queue_depths(redis_server.url, ALL_QUEUES)
    assert depths == {q: {"paratro.confirm": 4, "paratro.webhooks": 1}.get(q, 0) for q in ALL_QUEUES}
    with pytest.raises(Exception) as caught:
        metrics.queue_depths(dead_broker(), ALL_QUEUES, timeout_s=0.5)
    assert "pw-not-shown" not in str(caught.value)


def test_snapshot_collector_scrape(db: Database, one_tx: str, redis_server: RedisServer) -> None:
    import redis

    redis.Redis.from_url(redis_server.url).lpush("paratro.lock_funds", "x", "y")
    registry = CollectorRegistry()
    registry.register(metrics.SnapshotCollector(lambda: db, lambda: redis_server.url, lambda: ALL_QUEUES,
                                                lambda: ["ethereum", "tron"]))
    text = generate_latest(registry).decode()
    assert value(text, "paratro_database_up") == 1 and value(text, "paratro_broker_up") == 1
    assert value(text, "paratro_queue_depth", queue="paratro.lock_funds") == 2
    assert value(text, "paratro_transfers", chain="tron", status="PENDING") == 1
    assert value(text, "paratro_transfers", chain="ethereum", status="CONFIRMED") == 0  # known chain, no rows yet
    assert value(text, "paratro_transfers_pending", stage="RECEIVED") == 1
    assert value(text, "paratro_transfers_pending", stage="BROADCAST") == 0
    assert value(text, "paratro_webhook_attempts_total", outcome="delivered") == 0
    assert value(text, "paratro_outbox_lag_seconds") == 0
    assert "redis://" not in text and "sqlite" not in text


def test_snapshot_collector_reports_down_instead_of_failing(db: Database) -> None:
    class DownDb:
        def unit_of_work(self) -> None:
            raise DatabaseUnavailable("database unavailable: secret-host")

    registry = CollectorRegistry()
    registry.register(metrics.SnapshotCollector(lambda: DownDb(), dead_broker, lambda: ALL_QUEUES))  # type: ignore[arg-type,return-value]
    text = generate_latest(registry).decode()
    assert value(text, "paratro_database_up") == 0 and value(text, "paratro_broker_up") == 0
    assert "paratro_transfers" not in text and "paratro_queue_depth" not in text
    assert "secret-host" not in text and "pw-not-shown" not in text


@pytest.fixture
def no_multiproc_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    yield
    assert metrics.MULTIPROC_ENV not in os.environ  # the exporter forgot its temporary directory


def _observe_in_subprocess(multiproc_dir: Path, step: str, seconds: float) -> None:
    code = ("from workers.metrics import STEP_SECONDS, STEP_RETRIES\n"
            f"STEP_SECONDS.labels({step!r}, 'advanced').observe({seconds})\n"
            f"STEP_RETRIES.labels({step!r}).inc()\n")
    env = {**os.environ, metrics.MULTIPROC_ENV: str(multiproc_dir)}
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, timeout=120)


def test_worker_exporter_sums_every_process(no_multiproc_env: None, db_url: str, one_tx: str) -> None:
    settings = Settings(database_url=db_url, broker_url=dead_broker(), chain_registry="devnet")
    exporter = metrics.start_exporter(0, lambda: settings, addr="127.0.0.1")
    try:
        assert os.environ[metrics.MULTIPROC_ENV] == str(exporter.multiprocess_dir)  # for the Celery child
        _observe_in_subprocess(exporter.multiprocess_dir, "lock_funds", 0.2)
        _observe_in_subprocess(exporter.multiprocess_dir, "lock_funds", 0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        exporter.stop()
    assert value(text, "paratro_step_duration_seconds_count", step="lock_funds", outcome="advanced") == 2
    assert value(text, "paratro_step_duration_seconds_sum", step="lock_funds", outcome="advanced") == pytest.approx(0.5)
    assert value(text, "paratro_step_duration_seconds_bucket", step="lock_funds", outcome="advanced", le="0.25") == 1
    assert value(text, "paratro_step_retries_total", step="lock_funds") == 2
    assert value(text, "paratro_transfers", chain="tron", status="PENDING") == 1  # the snapshot too
    assert value(text, "paratro_broker_up") == 0
    assert "pw-not-shown" not in text and db_url not in text
    assert not exporter.multiprocess_dir.exists()


def test_exporter_port_in_use_is_one_configuration_error(no_multiproc_env: None, db_url: str) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"PARATRO_METRICS_PORT {port}"):
            metrics.start_exporter(port, lambda: Settings(database_url=db_url), addr="127.0.0.1")


def test_configured_multiprocess_dir_is_emptied_and_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        db_url: str) -> None:
    stale = tmp_path / "counter_4242.db"
    stale.write_bytes(b"old run")
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    exporter = metrics.start_exporter(0, lambda: Settings(database_url=db_url), addr="127.0.0.1")
    exporter.stop()
    assert not stale.exists() and tmp_path.is_dir()
    assert os.environ[metrics.MULTIPROC_ENV] == str(tmp_path)


def test_worker_exporter_off_by_default(no_multiproc_env: None) -> None:
    with metrics.worker_exporter(Settings(metrics_port=0)) as exporter:
        assert exporter is None
        assert metrics.MULTIPROC_ENV not in os.environ
