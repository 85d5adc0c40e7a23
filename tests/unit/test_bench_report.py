"""The benchmark's summary: percentiles, ratios, the JSON line's keys and the table."""

from __future__ import annotations

import json

import pytest

from bench.report import REQUIRED_KEYS, per_transfer, percentile, ratio, summarize, table


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert percentile(values, 0) == 10.0
    assert percentile(values, 100) == 40.0
    assert percentile(values, 50) == pytest.approx(25.0)
    assert percentile(values, 99) == pytest.approx(39.7)
    assert percentile(list(reversed(values)), 50) == pytest.approx(25.0)  # order of input does not matter
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_ratios_and_per_transfer_costs_refuse_nothing_to_divide_by() -> None:
    assert ratio(12.0, 120.0) == 0.1
    assert ratio(12.0, 0.0) is None and ratio(None, 3.0) is None
    assert per_transfer(1000, 200) == 5.0
    assert per_transfer(5, 0) is None


def _burst(rate: float, transfers: int, sources: int, db: float, redis: float, rpc: float) -> dict:
    return {"transfers_per_s": rate, "transfers": transfers, "sources": sources, "confirmed": transfers, "failed": 0,
            "seconds": transfers / rate, "creation_seconds": 1.0, "broadcast_p50_ms": 900.0, "db_statements": db,
            "redis_commands": redis, "rpc_requests": rpc, "step_ms": {"lock_funds": 53.0},
            "rpc_methods": {"ethereum eth_sendRawTransaction": float(transfers)}}


def test_summary_has_every_key_and_divides_by_the_floor() -> None:
    bursts = {"ethereum": _burst(24.0, 200, 8, 20_000, 12_000, 900), "ethereum/single": _burst(12.0, 200, 1, 22_000, 13_000, 1_000),
              "tron": _burst(6.0, 100, 8, 9_000, 6_000, 700)}
    summary = summarize(120.0, bursts, {"chain": "ethereum", "p50_ms": 80.0, "p99_ms": 190.0, "rate_per_s": 12.0},
                        {"ethereum": 300.0, "tron": None}, {"before": 500.0, "after": 510.0}, "ethereum",
                        extra={"ok": True})
    line = json.loads(json.dumps(summary))  # what `make bench` prints is plain JSON
    assert set(REQUIRED_KEYS) <= set(line)
    assert line["pipeline_transfers_per_s"] == {"ethereum": 24.0, "tron": 6.0}
    assert line["pipeline_over_floor"] == {"ethereum": 0.2, "tron": 0.05}
    assert line["single_source_transfers_per_s"] == {"ethereum": 12.0}
    assert line["pipeline_over_node"] == {"ethereum": 0.08}  # no number for a node that was not measured
    assert (line["p50_ms"], line["p99_ms"]) == (80.0, 190.0)
    assert line["db_queries_per_transfer"] == 100.0  # the primary chain's several-sources burst
    assert line["redis_commands_per_transfer"] == 60.0
    assert line["rpc_calls_per_transfer"] == 4.5
    assert line["rpc_methods_per_transfer"] == {"ethereum eth_sendRawTransaction": 1.0}
    assert line["costs"]["ethereum/single"]["db_queries_per_transfer"] == 110.0
    assert line["worker_rss_mb"] == {"before": 500.0, "after": 510.0}
    assert line["ok"] is True
    shown = table(summary)
    assert "ethereum/single (1 src)" in shown and "tron (8 src)" in shown and "p99 190.0 ms" in shown


def test_summary_without_a_paced_run_says_so() -> None:
    summary = summarize(100.0, {"solana": _burst(5.0, 10, 8, 1000, 700, 40)}, None, {}, {"before": 1.0, "after": 1.0},
                        "solana")
    assert summary["p50_ms"] is None and summary["p99_ms"] is None and summary["paced"] is None
    assert "paced" not in table(summary)
