"""`make spike`'s JSON line and table, from each run's per-transfer facts.

Kept apart from the runs so that which keys come first (the issue's five), and what goes where, is
tested without starting anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.spike_figures import TransferFacts, group_figures

#: The issue's keys, first in the JSON line, in this order.
HEAD_KEYS = ("stuck", "bumped", "p95_inclusion_s", "p95_inclusion_s_without_bumping", "overpaid_fee_pct")
BUMPING, BASELINE = "bumping", "baseline"
STUCK_LISTED = 20  # at most this many stuck transfers named in the JSON line


@dataclass
class RunResult:
    """One run of the scenario: every transfer's facts and what the run itself saw."""

    name: str  # BUMPING or BASELINE
    facts: list[TransferFacts]
    seconds: float = 0.0  # stack up -> figures read
    submit_seconds: float = 0.0  # first submission -> last
    drain_seconds: float = 0.0  # spike end -> every transfer final (or the timeout)
    spike: dict[str, Any] = field(default_factory=dict)  # what the spikes were, in wei and sat/vB

    def families(self) -> list[str]:
        return sorted({f.chain for f in self.facts}, key=lambda chain: (chain != "ethereum", chain))

    def figures(self) -> dict[str, Any]:
        """Overall ("all") and per family."""
        shown = {"all": group_figures(self.facts)}
        shown.update({chain: group_figures([f for f in self.facts if f.chain == chain]) for chain in self.families()})
        return shown


def summarize(runs: Mapping[str, RunResult], seconds: float, scenario: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON line: the issue's five keys first (the bumping run; the baseline's p95), then the
    rest. `ok` when the bumping run left nothing stuck and failed nothing."""
    main = runs[BUMPING].figures()["all"]
    baseline = runs[BASELINE].figures()["all"] if BASELINE in runs else {}
    summary: dict[str, Any] = {
        "stuck": main["stuck"],
        "bumped": main["bumped"],
        "p95_inclusion_s": main["p95_inclusion_s"],
        "p95_inclusion_s_without_bumping": baseline.get("p95_inclusion_s"),
        "overpaid_fee_pct": main["overpaid_fee_pct"],
        "failed": main["failed"],
        "bump_attempts": main["bump_attempts"],
        "runs": {name: {"seconds": round(run.seconds, 1), "submit_seconds": round(run.submit_seconds, 1),
                        "drain_seconds": round(run.drain_seconds, 1), "spike": run.spike, **run.figures()}
                 for name, run in runs.items()},
        "stuck_transfers": {name: _stuck(run.facts) for name, run in runs.items() if any(f.stuck for f in run.facts)},
        "failed_transfers": {name: _failed(run.facts) for name, run in runs.items()
                             if any(f.status == "FAILED" for f in run.facts)},
        "scenario": dict(scenario),
        "seconds": round(seconds, 1),
        "ok": main["stuck"] == 0 and main["failed"] == 0 and main["transfers"] > 0,
    }
    return summary


def _stuck(facts: Sequence[TransferFacts]) -> list[dict[str, Any]]:
    return [{"transaction_id": f.transaction_id, "chain": f.chain, "stage": f.stage, "held": f.held,
             "why": f.failure} for f in facts if f.stuck][:STUCK_LISTED]


def _failed(facts: Sequence[TransferFacts]) -> list[dict[str, Any]]:
    return [{"transaction_id": f.transaction_id, "chain": f.chain, "reason": f.failure}
            for f in facts if f.status == "FAILED"][:STUCK_LISTED]


COLUMNS = (("transfers", "transfers", 9), ("confirmed", "conf", 5), ("failed", "failed", 6), ("stuck", "stuck", 5),
           ("bumped", "bumped", 6), ("bump_attempts", "bumps", 5), ("p50_inclusion_s", "p50 s", 6),
           ("p95_inclusion_s", "p95 s", 6), ("max_inclusion_s", "max s", 6), ("overpaid_fee_pct", "overpaid %", 10))


def table(summary: Mapping[str, Any]) -> str:
    """The readable report printed before the JSON line: family x run, then the headline."""
    scenario = summary.get("scenario", {})
    lines = [f"spike: {scenario.get('evm_transfers')} ETH + {scenario.get('btc_transfers')} BTC transfers over "
             f"{scenario.get('submit_s')} s; {scenario.get('base_fee_multiplier')}x base fee and "
             f"{scenario.get('spike_sat_vb')} sat/vB from t={scenario.get('spike_at_s')} s "
             f"for {scenario.get('spike_s')} s; primary RPC endpoints killed at t={scenario.get('kill_at_s')} s", ""]
    head = f"{'family':9} {'run':9} " + " ".join(f"{title:>{width}}" for _, title, width in COLUMNS)
    lines += [head, "-" * len(head)]
    runs = summary.get("runs", {})
    main = runs.get(BUMPING, {}).get("all", {})
    families = [name for run in runs.values() for name, shown in run.items()
                if isinstance(shown, dict) and "transfers" in shown]
    for family in dict.fromkeys(sorted(families, key=lambda name: name == "all")):
        for name, run in runs.items():
            if family in run:
                figures = run[family]
                lines.append(f"{family:9} {name:9} " + " ".join(f"{_cell(figures.get(key)):>{width}}"
                                                                 for key, _, width in COLUMNS))
    lines += ["", f"stuck {summary['stuck']}, failed {summary['failed']}, bumped {summary['bumped']} "
                  f"({summary['bump_attempts']} bump attempts); p95 inclusion {_cell(summary['p95_inclusion_s'])} s "
                  f"with bumping, {_cell(summary['p95_inclusion_s_without_bumping'])} s without; overpaid "
                  f"{_cell(summary['overpaid_fee_pct'])} % on average (bumped transfers "
                  f"{_cell(main.get('overpaid_fee_pct_bumped'))} %, at most {_cell(main.get('overpaid_fee_pct_max'))} %)",
              f"wall time {summary.get('seconds')} s (" + ", ".join(
                  f"{name} {run.get('seconds')} s" for name, run in runs.items()) + ")"]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)
