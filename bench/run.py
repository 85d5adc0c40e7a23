"""`make bench`: one run, one embedded stack, every number of the issue's benchmark.

The stack is `workers.stack.EmbeddedStack` (redis-server, a devnet node per family with 0.25 s
blocks, SQLite, ONE `paratro worker` of 2 prefork processes with beat, its exporter on a free
port) with the production timing settings (sweeper every 30 s, stall grace 120 s), not the
demo's short test deadlines. In order:

1. the floor (`bench.floor`): bare 6-task Celery chains on the same redis-server, its own worker
   of 2 prefork processes, started and stopped around the measurement while the pipeline's worker
   is stopped (neither competes with the other for the two cores);
2. each devnet node alone (`bench.nodes`): pre-signed transfers accepted per second;
3. per family, a burst from several source accounts and one from a single account
   (`bench.pipeline_burst`), with the worker's DB statements, RPC requests and step times
   (its exporter) and Redis's commands (INFO commandstats) over each burst;
4. a paced run of the first family at half its burst rate: creation -> broadcast p50/p99;
5. the worker processes' resident memory before the bursts and after everything.

Everything started is stopped on the way out, also on Ctrl-C, SIGTERM and errors.
"""

from __future__ import annotations

import argparse
import math
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import counters
from bench.report import run_main, say, summarize, table

FAMILIES = ("ethereum", "tron", "bitcoin", "solana")
#: Per-family burst sizes that keep `make bench` within its budget on 2 cores (EVM: --transfers).
DEFAULT_OTHER_TRANSFERS = {"tron": 200, "bitcoin": 100, "solana": 200}
WARMUP_TRANSFERS = 4  # per family, before anything is measured: the worker's first use of a chain is not its pace
BENCH_ENV = {
    "PARATRO_SWEEP_INTERVAL_S": "30",  # production defaults, not the embedded stack's test deadlines
    "PARATRO_STALL_AFTER_S": "120",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="The pipeline against a bare Celery chain.")
    parser.add_argument("--transfers", type=int, default=400, help="EVM burst size (each burst: several sources, then one)")
    parser.add_argument("--other-transfers", type=int, default=None,
                        help="burst size for tron, bitcoin and solana (default: 200, 100, 200)")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated chains, the first is primary")
    parser.add_argument("--sources", type=int, default=8, help="source accounts of the several-sources burst")
    parser.add_argument("--floor-chains", type=int, default=1000)
    parser.add_argument("--node-transfers", type=int, default=None, help="per node alone (default: the burst size)")
    parser.add_argument("--paced-transfers", type=int, default=100, help="paced run of the primary family (0: skip)")
    parser.add_argument("--warmup", type=int, default=WARMUP_TRANSFERS, help="unmeasured transfers per family first")
    parser.add_argument("--block-time", type=float, default=0.25)
    parser.add_argument("--concurrency", type=int, default=2, help="prefork processes of the one worker (and the floor's)")
    parser.add_argument("--phase-timeout", type=float, default=240.0, help="seconds a burst may take before giving up")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the stack's files here (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    args = parser.parse_args(argv)
    args.families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    unknown = set(args.families) - set(FAMILIES)
    if unknown or not args.families:
        parser.error(f"--families: choose among {', '.join(FAMILIES)}")
    return args


def transfers_for(args: argparse.Namespace, chain: str) -> int:
    if chain == "ethereum":
        return args.transfers
    return args.other_transfers if args.other_transfers is not None else DEFAULT_OTHER_TRANSFERS[chain]


def main(argv: list[str] | None = None) -> int:
    return run_main(parse_args(argv), run, table, "paratro-bench-")


def run(args: argparse.Namespace, workdir: Path, cleanup: ExitStack) -> dict[str, Any]:
    from devnet.ports import free_port
    from workers import runtime
    from workers.stack import EmbeddedStack, StackOptions

    started = time.monotonic()
    metrics_port = free_port()
    say(f"starting redis-server, devnets for {', '.join(args.families)} ({args.block_time} s blocks), SQLite and "
        f"one worker of {args.concurrency} prefork processes in {workdir}")
    stack = cleanup.enter_context(EmbeddedStack(StackOptions(
        workdir=workdir, chains=args.families, block_time=args.block_time, concurrency=args.concurrency, beat=True,
        extra_env={**BENCH_ENV, "PARATRO_METRICS_PORT": str(metrics_port)})))
    broker_url = stack.env["PARATRO_BROKER_URL"]
    say(f"stack up in {time.monotonic() - started:.1f} s")
    ctx = runtime.context()

    def measure() -> counters.Sample:
        return counters.sample(metrics_port, broker_url)

    def rss() -> float:
        return counters.tree_rss_mb(p.pid for p in stack.workers.values() if p.pid is not None)

    from bench.floor import run_floor

    # The floor runs alone: the pipeline's worker (and its beat) is stopped meanwhile, then started again.
    stack.stop_worker("w1")
    floor = run_floor(broker_url, workdir, args.floor_chains, say, concurrency=args.concurrency)
    stack.start_worker("w1", args.concurrency, beat=True)
    say(f"floor: {floor.chains_per_s:.1f} chains/s ({floor.chains} in {floor.seconds:.2f} s)")

    nodes = measure_nodes(args, ctx, stack)
    families = {chain: setup_family(args, ctx, stack, chain) for chain in args.families}
    say(f"warming the worker up: {args.warmup} transfers per family (imports, connections, first blocks)")
    for chain, family in families.items():
        if args.warmup <= 0:
            break
        warm = family.run(ctx, family.sources, args.warmup, f"bench-{chain}-warmup", counters.Sample, args)
        if not warm.complete:
            say(f"{chain}: warm-up ended {dict(warm.statuses)}")
    rss_before = rss()
    bursts: dict[str, dict[str, Any]] = {}
    for chain, family in families.items():
        for name, group in ((chain, family.sources), (f"{chain}/single", family.single)):
            count = transfers_for(args, chain)
            say(f"{name}: burst of {count} {family.plan.symbol} transfers from {len(group)} source account(s)")
            result = family.run(ctx, group, count, f"bench-{name.replace('/', '-')}", measure, args)
            bursts[name] = burst_figures(result)
            say(f"{name}: {result.confirmed}/{count} confirmed in {result.seconds:.2f} s = {result.transfers_per_s:.2f}/s "
                f"(submitting took {result.creation_seconds:.2f} s)"
                + ("" if result.complete else f"; NOT all confirmed: {dict(result.statuses)}"))
    paced = None
    primary = args.families[0]
    if args.paced_transfers > 0 and bursts[primary]["transfers_per_s"] > 0:
        paced = paced_run(args, ctx, families[primary], bursts[primary]["transfers_per_s"] / 2)
    rss_after = rss()
    complete = all(b["confirmed"] == b["transfers"] for b in bursts.values()) and (paced is None or paced["complete"])
    return summarize(floor.chains_per_s, bursts, paced, nodes, {"before": rss_before, "after": rss_after}, primary,
                     extra={"floor": {"chains": floor.chains, "seconds": round(floor.seconds, 2)},
                            "block_time_s": args.block_time, "worker_processes": args.concurrency,
                            "database": "sqlite", "seconds": round(time.monotonic() - started, 1), "ok": complete})


def measure_nodes(args: argparse.Namespace, ctx: Any, stack: Any) -> dict[str, float | None]:
    from bench.nodes import node_acceptance

    accepted: dict[str, float | None] = {}
    for chain in args.families:
        count = args.node_transfers or transfers_for(args, chain)
        say(f"{chain} node alone: pre-signing {count} transfers")
        try:
            result = node_acceptance(ctx, stack.nodes[chain], chain, count)
        except Exception as exc:  # noqa: BLE001 - one node's trouble must not cost the whole run
            say(f"{chain} node alone: failed: {type(exc).__name__}: {str(exc)[:200]}")
            accepted[chain] = None
            continue
        say(f"{chain} node alone: {result.accepted}/{result.sent} accepted in {result.seconds:.2f} s "
            f"({result.accepted_per_s:.1f}/s)" + (f"; first refusal: {result.first_error}" if result.first_error else ""))
        accepted[chain] = result.accepted_per_s
    return accepted


@dataclass
class Family:
    """One chain family's client and funded source accounts."""

    chain: str
    plan: Any
    client_id: str
    sources: list[Any]  # several accounts
    single: list[Any]  # one account

    def run(self, ctx: Any, group: list[Any], count: int, label: str, measure: Any, args: argparse.Namespace) -> Any:
        from bench.pipeline_burst import run_burst

        return run_burst(ctx, self.client_id, self.plan, group, count, label, measure, say, args.phase_timeout)


def setup_family(args: argparse.Namespace, ctx: Any, stack: Any, chain: str) -> Family:
    """A client, `--sources` accounts funded for the warm-up, the burst and (primary family) the
    paced run, and one account funded for the single-source burst."""
    from bench.pipeline_burst import PLANS, fund_sources, new_client

    plan, count = PLANS[chain], transfers_for(args, chain)
    client_id = new_client(ctx, f"bench {chain}")
    paced = args.paced_transfers if chain == args.families[0] else 0
    per_source = math.ceil((count + paced + args.warmup) / args.sources)
    say(f"{chain}: funding {args.sources} source accounts and a single one")
    sources = fund_sources(ctx, stack.nodes[chain], client_id, plan, [per_source] * args.sources)
    single = fund_sources(ctx, stack.nodes[chain], client_id, plan, [count])
    return Family(chain, plan, client_id, sources, single)


def burst_figures(result: Any) -> dict[str, Any]:
    from bench.report import percentile

    costs = result.costs
    step_ms = {step: round(1000 * costs.step_seconds.get(step, 0.0) / runs, 1)
               for step, runs in sorted(costs.step_runs.items(), key=lambda kv: _step_order(kv[0])) if runs > 0}
    p50 = percentile(result.broadcast_ms, 50)
    return {
        "transfers": result.transfers, "sources": result.sources, "confirmed": result.confirmed,
        "failed": result.statuses.get("FAILED", 0), "seconds": round(result.seconds, 2),
        "creation_seconds": round(result.creation_seconds, 2), "transfers_per_s": result.transfers_per_s,
        "broadcast_p50_ms": None if p50 is None else round(p50, 1),
        "db_statements": costs.db_statements, "redis_commands": costs.redis_commands,
        "rpc_requests": costs.rpc_total, "step_ms": step_ms,
        "rpc_methods": {k: v for k, v in sorted(costs.rpc_requests.items(), key=lambda kv: -kv[1])},
    }


def _step_order(step: str) -> int:
    from pipeline.stages import STEPS

    return STEPS.index(step) if step in STEPS else len(STEPS)


def paced_run(args: argparse.Namespace, ctx: Any, family: Family, rate: float) -> dict[str, Any]:
    from bench.pipeline_burst import latency_summary, run_paced

    say(f"{family.chain} paced: {args.paced_transfers} transfers at {rate:.2f}/s (half the burst's rate)")
    result = run_paced(ctx, family.client_id, family.plan, family.sources, args.paced_transfers, rate,
                       f"bench-{family.chain}-paced", say, args.phase_timeout)
    latency = latency_summary(result)
    say(f"{family.chain} paced: creation -> broadcast p50 {latency['p50_ms']} ms, p99 {latency['p99_ms']} ms")
    return {"chain": family.chain, "transfers": result.transfers, "confirmed": result.confirmed,
            "rate_per_s": round(rate, 2), "complete": result.complete, **latency}
