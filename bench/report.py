"""The benchmark's numbers as a table and one JSON line, and the small maths they need.

Kept apart from the runs so that the summary (which keys, which ratios, how percentiles are taken)
is tested without starting anything.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

#: Keys every `make bench` JSON line carries (tests and the README rely on them).
REQUIRED_KEYS = ("floor_chains_per_s", "pipeline_transfers_per_s", "pipeline_over_floor", "p50_ms", "p99_ms",
                 "db_queries_per_transfer", "redis_commands_per_transfer", "rpc_calls_per_transfer", "worker_rss_mb")


def run_main(args: Any, run: Callable[[Any, Path, ExitStack], dict[str, Any]], render: Callable[[Any], str],
             prefix: str) -> int:
    """A benchmark's main: stop everything it started on any exit (SIGTERM unwinds too), print the
    table unless --json, then the JSON line; exit 0 only if the run says ok."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: every `with` below stops what it started
    with ExitStack() as cleanup:
        workdir = args.workdir or Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
        summary = run(args, workdir, cleanup)
    if not args.json:
        print(render(summary))
    print(json.dumps(summary, separators=(",", ":")), flush=True)
    return 0 if summary["ok"] else 1


def say(message: str) -> None:
    """Progress, on stderr (stdout holds the table and the JSON line)."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between closest ranks (numpy's
    default); None for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0-100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)


def per_transfer(total: float | None, transfers: int, digits: int = 1) -> float | None:
    return None if total is None or transfers <= 0 else round(total / transfers, digits)


def summarize(floor_chains_per_s: float, bursts: Mapping[str, Mapping[str, Any]], paced: Mapping[str, Any] | None,
              nodes: Mapping[str, float | None], rss: Mapping[str, float], primary: str = "ethereum",
              extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON line. `bursts` maps "<chain>" (several sources) and "<chain>/single" (one source)
    to a burst's figures: transfers_per_s, transfers, confirmed, seconds, db_statements,
    redis_commands, rpc_requests, step_ms. The top-level costs are the primary chain's
    several-sources burst; every burst's costs are under `costs`."""
    multi = {k: v for k, v in bursts.items() if "/" not in k}
    single = {k.split("/", 1)[0]: v for k, v in bursts.items() if k.endswith("/single")}
    head = multi.get(primary) or next(iter(multi.values()), {})
    summary: dict[str, Any] = {
        "floor_chains_per_s": round(floor_chains_per_s, 1),
        "pipeline_transfers_per_s": {chain: round(b["transfers_per_s"], 2) for chain, b in multi.items()},
        "pipeline_over_floor": {chain: ratio(b["transfers_per_s"], floor_chains_per_s) for chain, b in multi.items()},
        "single_source_transfers_per_s": {chain: round(b["transfers_per_s"], 2) for chain, b in single.items()},
        "single_source_over_floor": {chain: ratio(b["transfers_per_s"], floor_chains_per_s) for chain, b in single.items()},
        "node_accepted_per_s": {chain: None if v is None else round(v, 1) for chain, v in nodes.items()},
        "pipeline_over_node": {chain: ratio(multi[chain]["transfers_per_s"], nodes.get(chain))
                               for chain in multi if nodes.get(chain)},
        "p50_ms": paced.get("p50_ms") if paced else None,
        "p99_ms": paced.get("p99_ms") if paced else None,
        "paced": dict(paced) if paced else None,
        "db_queries_per_transfer": per_transfer(head.get("db_statements"), head.get("transfers", 0)),
        "redis_commands_per_transfer": per_transfer(head.get("redis_commands"), head.get("transfers", 0)),
        "rpc_calls_per_transfer": per_transfer(head.get("rpc_requests"), head.get("transfers", 0), 2),
        "step_ms": head.get("step_ms", {}),
        "rpc_methods_per_transfer": {method: per_transfer(n, head.get("transfers", 0), 2)
                                     for method, n in head.get("rpc_methods", {}).items()},
        "worker_rss_mb": dict(rss),
        "costs": {name: {"db_queries_per_transfer": per_transfer(b.get("db_statements"), b.get("transfers", 0)),
                         "redis_commands_per_transfer": per_transfer(b.get("redis_commands"), b.get("transfers", 0)),
                         "rpc_calls_per_transfer": per_transfer(b.get("rpc_requests"), b.get("transfers", 0), 2)}
                  for name, b in bursts.items()},
        "bursts": {name: {k: b[k] for k in ("transfers", "sources", "confirmed", "failed", "seconds",
                                               "creation_seconds", "broadcast_p50_ms") if k in b}
                   for name, b in bursts.items()},
    }
    summary.update(extra or {})
    return summary


def table(summary: Mapping[str, Any]) -> str:
    """The readable report printed before the JSON line."""
    floor = summary["floor_chains_per_s"]
    lines = [f"floor: {floor} bare 6-task chains/s (1 worker, 2 prefork processes)", ""]
    head = (f"{'burst':24} {'transfers':>9} {'conf':>5} {'tx/s':>7} {'x floor':>7} {'node tx/s':>9} "
            f"{'db/tx':>6} {'redis/tx':>8} {'rpc/tx':>6} {'bcast p50 ms':>12}")
    lines += [head, "-" * len(head)]
    nodes = summary.get("node_accepted_per_s", {})
    for name, burst in summary.get("bursts", {}).items():
        chain = name.split("/", 1)[0]
        single = name.endswith("/single")
        rate = (summary["single_source_transfers_per_s"] if single else summary["pipeline_transfers_per_s"]).get(chain)
        over = (summary["single_source_over_floor"] if single else summary["pipeline_over_floor"]).get(chain)
        costs = summary.get("costs", {}).get(name, {})
        shown = f"{name} ({1 if single else burst.get('sources')} src)"
        lines.append(f"{shown:24} "
                     f"{burst.get('transfers', 0):>9} {burst.get('confirmed', 0):>5} {_num(rate):>7} {_num(over):>7} "
                     f"{_num(nodes.get(chain)):>9} {_num(costs.get('db_queries_per_transfer')):>6} "
                     f"{_num(costs.get('redis_commands_per_transfer')):>8} {_num(costs.get('rpc_calls_per_transfer')):>6} "
                     f"{_num(burst.get('broadcast_p50_ms')):>12}")
    paced = summary.get("paced") or {}
    if paced:
        lines += ["", f"paced {paced.get('chain')}: {paced.get('transfers')} transfers at {paced.get('rate_per_s')}/s "
                      f"(half the burst's): creation -> broadcast p50 {summary.get('p50_ms')} ms, "
                      f"p99 {summary.get('p99_ms')} ms"]
    steps = summary.get("step_ms") or {}
    if steps:
        lines += ["", "worker time per step run (mean ms, primary burst): "
                  + ", ".join(f"{step} {ms}" for step, ms in steps.items())]
    rss = summary.get("worker_rss_mb", {})
    lines += [f"worker RSS: {rss.get('before')} MiB before, {rss.get('after')} MiB after"]
    return "\n".join(lines)


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.1f}"
