"""`make spike`: nothing stuck through a fee spike and a dead RPC endpoint.

The scenario, run twice, each time in its own `workers.stack.EmbeddedStack` (redis-server, anvil
and the Bitcoin devnet with 0.25 s blocks, each reached through two `devnet.rpc_proxy` endpoints,
SQLite, one `paratro worker` with beat, the production sweeper and stall timings of `make bench`):
first with fee bumping, then with `PARATRO_FEE_BUMPING=0` (the baseline: the same scenario, the
transfers left to wait the spike out).

1. funded sources (`bench.pipeline_burst.fund_sources`): `--evm-sources` accounts for the ETH
   transfers and `--btc-sources` wallets with one output per BTC transfer (none waits for change),
   and a short unmeasured warm-up per family;
2. the EVM base fee held at `--base-fee-gwei` (see `bench.spike_scenario` for why);
3. `--evm-transfers` ETH and `--btc-transfers` BTC transfers submitted at a steady pace over
   `--submit-s` seconds (`workers.services.submit_transfer`); at `--spike-at-s` a
   `--base-fee-multiplier` x base-fee spike on anvil (`devnet.gas_spike.GasSpike`) and a
   `--spike-sat-vb` fee-rate spike on the Bitcoin node (`set_min_fee_rate`) begin, lasting
   `--spike-s`; at `--kill-at-s` (midway through the submissions) the primary endpoint of each
   chain dies (`set_mode("dead")`: every request reset);
4. after the spike, up to `--drain-s` seconds for every transfer to be final.

The figures, per run, family and overall (`bench.spike_figures`, read from the database and the
nodes after the drain):
- stuck: transfers not final at the end of the drain, plus any held (`held_at` set); FAILED ones
  are counted apart (`failed`) and named in `failed_transfers` with their reason;
- bumped: transfers with at least one BUMP attempt; bump_attempts: all of them;
- inclusion_s: first send -> the first event into CONFIRMING (or CONFIRMED), i.e. when the
  chain's tracker first saw its landed transaction in a block; p50, p95, max. The first send is
  `broadcast_at`, or the first attempt's `sent_at` when that is earlier (a first send refused as
  underpriced and bumped at once counts from the refused send);
- overpaid_fee_pct: per confirmed transfer (paid - minimum) / minimum of its landed transaction,
  averaged over transfers (exactly, as fractions of integers), in percent.
  EVM: paid = receipt gasUsed x effectiveGasPrice; minimum = gasUsed x (the inclusion block's
  baseFeePerGas + the ORIGINAL attempt's maxPriorityFeePerGas), i.e. what the transfer would have
  paid had it been priced right for that block from the start.
  Bitcoin: paid = `fee_paid`; minimum = vsize of the landed attempt's signed bytes x the rate
  blocks required when it was mined: the spike's rate for a block mined while the spike lasted,
  else the node's normal fee estimate (2 sat/vB; blocks outside a spike take anything above the
  1 sat/vB relay floor, so a transfer at the normal rate counts as not overpaid).

The last stdout line is one JSON object: "stuck", "bumped", "p95_inclusion_s" (bumping run),
"p95_inclusion_s_without_bumping" (baseline), "overpaid_fee_pct" (bumping run) first, then the
details (per run and family, failed counts, stuck transfers by id, durations). Exit 0 when the
bumping run left nothing stuck and nothing failed. Everything started is stopped on the way out,
also on Ctrl-C, SIGTERM and errors.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import run_main, say
from bench.spike_figures import read_facts
from bench.spike_report import BASELINE, BUMPING, RunResult, summarize, table
from bench.spike_scenario import GWEI, Action, FeeSpikes, paced, run_timeline

PROGRESS_EVERY_S = 3.0
WARMUP_TIMEOUT_S = 120.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.spike", description="Transfers through a fee spike and a "
                                     "dead RPC endpoint, with fee bumping and without.")
    parser.add_argument("--evm-transfers", type=int, default=200)
    parser.add_argument("--btc-transfers", type=int, default=50)
    parser.add_argument("--evm-sources", type=int, default=10, help="ETH source accounts")
    parser.add_argument("--btc-sources", type=int, default=5, help="BTC source wallets (one output per transfer)")
    parser.add_argument("--submit-s", type=float, default=10.0, help="submissions spread evenly over this long")
    parser.add_argument("--spike-at-s", type=float, default=2.0,
                        help="the spikes begin this long after the first submission")
    parser.add_argument("--spike-s", type=float, default=20.0, help="and last this long")
    parser.add_argument("--base-fee-multiplier", type=int, default=5)
    parser.add_argument("--base-fee-gwei", type=int, default=10, help="the EVM base fee held before the spike")
    parser.add_argument("--spike-sat-vb", type=int, default=50,
                        help="the Bitcoin blocks' minimum fee rate in the spike")
    parser.add_argument("--kill-at-s", type=float, default=None, help="primary endpoints die then (default: midway "
                        "through the submissions)")
    parser.add_argument("--drain-s", type=float, default=120.0, help="after the spike, wait this long at most for "
                        "every transfer to be final")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured transfers per family before the scenario")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run without fee bumping")
    parser.add_argument("--block-time", type=float, default=0.25)
    parser.add_argument("--concurrency", type=int, default=2, help="prefork processes of the one worker")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the stacks' files here (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    args = parser.parse_args(argv)
    if args.kill_at_s is None:
        args.kill_at_s = args.submit_s / 2
    if args.evm_transfers < 0 or args.btc_transfers < 0 or args.evm_transfers + args.btc_transfers == 0:
        parser.error("--evm-transfers and --btc-transfers: at least one transfer, none negative")
    if args.evm_sources < 1 or args.btc_sources < 1 or args.base_fee_multiplier < 1 or args.base_fee_gwei < 1:
        parser.error("sources, --base-fee-multiplier and --base-fee-gwei must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_main(parse_args(argv), run, table, "paratro-spike-")


def run(args: argparse.Namespace, workdir: Path, cleanup: ExitStack) -> dict[str, Any]:
    started = time.monotonic()
    runs = {BUMPING: run_once(args, workdir / BUMPING, bumping=True)}
    if not args.no_baseline:
        runs[BASELINE] = run_once(args, workdir / BASELINE, bumping=False)
    seconds = time.monotonic() - started
    say(f"done in {seconds:.1f} s")
    return summarize(runs, seconds, scenario(args))


def scenario(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("evm_transfers", "btc_transfers", "evm_sources", "btc_sources", "submit_s", "spike_at_s", "spike_s",
            "base_fee_multiplier", "base_fee_gwei", "spike_sat_vb", "kill_at_s", "drain_s", "block_time", "concurrency")
    return {key: getattr(args, key) for key in keys} | {"database": "sqlite", "rpc_endpoints_per_chain": 2}


def chains(args: argparse.Namespace) -> dict[str, int]:
    """chain -> transfers of the scenario (families with none are left out)."""
    counts = (("ethereum", args.evm_transfers), ("bitcoin", args.btc_transfers))
    return {chain: count for chain, count in counts if count}


def run_once(args: argparse.Namespace, workdir: Path, bumping: bool) -> RunResult:
    """One run of the scenario in its own stack, stopped (spikes ended first) before returning."""
    from bench.run import BENCH_ENV
    from workers.stack import EmbeddedStack, StackOptions

    name = BUMPING if bumping else BASELINE
    started = time.monotonic()
    say(f"{name}: starting redis-server, {' and '.join(chains(args))} devnets ({args.block_time} s blocks) behind 2 "
        f"RPC proxies each, SQLite, one worker of {args.concurrency} processes; "
        f"fee bumping {'on' if bumping else 'OFF'}")
    with ExitStack() as scope:
        stack = scope.enter_context(EmbeddedStack(StackOptions(
            workdir=workdir, chains=tuple(chains(args)), block_time=args.block_time, concurrency=args.concurrency,
            beat=True, rpc_proxies=2, extra_env={**BENCH_ENV, "PARATRO_FEE_BUMPING": "1" if bumping else "0"})))
        say(f"{name}: stack up in {time.monotonic() - started:.1f} s; funding sources")
        result = scenario_in(args, stack, scope, name)
        result.seconds = time.monotonic() - started
        if sum(stack.restarts.values()):
            say(f"{name}: the worker process was started again {sum(stack.restarts.values())} time(s) "
                f"(see {workdir}/worker-w1.log)")
    return result


def scenario_in(args: argparse.Namespace, stack: Any, scope: ExitStack, name: str) -> RunResult:
    """Fund, warm up, hold the base fee, run the timeline, drain, read every transfer's facts."""
    from workers import runtime

    ctx = runtime.context()
    families = {chain: fund(args, ctx, stack, chain, count) for chain, count in chains(args).items()}
    warm_up(args, ctx, families, name)
    evm_url = stack.nodes["ethereum"].rpc_url if "ethereum" in families else None
    spikes = FeeSpikes(evm_url, stack.nodes.get("bitcoin"), args.base_fee_multiplier, args.spike_sat_vb)
    scope.callback(spikes.stop)  # before the stack stops (last in, first out)
    spikes.steady(args.base_fee_gwei * GWEI)
    submitter = Submitter(ctx)
    requests = {chain: family.requests(ctx, chains(args)[chain], name) for chain, family in families.items()}
    timeline = submissions(submitter, requests, args.submit_s) + events(args, stack, spikes, submitter.ids, ctx, name)
    run_timeline(timeline, say)
    drained = drain(args, ctx, submitter.ids, name)
    return RunResult(name, read_facts(ctx, submitter.ids, evm_url, spikes.window()), submit_seconds=submitter.seconds,
                     drain_seconds=drained, spike=spike_figures(spikes))


@dataclass(frozen=True)
class Family:
    """One chain's client and funded source accounts."""

    plan: Any  # bench.pipeline_burst.FamilyPlan
    client_id: str
    sources: list[Any]

    def requests(self, ctx: Any, count: int, name: str) -> list[Any]:
        from bench.pipeline_burst import transfer_requests

        return transfer_requests(ctx, self.client_id, self.plan, self.sources, count, f"spike-{name}-{self.plan.chain}")


def fund(args: argparse.Namespace, ctx: Any, stack: Any, chain: str, count: int) -> Family:
    """A client and its sources, funded for `count` transfers plus the warm-up, spread evenly (Bitcoin:
    one output per transfer, `bench.pipeline_burst.PLANS`)."""
    from bench.pipeline_burst import PLANS, fund_sources, new_client

    plan = PLANS[chain]
    n = args.evm_sources if chain == "ethereum" else args.btc_sources
    client_id = new_client(ctx, f"spike {chain}")
    each = [math.ceil((count + args.warmup) / n)] * n
    return Family(plan, client_id, fund_sources(ctx, stack.nodes[chain], client_id, plan, each))


def warm_up(args: argparse.Namespace, ctx: Any, families: dict[str, Family], name: str) -> None:
    """A few transfers per family before anything is measured: a worker's first use of a chain is not its pace."""
    from bench import counters
    from bench.pipeline_burst import run_burst

    for chain, family in families.items():
        if args.warmup > 0:
            warm = run_burst(ctx, family.client_id, family.plan, family.sources, args.warmup,
                             f"spike-{name}-{chain}-warmup", counters.Sample, say, WARMUP_TIMEOUT_S)
            if not warm.complete:
                say(f"{name}: {chain} warm-up ended {dict(warm.statuses)}")


class Submitter:
    """Submits transfers as the API's service layer does, keeping their ids and when it began and ended."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.ids: list[str] = []
        self.first: float | None = None
        self.last: float | None = None

    def submit(self, request: Any) -> None:
        from workers.services import submit_transfer

        self.first = self.first or time.monotonic()
        self.ids.append(submit_transfer(self.ctx, request).transaction_id)
        self.last = time.monotonic()

    @property
    def seconds(self) -> float:
        return 0.0 if self.first is None or self.last is None else self.last - self.first


def submissions(submitter: Submitter, requests: dict[str, list[Any]], over_s: float) -> list[Action]:
    """Each family's transfers evenly over `over_s`, the families interleaved."""
    return [Action(at, "", lambda r=request: submitter.submit(r))
            for group in requests.values() for at, request in zip(paced(len(group), over_s), group)]


def events(args: argparse.Namespace, stack: Any, spikes: FeeSpikes, ids: list[str], ctx: Any,
           name: str) -> list[Action]:
    """The spikes' start and end, the primary endpoints' death, progress every few seconds."""
    def kill() -> None:
        for proxies in stack.proxies.values():
            proxies[0].set_mode("dead")

    end = args.spike_at_s + args.spike_s
    actions = [Action(args.spike_at_s, f"{name}: spikes begin ({args.base_fee_multiplier}x base fee, "
                                       f"{args.spike_sat_vb} sat/vB)", spikes.start),
               Action(end, f"{name}: spikes end", spikes.stop),
               Action(args.kill_at_s, f"{name}: the primary RPC endpoint of each chain is dead", kill)]
    ticks = int(max(end, args.submit_s) // PROGRESS_EVERY_S)
    actions += [Action(PROGRESS_EVERY_S * (i + 1), "", lambda: progress(ctx, ids, name)) for i in range(ticks)]
    return actions


def progress(ctx: Any, ids: list[str], name: str) -> None:
    from sqlalchemy import func, select

    from pipeline.models import Transaction

    submitted = list(ids)
    with ctx.db.reading() as session:
        stages: Counter[str] = Counter({stage: n for stage, n in session.execute(
            select(Transaction.stage, func.count()).where(Transaction.transaction_id.in_(submitted))
            .group_by(Transaction.stage))})
    shown = ", ".join(f"{stage} {n}" for stage, n in sorted(stages.items()))
    say(f"{name}: {len(submitted)} submitted ({shown})")


def spike_figures(spikes: FeeSpikes) -> dict[str, Any]:
    window = spikes.window()
    return {"evm_base_fee_wei": spikes.normal_wei, "evm_spike_base_fee_wei": spikes.spike_wei,
            "btc_spike_sat_vb": spikes.sat_vb if window else None,
            "btc_spike_heights": None if window is None else [window.first_after, window.last]}


def drain(args: argparse.Namespace, ctx: Any, ids: list[str], name: str) -> float:
    """Wait for every transfer to be final, `--drain-s` at most; the seconds it took."""
    from bench.pipeline_burst import wait_final

    started = time.monotonic()
    stages = wait_final(ctx, ids, args.drain_s, say, name)
    seconds = time.monotonic() - started
    final = stages.get("CONFIRMED", 0) + stages.get("FAILED", 0)
    say(f"{name}: {stages.get('CONFIRMED', 0)} confirmed, {stages.get('FAILED', 0)} failed, {len(ids) - final} "
        f"not final {seconds:.1f} s after the spikes ended")
    return seconds


if __name__ == "__main__":
    raise SystemExit(main())
