"""Operations against the real stack (SQLite and PostgreSQL): `paratro status --json` reports what
the database holds, with or without the broker; a `paratro worker` started with
PARATRO_METRICS_PORT serves the step histograms of its Celery processes and the snapshot gauges,
and no metric carries a URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from devnet.ports import free_port
from pipeline.models import Transaction
from pipeline.stages import STEPS
from tests.integration import helpers
from workers.app import ALL_QUEUES, QUEUE_PREFIX, app
from workers.stack import EmbeddedStack

ROOT = Path(__file__).resolve().parents[2]


def paratro(stack: EmbeddedStack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "paratro.cli", *args], env={**os.environ, **stack.env, **env},
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def db_counts() -> dict[str, dict[str, int]]:
    with helpers.ctx().db.unit_of_work() as session:
        rows = session.execute(select(Transaction.chain, Transaction.status, func.count())
                               .group_by(Transaction.chain, Transaction.status)).all()
    counts: dict[str, dict[str, int]] = {}
    for chain, status, count in rows:
        counts.setdefault(chain, {})[status] = count
    return counts


def status_json(stack: EmbeddedStack, **env: str) -> tuple[dict[str, Any], str]:
    result = paratro(stack, "status", "--json", **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def confirmed_transfer(stack: EmbeddedStack) -> str:
    funded = helpers.funded_wallet(stack, eth="1", usdt="0")
    tx_id = helpers.submit(funded, "ETH", "0.01")
    assert helpers.wait_final([tx_id])[tx_id].status == "CONFIRMED"
    return tx_id


def test_status_json_shows_the_transfer_counts(stack: EmbeddedStack) -> None:
    confirmed_transfer(stack)
    for _ in range(5):  # a transfer of an earlier test may still move: compare a quiet moment
        before = db_counts()
        data, stderr = status_json(stack)
        if db_counts() == before:
            break
    assert data["transfers"] == before
    assert data["transfers"]["ethereum"]["CONFIRMED"] >= 1
    assert data["broker"] == {"ok": True, "error": None} and stderr == ""
    assert set(data["queues"]) == set(ALL_QUEUES) and all(isinstance(n, int) for n in data["queues"].values())
    assert data["pending"] == sum(data["pending_by_stage"].values())
    assert set(data["webhooks"]) >= {"pending", "due", "oldest_due_s", "failed", "attempts"}
    assert set(data["outbox"]) == {"due", "lag_s"}


def test_status_without_the_broker_warns_in_one_line(stack: EmbeddedStack) -> None:
    dead = f"redis://:do-not-print@127.0.0.1:{free_port()}/0"
    data, stderr = status_json(stack, PARATRO_BROKER_URL=dead)
    assert data["queues"] is None and data["broker"]["ok"] is False
    assert data["transfers"] == db_counts()
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: queue depths unknown: broker unreachable")
    assert "do-not-print" not in stderr + json.dumps(data)
    table = paratro(stack, "status", PARATRO_BROKER_URL=dead)
    assert table.returncode == 0 and "unknown" in table.stdout and "pending transfers" in table.stdout


def test_status_on_an_unmigrated_database_is_one_line(stack: EmbeddedStack, tmp_path: Path) -> None:
    result = paratro(stack, "status", PARATRO_DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: database schema is not migrated: run `paratro migrate`"


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def step_runs(text: str) -> dict[tuple[str, str], float]:
    return {(s.labels["step"], s.labels["outcome"]): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "paratro_step_duration_seconds_count"}


def test_worker_exporter_serves_step_histograms(stack: EmbeddedStack) -> None:
    helpers.once_per_session(stack, "the exporter serves files the worker processes write, not the database")
    port = free_port()
    os.environ["PARATRO_METRICS_PORT"] = str(port)  # only while this worker's process is spawned
    try:
        stack.start_worker("metrics", 1, queues=",".join(QUEUE_PREFIX + step for step in STEPS))
    finally:
        del os.environ["PARATRO_METRICS_PORT"]
    first_queue = QUEUE_PREFIX + STEPS[0]
    others = [name for reply in app.control.ping(timeout=1.0) for name in reply if not name.startswith("metrics@")]
    try:
        # The stack's own worker would run whole transfers inline: it stops taking first steps for a
        # moment, so the transfer's first message (and the steps it runs inline) goes to ours.
        app.control.cancel_consumer(first_queue, destination=others, reply=True)
        confirmed_transfer(stack)
        runs = step_runs(scrape(port))
        assert runs, "the metrics worker ran no step"
        assert all(step in STEPS for step, _ in runs) and all(count >= 1 for count in runs.values())
        text = scrape(port)
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
        value = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}
        assert value[("paratro_database_up", ())] == 1 and value[("paratro_broker_up", ())] == 1
        assert value[("paratro_transfers", (("chain", "ethereum"), ("status", "CONFIRMED")))] >= 1
        assert {s.labels["queue"] for s in samples if s.name == "paratro_queue_depth"} == set(ALL_QUEUES)
        secrets = [stack.env["PARATRO_BROKER_URL"], stack.env["PARATRO_DATABASE_URL"],
                   *json.loads(stack.env["PARATRO_RPC_URLS"]).values()]
        assert not any(secret in text for secret in secrets)
        for sample in samples:  # names and labels: bounded words, never a URL or a host
            assert "://" not in sample.name and not any("://" in v or "127.0.0.1" in v for v in sample.labels.values())
    finally:
        app.control.add_consumer(first_queue, destination=others, reply=True)
        stack.stop_worker("metrics")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the exporter stopped with its worker
        try:
            scrape(port)
        except OSError:
            return
        time.sleep(0.2)
    raise AssertionError("the exporter still answers after its worker stopped")
