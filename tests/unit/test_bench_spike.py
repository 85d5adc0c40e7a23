"""`make spike`'s figures and JSON line, without a stack: what counts as stuck, when a transfer was
included, which Bitcoin blocks were mined under the spike, and the exact overpaid percentage."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from fractions import Fraction

import pytest

from bench.spike import chains, parse_args
from bench.spike_figures import (
    SpikeWindow,
    TransferFacts,
    evm_minimum,
    group_figures,
    inclusion_seconds,
    mean_overpaid_pct,
    original_tip,
    overpaid_fraction,
)
from bench.spike_report import HEAD_KEYS, RunResult, summarize, table
from bench.spike_scenario import paced

T0 = datetime(2026, 1, 1, 12, 0, 0)


def facts(tx_id: str = "tx_1", chain: str = "ethereum", status: str = "CONFIRMED", held: bool = False, bumps: int = 0,
          inclusion: float | None = 1.0, paid: int | None = 100, minimum: int | None = 100) -> TransferFacts:
    return TransferFacts(tx_id, chain, status, status, held, bumps, inclusion, paid, minimum)


def test_inclusion_counts_from_the_first_send_to_the_first_confirming_event_else_confirmed():
    sent = T0
    events = [("CONFIRMED", T0 + timedelta(seconds=9)), ("CONFIRMING", T0 + timedelta(seconds=4)),
              ("CONFIRMING", T0 + timedelta(seconds=6))]  # a reorg sent it back, then seen again
    assert inclusion_seconds(sent, events) == 4.0
    assert inclusion_seconds(sent, [("CONFIRMED", T0 + timedelta(seconds=2.5))]) == 2.5  # seen at depth at once
    assert inclusion_seconds(sent, []) is None
    assert inclusion_seconds(None, events) is None  # never sent


def test_blocks_at_the_edges_of_the_bitcoin_spike_count_as_normal():
    window = SpikeWindow(first_after=100, last=120, spike_sat_vb=50, normal_sat_vb=2)
    assert [window.required_sat_vb(h) for h in (100, 101, 120, 121)] == [2, 50, 50, 2]
    assert SpikeWindow(100, None, 50, 2).required_sat_vb(10_000) == 50  # not ended yet


def test_overpaid_is_exact_on_integers_and_averaged_over_transfers():
    # EVM: a bump to a 1.2 gwei tip included at a 50 gwei base fee; the original tip was 1 gwei
    gas, base = 21_000, 50 * 10**9
    minimum = evm_minimum(gas, base, original_tip(json.dumps({"params": {"maxPriorityFeePerGas": 10**9}})))
    paid = gas * (base + 12 * 10**8)
    assert overpaid_fraction(paid, minimum) == Fraction(2, 510)
    # a Bitcoin replacement at 50 sat/vB mined after the spike (normal: 2 sat/vB) paid 25x the minimum
    group = [facts(paid=paid, minimum=minimum), facts(chain="bitcoin", paid=141 * 50, minimum=141 * 2),
             facts(status="PENDING", paid=None, minimum=None)]
    assert mean_overpaid_pct(group) == round(float((Fraction(2, 510) + 24) * 100 / 2), 2)
    assert mean_overpaid_pct([facts(paid=None, minimum=None)]) is None
    assert original_tip(json.dumps({"params": {"gasPrice": 5}})) == 0  # legacy: no tip field
    with pytest.raises(ValueError):
        overpaid_fraction(1, 0)


def test_stuck_counts_transfers_not_final_and_held_ones_and_failed_apart():
    group = [facts("a", bumps=2, inclusion=3.0), facts("b", status="PENDING", inclusion=None),
             facts("c", status="CONFIRMED", held=True), facts("d", status="FAILED", inclusion=None), facts("e")]
    figures = group_figures(group)
    counted = ("transfers", "confirmed", "failed", "stuck", "held")
    assert tuple(figures[key] for key in counted) == (5, 3, 1, 2, 1)
    assert (figures["bumped"], figures["bump_attempts"], figures["included"]) == (1, 2, 3)
    assert (figures["p50_inclusion_s"], figures["max_inclusion_s"]) == (1.0, 3.0)


def test_the_json_line_starts_with_the_issue_keys_and_is_ok_only_with_nothing_stuck_or_failed():
    bumping = RunResult("bumping", [facts("a", bumps=1, inclusion=2.0), facts("b", chain="bitcoin")])
    baseline = RunResult("baseline", [facts("a", inclusion=30.0), facts("b", chain="bitcoin", status="PENDING",
                                                                        inclusion=None)])
    summary = summarize({"bumping": bumping, "baseline": baseline}, 99.0, {"evm_transfers": 1, "btc_transfers": 1})
    assert tuple(summary)[:5] == HEAD_KEYS
    assert (summary["stuck"], summary["bumped"], summary["p95_inclusion_s_without_bumping"]) == (0, 1, 30.0)
    assert summary["ok"] is True
    assert summary["stuck_transfers"]["baseline"][0]["transaction_id"] == "b"  # the baseline's are reported, not judged
    assert summary["runs"]["bumping"]["bitcoin"]["transfers"] == 1
    assert "ethereum  bumping" in table(summary) and "all       baseline" in table(summary)
    failed = RunResult("bumping", [facts("a", status="FAILED", inclusion=None)])
    assert summarize({"bumping": failed}, 1.0, {})["ok"] is False


def test_arguments_default_to_the_issue_scenario():
    args = parse_args([])
    assert (args.evm_transfers, args.btc_transfers, args.spike_s, args.base_fee_multiplier) == (200, 50, 20.0, 5)
    assert args.kill_at_s == args.submit_s / 2  # midway through the submissions
    assert chains(parse_args(["--btc-transfers", "0"])) == {"ethereum": 200}
    assert paced(4, 2.0) == [0.0, 0.5, 1.0, 1.5]
