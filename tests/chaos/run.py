"""`python -m tests.chaos --transfers N --db postgresql|sqlite`: the chaos run, start to verdict.

1. start redis-server, the database, a devnet node and a fault proxy per chain; migrate;
2. onboard one client with a few wallets (the shared sources), fund them with the devnet faucets
   and credit the ledger with what the chains show;
3. start beat and several worker processes, all talking to the devnets through the proxies;
4. fault phase: submit every transfer in one burst while the schedule (faults.py) kills workers,
   restarts redis, terminates database backends, storms the drivers and the proxies misbehave;
   it ends when the one-off faults are done and every transfer is final (or at its time limit);
5. calm phase: proxies faithful, workers left alone; wait for every transfer to be final; at
   most one `paratro replay` of whatever is still pending; wait again;
6. stop the workers, check (checks.py) and print the verdict; exit 1 on any violation.

Every process started is stopped on success, failure, Ctrl-C and SIGTERM; a watchdog ends the
run (killing every process) if it outlives its global deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from tests.chaos.checks import Verdict, check_all, count_transfers
from tests.chaos.cluster import ChaosCluster
from tests.chaos.faults import Chaos, Schedule
from tests.chaos.proxy import FaultRates
from tests.chaos.report import Clock, fault_breakdown, last_line, say, stage_summary, step_stats
from tests.chaos.workload import CHAINS, Submitter, Workload, fund, plan

PROGRESS_EVERY_S = 5.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", "-n", type=int, default=200)
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--workers", type=int, default=3, help="worker processes kept running")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork children per worker")
    parser.add_argument("--wallets", type=int, default=3, help="shared source wallets")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--block-time", type=float, default=0.5, help="devnet block interval (s)")
    parser.add_argument("--storm-s", type=float, default=20.0, help="length of the driver storm (s)")
    parser.add_argument("--delay", type=float, default=FaultRates.delay, help="share of RPC calls delayed")
    parser.add_argument("--drop", type=float, default=FaultRates.drop, help="share of RPC calls dropped")
    parser.add_argument("--timeout", type=float, default=FaultRates.timeout, help="share of RPC calls held past the client timeout")
    parser.add_argument("--lag", type=float, default=FaultRates.lag, help="share of Solana/TRON reads from the lagging view")
    parser.add_argument("--deadline", type=float, default=None, help="global limit in seconds (default 240 + 1.2 N)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--inject-double", action="store_true",
                        help="self-test: before the checks, pay one confirmed transfer's destination again from the "
                             "devnet faucet; the verdict must show 1 doubled and exit 1")
    args = parser.parse_args(argv)
    if args.transfers < 2 * len(CHAINS):
        parser.error(f"--transfers must be at least {2 * len(CHAINS)}")
    args.seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    args.deadline = args.deadline or 240.0 + 1.2 * args.transfers
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from workers.stack import project_home

    clock = Clock()
    workdir = args.workdir or project_home() / "var" / f"chaos-{time.strftime('%Y%m%d-%H%M%S')}-{args.db}"
    rates = FaultRates(delay=args.delay, drop=args.drop, timeout=args.timeout, lag=args.lag)
    cluster = ChaosCluster(workdir, args.db, CHAINS, block_time=args.block_time, rates=rates, seed=args.seed,
                           workers=args.workers, concurrency=args.concurrency, lag_range=(3.0, 8.0))
    stop = threading.Event()
    watchdog = threading.Timer(args.deadline + 120.0, _watchdog, args=(cluster, args.deadline))
    watchdog.daemon = True
    watchdog.start()
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (a background job)
    final: list[str] = []
    code = 2
    try:
        code, final = run(args, cluster, clock, workdir, stop)
    except KeyboardInterrupt:
        final = ["chaos: interrupted; every process it started is stopped"]
        code = 130
    except Exception as exc:  # noqa: BLE001 - report, clean up, fail
        traceback.print_exc()
        final = [f"chaos: aborted: {type(exc).__name__}: {exc}"[:500]]
        code = 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the cleanup
        stop.set()
        try:
            cluster.stop()
        finally:
            watchdog.cancel()
            signal.signal(signal.SIGTERM, previous_term)
            signal.signal(signal.SIGINT, signal.default_int_handler)
    say(clock, f"stopped every process; logs in {workdir}")
    for line in final:
        print(line, flush=True)
    return code


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _watchdog(cluster: ChaosCluster, deadline: float) -> None:
    print(f"chaos: watchdog: still running {deadline + 120:.0f} s after the start; killing everything", flush=True)
    cluster.kill_now()
    os._exit(3)


def run(args: argparse.Namespace, cluster: ChaosCluster, clock: Clock, workdir: Path,
        stop: threading.Event) -> tuple[int, list[str]]:
    rng = random.Random(args.seed)
    deadline = clock.started + args.deadline
    log: Callable[[str], None] = lambda message: say(clock, message)  # noqa: E731
    log(f"chaos: {args.transfers} transfers on {args.db}, {args.workers} workers x {args.concurrency}, "
        f"{args.wallets} source wallets, seed {args.seed}; work folder {workdir}")
    cluster.start(log)
    cluster.start_processes()  # they warm up (imports, connections) while the wallets are funded

    from chains import get_adapter
    from pipeline import credentials
    from workers import runtime
    from paratro.demo_plan import PLANS
    from workers.services import fresh_destination, onboard_wallet

    ctx = runtime.context()
    direct = ctx.registry.with_rpc_urls(cluster.direct_urls)

    def adapter(chain: str) -> Any:  # straight to the node, never through a fault proxy
        return get_adapter(direct.chain(chain))

    with ctx.db.unit_of_work() as session:
        client_id = credentials.create_client(session, credentials.secret_box(), "Chaos Exchange")[0].client_id
    wallets = [onboard_wallet(ctx, client_id, f"shared source {w + 1}", {c: list(PLANS[c].funding) for c in CHAINS})
               for w in range(args.wallets)]
    planned, repeats = plan(ctx, args.transfers, args.wallets, rng, lambda chain: fresh_destination(ctx, chain))
    workload = Workload(client_id, wallets, planned, repeats)
    fund(ctx, cluster.nodes, adapter, workload)
    failures = Counter(item.expect for item in planned if item.expect != "CONFIRMED")
    log(f"funded {args.wallets} wallets on {len(CHAINS)} chains; planned {len(planned)} transfers "
        f"({fault_breakdown(failures) or 'no failures'} expected to fail), {len(repeats)} idempotency-key repeats")

    waited = cluster.wait_ready()
    log(f"{len(cluster.workers)} workers and beat up ({waited:.1f} s more for every worker to answer a ping)")
    ids = lambda: [item.transaction_id for item in planned if item.transaction_id]  # noqa: E731

    def pending_ids() -> list[str]:
        from pipeline.models import Transaction
        from sqlalchemy import select

        with ctx.db.unit_of_work() as session:
            return list(session.scalars(select(Transaction.transaction_id).where(
                Transaction.client_id == client_id, Transaction.status == "PENDING")))

    started = time.monotonic()
    schedule = Schedule.plan(started, rng, args.storm_s)
    chaos = Chaos(cluster, ctx, rng, schedule, pending_ids, log)
    fault_limit = min(started + max(60.0, 45.0 + 0.45 * args.transfers), deadline - 90.0)
    cluster.set_faults(True)
    submitter = Submitter(ctx, workload, stop)
    submitter.start()
    log(f"fault phase: {len(planned)} transfers submitted as one burst; faults until every transfer is final "
        f"(at most {fault_limit - started:.0f} s)")
    progress = Progress(ctx, client_id, cluster, chaos, submitter, len(planned), log)

    # --- fault phase -------------------------------------------------------------------------
    while True:
        now = time.monotonic()
        chaos.tick(now)
        for note in cluster.reap_exited():
            log(f"NOTE: {note}")
        counts = progress.maybe(now)
        everything_final = submitter.finished.is_set() and counts is not None and counts["pending"] == 0 \
            and counts["total"] >= len(ids())
        if (chaos.done(now) and everything_final) or now >= fault_limit:
            break
        time.sleep(0.2)
    chaos.stop_storm()
    cluster.set_faults(False)
    fault_seconds = time.monotonic() - started
    log(f"fault phase over after {fault_seconds:.0f} s: proxies faithful, no more kills; waiting for every transfer")

    # --- calm phase: wait, one replay at most, wait ------------------------------------------
    submitter.join(timeout=max(0.0, deadline - 60.0 - time.monotonic()))
    cluster.ensure_workers()
    first_wait = min(time.monotonic() + 60.0 + 0.3 * args.transfers, deadline - 60.0)
    _wait_final(progress, cluster, first_wait, log)
    replayed = 0
    still = _retry(pending_ids) or []
    if still:
        from workers.services import replay

        log(f"{len(still)} transfers still pending: one `paratro replay` of all of them")
        report = _retry(lambda: replay(ctx, still)) or []
        replayed = sum(1 for row in report if row.get("action", "none") != "none")
        _wait_final(progress, cluster, min(time.monotonic() + 60.0 + 0.1 * args.transfers, deadline - 45.0), log)

    # --- verdict -----------------------------------------------------------------------------
    cluster.stop_processes()  # nothing moves while we look
    time.sleep(2.0 * args.block_time + 1.0)  # let the last blocks settle (finalized reads on solana)
    if args.inject_double:
        _inject_double(ctx, cluster, workload, log)
    log("checking: outcomes, destination balances on every devnet, ledger vs devnet, locks, events")
    verdict: Verdict = check_all(ctx, workload, adapter)
    faults = chaos.tally + sum((proxy.snapshot() for proxy in cluster.proxies.values()), Counter())
    stats = step_stats(sorted(workdir.glob("worker-*.log")))
    elapsed = clock.elapsed()
    _write_report(workdir, args, verdict, faults, stats, chaos, cluster, replayed, elapsed, fault_seconds)
    lines = [str(v) for v in verdict.violations[:200]]
    if len(verdict.violations) > 200:
        lines.append(f"... and {len(verdict.violations) - 200} more violations (report.json)")
    for note in cluster.exited:
        lines.append(f"note: {note}")
    lines.append(f"outcomes: {verdict.confirmed} confirmed, {verdict.failed} failed, {verdict.pending} pending; "
                 f"{len(verdict.violations)} violations; replay used: {'yes' if still else 'no'} ({replayed} re-driven); "
                 f"{elapsed:.0f} s in all ({fault_seconds:.0f} s of faults)")
    rpc_calls = sum(proxy.requests for proxy in cluster.proxies.values())
    lines.append(f"faults: {fault_breakdown(faults)} (of {rpc_calls} RPC calls; {chaos.backends_terminated} "
                 f"database backends terminated; submissions retried {submitter.retries} times)")
    lagging = [f"{chain} {proxy.lagger.lag_s} s behind ({proxy.lagger.kinds['old']} old answers, "
               f"{proxy.lagger.kinds['unseen']} not yet seen)" for chain, proxy in cluster.proxies.items() if proxy.lagger]
    if lagging:
        lines.append(f"lagging views: {'; '.join(lagging)}")
    lines.append(stats.line())
    lines.append(last_line(verdict, sum(faults.values())))
    return (0 if not verdict.violations else 1), lines


class Progress:
    """A progress line every few seconds: final / pending by stage, faults so far; and, when a few
    transfers stay pending for a while, which ones and where (the tail is where bugs hide)."""

    COUNT_EVERY_S = 1.0
    STRAGGLERS_AFTER_S = 20.0

    def __init__(self, ctx: Any, client_id: str, cluster: ChaosCluster, chaos: Chaos, submitter: Submitter,
                 total: int, log: Callable[[str], None]) -> None:
        self.ctx, self.client_id, self.cluster, self.chaos, self.submitter = ctx, client_id, cluster, chaos, submitter
        self.total = total
        self.log = log
        self.next = 0.0
        self.next_count = 0.0
        self.last: dict[str, int] | None = None
        self.pending_since: tuple[int, float] = (-1, 0.0)
        self.next_stragglers = 0.0

    def counts(self) -> dict[str, int] | None:
        stages = _retry(lambda: count_transfers(self.ctx, self.client_id), attempts=1)
        if stages is None:
            return None
        final = stages.get("CONFIRMED", 0) + stages.get("FAILED", 0)
        total = sum(stages.values())
        return {"final": final, "pending": total - final, "total": total, **stages}

    def maybe(self, now: float, force: bool = False) -> dict[str, int] | None:
        if force or now >= self.next_count:
            self.next_count = now + self.COUNT_EVERY_S
            counts = self.counts()
            if counts is not None:
                self.last = counts
        c = self.last
        if force or now >= self.next:
            self.next = now + PROGRESS_EVERY_S
            shown = c or {"final": 0, "pending": 0, "total": 0}
            faults = sum(self.chaos.tally.values()) + sum(sum(p.snapshot().values()) for p in self.cluster.proxies.values())
            stages = stage_summary(shown)
            self.log(f"submitted {self.submitter.done}/{self.total}, final {shown['final']} "
                     f"(confirmed {shown.get('CONFIRMED', 0)}, failed {shown.get('FAILED', 0)}), pending {shown['pending']}"
                     f"{' [' + stages + ']' if stages else ''}; faults {faults}; workers {len(self.cluster.workers)}")
        if c is not None:
            if c["pending"] != self.pending_since[0]:
                self.pending_since = (c["pending"], now)
            elif 0 < c["pending"] <= 5 and now - self.pending_since[1] >= self.STRAGGLERS_AFTER_S \
                    and now >= self.next_stragglers:
                self.next_stragglers = now + 30.0
                for row in _retry(lambda: stragglers(self.ctx, self.client_id), attempts=1) or []:
                    self.log(f"  still pending: {row}")
        return c


def stragglers(ctx: Any, client_id: str) -> list[str]:
    from sqlalchemy import select

    from pipeline.models import Transaction

    with ctx.db.unit_of_work() as session:
        rows = session.scalars(select(Transaction).where(Transaction.client_id == client_id,
                                                         Transaction.status == "PENDING")).all()
        return [f"{t.transaction_id} {t.chain} {t.token_symbol} at {t.stage} since {t.stage_changed_at:%H:%M:%S}"
                f"{' held' if t.held_at else ''}, {t.broadcast_count} broadcasts, {t.replacement_count} replacements; "
                f"last error: {(t.last_error or '-')[:160]}" for t in rows]


STILL_S = 120.0  # in the calm phase, nothing moving for this long means waiting longer is no use


def _wait_final(progress: Progress, cluster: ChaosCluster, until: float, log: Callable[[str], None]) -> None:
    """Until every transfer is final, `until`, or STILL_S without any transfer changing stage."""
    last: dict[str, int] | None = None
    changed = time.monotonic()
    while time.monotonic() < until:
        for note in cluster.reap_exited():
            log(f"NOTE: {note}")
        now = time.monotonic()
        counts = progress.maybe(now)
        if counts is not None and counts["pending"] == 0:
            progress.maybe(now, force=True)
            return
        if counts != last:
            last, changed = counts, now
        elif now - changed >= STILL_S:
            log(f"no transfer changed stage for {STILL_S:.0f} s; waiting longer is no use")
            return
        time.sleep(0.5)
    progress.maybe(time.monotonic(), force=True)


def _inject_double(ctx: Any, cluster: ChaosCluster, workload: Workload, log: Callable[[str], None]) -> None:
    """The harness's self-test: value moved a second time outside the pipeline must be caught."""
    from sqlalchemy import select

    from pipeline.models import Transaction

    with ctx.db.unit_of_work() as session:
        confirmed = set(session.scalars(select(Transaction.transaction_id).where(
            Transaction.client_id == workload.client_id, Transaction.status == "CONFIRMED")))
    for item in workload.planned:
        if item.transaction_id in confirmed:
            token = ctx.registry.chain(item.chain).token(item.symbol)
            cluster.nodes[item.chain].fund(item.to_address, token, item.base_units)  # type: ignore[attr-defined]
            log(f"self-test: paid {item.transaction_id}'s destination {item.amount} {item.symbol} on {item.chain} again")
            return


def _retry(fn: Callable[[], Any], attempts: int = 5) -> Any:
    for attempt in range(attempts):
        try:
            return fn()
        except Exception:  # noqa: BLE001 - database or broker down for a moment
            if attempt < attempts - 1:
                time.sleep(1.0)
    return None


def _write_report(workdir: Path, args: argparse.Namespace, verdict: Verdict, faults: Counter[str], stats: Any,
                  chaos: Chaos, cluster: ChaosCluster, replayed: int, elapsed: float, fault_seconds: float) -> None:
    doc = {
        "transfers": verdict.transfers, "db": args.db, "seed": args.seed, "seconds": round(elapsed, 1),
        "fault_seconds": round(fault_seconds, 1), "lost": verdict.lost, "doubled": verdict.doubled,
        "ledger_ok": verdict.ledger_ok, "locked": verdict.locked, "pending": verdict.pending,
        "confirmed": verdict.confirmed, "failed": verdict.failed, "faults": dict(faults),
        "backends_terminated": chaos.backends_terminated, "storm_redrives": chaos.storm_redrives,
        "replayed": replayed, "steps": {"runs": stats.runs, "noop": stats.noop, "dropped": stats.dropped,
                                        "by_outcome": dict(stats.outcomes or {})},
        "lag_s": {chain: proxy.lagger.lag_s for chain, proxy in cluster.proxies.items() if proxy.lagger},
        "workers_exited_by_themselves": cluster.exited,
        "violations": [{"transaction_id": v.transaction_id, "kind": v.kind, "what": v.what} for v in verdict.violations],
    }
    (workdir / "report.json").write_text(json.dumps(doc, indent=2))
