"""`make bench` in a tiny mode: the real stack, floor, node, bursts and paced run end to end, and a
JSON line with every key the issue asks for (the numbers themselves are not judged here).

`make spike` is not run here: CI runs it whole after `make chaos` (.ci/run), and it exits non-zero
unless nothing is stuck or failed; its figures are unit-tested in tests/unit/test_bench_spike.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.report import REQUIRED_KEYS

ROOT = Path(__file__).resolve().parents[2]


def test_bench_tiny_run_prints_the_json_line(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "bench", "--families", "ethereum", "--transfers", "6", "--sources", "2",
            "--floor-chains", "10", "--paced-transfers", "4", "--warmup", "2", "--json", "--workdir", str(tmp_path)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout  # --json: stdout is the JSON line only, progress went to stderr
    summary = json.loads(lines[0])
    assert set(REQUIRED_KEYS) <= set(summary)
    assert summary["ok"] is True
    assert summary["floor_chains_per_s"] > 0
    assert summary["pipeline_transfers_per_s"]["ethereum"] > 0
    assert summary["single_source_transfers_per_s"]["ethereum"] > 0
    assert 0 < summary["pipeline_over_floor"]["ethereum"]
    assert summary["node_accepted_per_s"]["ethereum"] > 0
    assert 0 < summary["p50_ms"] <= summary["p99_ms"]
    # the counters come from the worker processes: every transfer runs statements and node requests
    assert summary["db_queries_per_transfer"] > 10
    assert summary["redis_commands_per_transfer"] > 5
    assert summary["rpc_calls_per_transfer"] >= 1
    assert any(method.startswith("ethereum eth_sendRawTransaction") for method in summary["rpc_methods_per_transfer"])
    assert summary["worker_rss_mb"]["before"] > 50 and summary["worker_rss_mb"]["after"] > 50
    assert "bench: floor" in done.stderr
    tracebacks = {p.name: p.read_text(errors="replace") for p in tmp_path.glob("*.log")}
    tracebacks = {name: text[text.index("Traceback"):][:3000] for name, text in tracebacks.items() if "Traceback" in text}
    assert not tracebacks, tracebacks

