"""`make bench-scale`: horizontal scale on PostgreSQL, shown on this machine.

One embedded stack (redis-server, anvil with 0.25 s blocks, a throwaway PostgreSQL cluster), then:

1. the same EVM burst (N transfers from 8 source accounts) with the worker processes arranged as
   - one worker of 1, 2 and 4 prefork processes (`--processes 1,2,4`), and
   - split by queue group as in docker-compose.yml: prepare (resolve_source, validate_destination,
     lock_funds) x1, sign (request_signature; keys and webhooks ride along) x1, chain (broadcast,
     confirm, the tracker and the sweeper queue, beat) x2: four processes like the largest single
     worker, without inline hand-offs between groups;
   with, per row: throughput, machine CPU busy % and the CPU seconds per transfer of the workers,
   PostgreSQL, anvil and Redis (which one saturates first), and backends waiting on a lock;
2. `--one-asset` (1,000) transfers at once from ONE asset funded for `--funding-ratio` of them
   (default 0.9, so the ledger must refuse the rest): throughput, the asset sampled throughout
   (never a negative available or locked balance), at the end the ledger equal to the chain with
   nothing locked, and no deadlock: PostgreSQL's own deadlock counter and every worker and server
   log searched for "deadlock";
3. `--soak N`: N transfers in waves through one worker of 2 processes, its resident memory after a
   warm-up and after every wave (the issue's target: within 10% over 10,000 transfers).

A table, then one JSON line. Everything started is stopped on the way out (Ctrl-C and errors too).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import counters
from bench.pipeline_burst import PLANS, fund_sources, new_client, run_burst, transfer_requests, wait_final
from bench.report import run_main, say

CHAIN = "ethereum"
WARMUP = 4
SAMPLE_EVERY_S = 0.25
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SCALE_ENV = {"PARATRO_SWEEP_INTERVAL_S": "30", "PARATRO_STALL_AFTER_S": "120"}  # production defaults


@dataclass(frozen=True)
class WorkerGroup:
    name: str
    concurrency: int
    queues: tuple[str, ...] | None  # None: every queue
    beat: bool = False


def layouts(processes: list[int], split: bool) -> dict[str, list[WorkerGroup]]:
    """Worker arrangements by row label."""
    from pipeline.stages import STEPS
    from workers.app import ALL_QUEUES, KEYS_QUEUE, QUEUE_PREFIX, WEBHOOKS_QUEUE

    rows = {f"{n} process{'es' if n > 1 else ''}": [WorkerGroup("all", n, None, beat=True)] for n in processes}
    if split:
        prepare = tuple(QUEUE_PREFIX + step for step in STEPS[:3])
        sign = (QUEUE_PREFIX + "request_signature", KEYS_QUEUE, WEBHOOKS_QUEUE)
        chain = tuple(q for q in ALL_QUEUES if q not in prepare + sign)
        rows["split 1+1+2"] = [WorkerGroup("prepare", 1, prepare), WorkerGroup("sign", 1, sign),
                               WorkerGroup("chain", 2, chain, beat=True)]
    return rows


def use_layout(stack: Any, label: str, groups: list[WorkerGroup]) -> None:
    """Stop every worker and start this layout's (each a supervised `paratro worker`)."""
    for name in list(stack.workers):
        stack.stop_worker(name)
    slug = label.replace(" ", "-").replace("+", "")
    for group in groups:
        stack.start_worker(f"{slug}-{group.name}", group.concurrency, beat=group.beat,
                           queues=",".join(group.queues) if group.queues else None)


class Sampler:
    """A thread that runs `probe()` every SAMPLE_EVERY_S until stopped; keeps what it returns."""

    def __init__(self, probe: Any) -> None:
        self._probe = probe
        self._stop = threading.Event()
        self.values: list[Any] = []
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            try:
                self.values.append(self._probe())
            except Exception:  # noqa: BLE001 - a missed sample is not a failed run
                self.errors += 1

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def lock_waiters(ctx: Any) -> int:
    from sqlalchemy import text

    with ctx.db.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")).scalar() or 0)


def pg_deadlocks(ctx: Any) -> int:
    from sqlalchemy import text

    with ctx.db.engine.connect() as conn:
        return int(conn.execute(text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"))
                   .scalar() or 0)


@dataclass
class Groups:
    """The services' root processes, for CPU accounting (each with its descendants)."""

    postgres: int
    anvil: int
    redis: int

    def cpu(self, stack: Any) -> dict[str, float]:
        workers = [p.pid for p in stack.workers.values() if p.pid is not None]
        table = counters.processes()

        def seconds(roots: list[int]) -> float:
            return sum(info.cpu_ticks for info in counters.tree(roots, table)) / CLOCK_TICKS

        return {"workers": seconds(workers), "postgres": seconds([self.postgres]), "anvil": seconds([self.anvil]),
                "redis": seconds([self.redis])}


def burst_row(args: argparse.Namespace, ctx: Any, stack: Any, groups: Groups, label: str) -> dict[str, Any]:
    plan = PLANS[CHAIN]
    client_id = new_client(ctx, f"scale {label}")
    per_source = math.ceil((args.transfers + WARMUP) / args.sources)
    sources = fund_sources(ctx, stack.nodes[CHAIN], client_id, plan, [per_source] * args.sources)
    tag = label.replace(" ", "-").replace("+", "")
    run_burst(ctx, client_id, plan, sources, WARMUP, f"scale-{tag}-warmup", counters.Sample, say, args.phase_timeout)
    cpu_before, machine_before = groups.cpu(stack), counters.machine_cpu()
    with Sampler(lambda: lock_waiters(ctx)) as waiting:
        result = run_burst(ctx, client_id, plan, sources, args.transfers, f"scale-{tag}", counters.Sample, say,
                           args.phase_timeout)
    cpu_after, machine_after = groups.cpu(stack), counters.machine_cpu()
    busy = (machine_after[0] - machine_before[0]) / max(1.0, machine_after[1] - machine_before[1])
    row = {"transfers": result.transfers, "confirmed": result.confirmed, "seconds": round(result.seconds, 2),
           "transfers_per_s": round(result.transfers_per_s, 2), "machine_cpu_busy_pct": round(100 * busy, 1),
           "cpu_ms_per_transfer": {k: round(1000 * (cpu_after[k] - cpu_before[k]) / max(1, result.transfers), 1)
                                   for k in cpu_after},
           "lock_waiters_mean": round(sum(waiting.values) / len(waiting.values), 2) if waiting.values else None,
           "lock_waiters_max": max(waiting.values, default=None)}
    say(f"{label}: {result.confirmed}/{result.transfers} confirmed, {row['transfers_per_s']}/s, CPU busy "
        f"{row['machine_cpu_busy_pct']}%, CPU ms/transfer {row['cpu_ms_per_transfer']}, lock waiters mean "
        f"{row['lock_waiters_mean']} max {row['lock_waiters_max']}")
    return row


def one_asset(args: argparse.Namespace, ctx: Any, stack: Any, workdir: Path, pg_log: Path) -> dict[str, Any]:
    """`args.one_asset` transfers at once from one asset funded for `args.funding_ratio` of them."""
    from sqlalchemy import select

    from bench.pipeline_burst import Source
    from chains.base import TransferIntent
    from pipeline import ledger
    from pipeline.amounts import parse_amount
    from pipeline.models import Asset, Transaction
    from workers.services import fresh_destination, onboard_wallet

    plan, count = PLANS[CHAIN], args.one_asset
    adapter, token = ctx.adapter_for(CHAIN), ctx.registry.chain(CHAIN).token(plan.symbol)
    amount = parse_amount(plan.amount, token.decimals)
    client_id = new_client(ctx, "scale one asset")
    wallet = onboard_wallet(ctx, client_id, "scale one asset", {CHAIN: [plan.symbol]})
    address, asset_id = wallet.accounts[CHAIN], wallet.assets[(CHAIN, plan.symbol)]
    node = stack.nodes[CHAIN]
    first = parse_amount(plan.funding_per_transfer, token.decimals)
    node.fund(address, token, first)  # a balance to quote against (the node estimates gas with it)
    max_fee = adapter.quote_fee(TransferIntent(address, fresh_destination(ctx, CHAIN), amount, token)).max_fee
    node.fund(address, token, max(0, int(count * (amount + max_fee) * args.funding_ratio) - first))
    with ctx.db.unit_of_work() as session:
        ledger.credit(session, asset_id, adapter.balance_of(address, token), reference="bench-faucet")
    source = Source(address, asset_id)

    def asset_now() -> tuple[int, int]:
        with ctx.db.reading() as session:
            row = session.execute(select(Asset.balance, Asset.locked_balance).where(Asset.asset_id == asset_id)).one()
            return int(row[0]), int(row[1])

    deadlocks_before = pg_deadlocks(ctx)
    say(f"one asset: {count} transfers of {plan.amount} {plan.symbol} at once, funded for "
        f"{args.funding_ratio:.0%} of them (max fee {max_fee} wei each)")
    with Sampler(asset_now) as sampled:
        result = run_burst(ctx, client_id, plan, [source], count, "scale-one-asset", counters.Sample, say,
                           max(args.phase_timeout, count * 1.0))
    balance, locked = asset_now()
    on_chain = adapter.balance_of(address, token)
    with ctx.db.unit_of_work() as session:
        reasons = Counter(session.scalars(select(Transaction.failure_reason).where(
            Transaction.from_address == address, Transaction.status == "FAILED")).all())
    overdrafts = [s for s in sampled.values if s[0] < 0 or s[1] < 0 or s[1] > s[0]]
    deadlock_lines = _grep_deadlocks([*workdir.glob("worker-*.log"), pg_log])
    final = result.confirmed + result.statuses.get("FAILED", 0)
    row = {"transfers": count, "funded_for": round(count * args.funding_ratio), "confirmed": result.confirmed,
           "failed": dict(reasons), "pending": count - final, "seconds": round(result.seconds, 2),
           "confirmed_per_s": round(result.transfers_per_s, 2),
           "final_per_s": round(final / result.seconds, 2) if result.seconds else 0.0,
           "samples": len(sampled.values), "overdraft_samples": len(overdrafts),
           "min_available": min((b - l for b, l in sampled.values), default=None),
           "ledger_balance": balance, "chain_balance": on_chain, "locked_after": locked,
           "reconciled": balance == on_chain and locked == 0,
           "pg_deadlocks": pg_deadlocks(ctx) - deadlocks_before, "deadlock_log_lines": deadlock_lines}
    row["ok"] = (row["pending"] == 0 and not overdrafts and row["reconciled"] and row["pg_deadlocks"] == 0
                 and not deadlock_lines and set(reasons) <= {"insufficient_funds", "insufficient_funds_for_fee"})
    say(f"one asset: {result.confirmed} confirmed, failed {dict(reasons)}, {row['final_per_s']} final/s; "
        f"{len(overdrafts)} overdraft samples of {len(sampled.values)}; ledger {balance} chain {on_chain} locked {locked}; "
        f"deadlocks {row['pg_deadlocks']} (logs: {deadlock_lines})")
    return row


def _grep_deadlocks(paths: list[Path]) -> int:
    lines = 0
    for path in paths:
        try:
            with open(path, errors="replace") as fh:
                lines += sum(1 for line in fh if "deadlock" in line.lower())
        except OSError:
            continue
    return lines


def soak(args: argparse.Namespace, ctx: Any, stack: Any) -> dict[str, Any]:
    """`args.soak` transfers in waves through one worker of 2 processes; RSS after warm-up and each wave."""
    from workers.services import submit_transfer

    plan = PLANS[CHAIN]
    use_layout(stack, "soak", [WorkerGroup("all", 2, None, beat=True)])
    client_id = new_client(ctx, "scale soak")
    per_source = math.ceil((args.soak + WARMUP) / args.sources)
    sources = fund_sources(ctx, stack.nodes[CHAIN], client_id, plan, [per_source] * args.sources)
    run_burst(ctx, client_id, plan, sources, WARMUP, "soak-warmup", counters.Sample, say, args.phase_timeout)

    def rss() -> float:
        return counters.tree_rss_mb(p.pid for p in stack.workers.values() if p.pid is not None)

    trail = [rss()]
    done, wave, started, statuses = 0, 0, time.monotonic(), Counter[str]()
    while done < args.soak:
        size = min(args.soak_wave, args.soak - done)
        requests = transfer_requests(ctx, client_id, plan, sources, size, f"soak-{wave}")
        ids = [submit_transfer(ctx, request).transaction_id for request in requests]
        stages = wait_final(ctx, ids, max(args.phase_timeout, size * 1.0), say, f"soak wave {wave}")
        statuses.update(stages)
        done += size
        wave += 1
        trail.append(rss())
        say(f"soak: {done}/{args.soak} transfers, worker RSS {trail[-1]} MiB (after warm-up {trail[0]} MiB)")
    seconds = time.monotonic() - started
    growth = (trail[-1] - trail[0]) / trail[0] if trail[0] else None
    return {"transfers": args.soak, "confirmed": statuses.get("CONFIRMED", 0), "seconds": round(seconds, 1),
            "transfers_per_s": round(args.soak / seconds, 2), "worker_rss_mb": {"before": trail[0], "after": trail[-1]},
            "rss_growth_pct": None if growth is None else round(100 * growth, 1), "rss_trail_mb": trail}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description="Horizontal scale on PostgreSQL.")
    parser.add_argument("--transfers", type=int, default=200, help="EVM burst size per worker layout")
    parser.add_argument("--sources", type=int, default=8)
    parser.add_argument("--processes", default="1,2,4", help="worker process counts, one row each")
    parser.add_argument("--no-split", action="store_true", help="skip the docker-compose-like queue groups row")
    parser.add_argument("--one-asset", type=int, default=1000, help="transfers at once from one asset (0: skip)")
    parser.add_argument("--one-asset-processes", type=int, default=4)
    parser.add_argument("--funding-ratio", type=float, default=0.9, help="of what the one-asset transfers need")
    parser.add_argument("--soak", type=int, default=0, help="transfers of the memory soak (0: skip)")
    parser.add_argument("--soak-wave", type=int, default=500)
    parser.add_argument("--block-time", type=float, default=0.25)
    parser.add_argument("--phase-timeout", type=float, default=300.0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    args = parser.parse_args(argv)
    args.processes = [int(n) for n in args.processes.split(",") if n.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    return run_main(parse_args(argv), run, table, "paratro-scale-")


def run(args: argparse.Namespace, workdir: Path, cleanup: ExitStack) -> dict[str, Any]:
    from devnet.postgres import PostgresServer
    from workers import runtime
    from workers.stack import EmbeddedStack, StackOptions

    started = time.monotonic()
    say("starting PostgreSQL, redis-server, anvil and the first worker layout")
    postgres = cleanup.enter_context(PostgresServer())
    rows_layouts = layouts(args.processes, not args.no_split)
    first = next(iter(rows_layouts.values()))[0]
    stack = cleanup.enter_context(EmbeddedStack(StackOptions(
        workdir=workdir, chains=(CHAIN,), database_url=postgres.url, block_time=args.block_time,
        concurrency=first.concurrency, beat=True, extra_env=SCALE_ENV)))
    ctx = runtime.context()
    anvil = getattr(stack.nodes[CHAIN], "_node", None)  # the devnet wrapper's AnvilNode, for its CPU time
    groups = Groups(postgres=postgres.process.pid, anvil=anvil.process.pid if anvil else -1,
                    redis=stack.redis.process.pid)
    rows: dict[str, dict[str, Any]] = {}
    for label, layout in rows_layouts.items():
        if rows:  # the stack started with the first layout's single worker
            use_layout(stack, label, layout)
        say(f"{label}: burst of {args.transfers} ETH transfers from {args.sources} accounts")
        rows[label] = burst_row(args, ctx, stack, groups, label)
    asset = None
    if args.one_asset > 0:
        use_layout(stack, "one asset", [WorkerGroup("all", args.one_asset_processes, None, beat=True)])
        asset = one_asset(args, ctx, stack, workdir, postgres.dir / "postgres.log")
        asset["worker_processes"] = args.one_asset_processes
    soaked = soak(args, ctx, stack) if args.soak > 0 else None
    complete = all(r["confirmed"] == r["transfers"] for r in rows.values())
    return {"database": "postgresql", "chain": CHAIN, "block_time_s": args.block_time, "sources": args.sources,
            "scaling": rows, "one_asset": asset, "soak": soaked, "seconds": round(time.monotonic() - started, 1),
            "ok": complete and (asset is None or asset["ok"])}


def table(summary: dict[str, Any]) -> str:
    head = f"{'workers':14} {'tx/s':>6} {'CPU busy %':>10} {'worker ms/tx':>12} {'pg ms/tx':>8} {'anvil ms/tx':>11} {'lock waiters':>12}"
    lines = [f"PostgreSQL, {summary['chain']} burst from {summary['sources']} accounts", head, "-" * len(head)]
    for label, row in summary["scaling"].items():
        cpu = row["cpu_ms_per_transfer"]
        lines.append(f"{label:14} {row['transfers_per_s']:>6} {row['machine_cpu_busy_pct']:>10} {cpu['workers']:>12} "
                     f"{cpu['postgres']:>8} {cpu['anvil']:>11} {str(row['lock_waiters_mean']):>12}")
    asset = summary.get("one_asset")
    if asset:
        lines += ["", f"one asset, {asset['transfers']} at once ({asset['worker_processes']} processes): "
                      f"{asset['confirmed']} confirmed, failed {asset['failed']}, {asset['final_per_s']} final/s, "
                      f"overdraft samples {asset['overdraft_samples']}/{asset['samples']}, reconciled "
                      f"{asset['reconciled']}, deadlocks {asset['pg_deadlocks']} (log lines {asset['deadlock_log_lines']})"]
    soaked = summary.get("soak")
    if soaked:
        lines += ["", f"soak: {soaked['transfers']} transfers at {soaked['transfers_per_s']}/s, worker RSS "
                      f"{soaked['worker_rss_mb']['before']} -> {soaked['worker_rss_mb']['after']} MiB "
                      f"({soaked['rss_growth_pct']}%)"]
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        say("interrupted; everything it started is stopped")
        sys.exit(130)
