"""Cost per step: drive real transfers through `run_message` in this process and time each step.

Why in-process: the worker's time per step is what `pipeline.steps.runner.run_message` costs (take,
the step, conclude), and Celery, the broker and the queue wait only add noise on top. Here every
step of every transfer runs against a real anvil (devnet registry, `--block-time` blocks) and a real
database (an SQLite file, or PostgreSQL with `--db postgresql`), and we count, per step:

    wall time (mean, p50, p95 ms), DB statements (SQLAlchemy `before_cursor_execute`, BEGIN
    included), DB commits, HTTP requests to the node (and which JSON-RPC methods)

Messages are run in the order a single worker would take them (earliest due first; a step that
waits is due again after its countdown), and like a worker consuming every step queue, the next
step of a transfer runs at once in the same task (taken in the previous step's conclusion;
`--no-inline`: one message, take and conclusion per step). Confirm is the old per-transfer
step, reached here as the sweeper reaches it when no tracker ticks; the batched tracker replaces
its common path (bench.tracker_tick measures that), and it is reported all the same.

    python -m bench.steps                       # 100 ETH transfers from 4 sources, SQLite
    python -m bench.steps --db postgresql       # same on a throwaway PostgreSQL cluster
    python -m bench.steps --baseline before.json  # print before/after columns against an earlier JSON line
    python -m bench.steps --profile prof.txt    # pyinstrument over the stepping loop (text, or .html)

The last line printed is one JSON object (what --baseline reads back).
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STEPS = ("resolve_source", "validate_destination", "lock_funds", "request_signature", "broadcast", "confirm")


# -- counters ----------------------------------------------------------------------------------------

@dataclass
class StepStats:
    """What one step cost over all its calls."""

    times_ms: list[float] = field(default_factory=list)
    statements: int = 0
    commits: int = 0
    rpc: int = 0
    results: Counter[str] = field(default_factory=Counter)
    rpc_methods: Counter[str] = field(default_factory=Counter)
    statement_kinds: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        calls = len(self.times_ms)
        ordered = sorted(self.times_ms)

        def pct(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else 0.0

        return {
            "calls": calls,
            "mean_ms": round(statistics.fmean(ordered), 2) if ordered else 0.0,
            "p50_ms": pct(0.50),
            "p95_ms": pct(0.95),
            "db_statements": round(self.statements / calls, 2) if calls else 0.0,
            "db_commits": round(self.commits / calls, 2) if calls else 0.0,
            "rpc_calls": round(self.rpc / calls, 2) if calls else 0.0,
            "results": dict(self.results),
            "rpc_methods": {k: round(v / calls, 2) for k, v in self.rpc_methods.most_common()} if calls else {},
            "statement_kinds": {k: round(v / calls, 2) for k, v in self.statement_kinds.most_common()} if calls else {},
        }


class Probe:
    """Attributes DB statements, commits and HTTP requests to the step running now (if any)."""

    def __init__(self) -> None:
        self.current: StepStats | None = None

    def install(self, engine: Any) -> None:
        from sqlalchemy import event

        @event.listens_for(engine, "before_cursor_execute")
        def _statement(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if self.current is not None:
                self.current.statements += 1
                self.current.statement_kinds[statement.lstrip().split(None, 1)[0].upper()] += 1

        @event.listens_for(engine, "commit")
        def _commit(_conn: Any) -> None:
            if self.current is not None:
                self.current.commits += 1

        import requests.adapters

        original = requests.adapters.HTTPAdapter.send
        probe = self

        def send(adapter: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            if probe.current is not None:
                probe.current.rpc += 1
                probe.current.rpc_methods[_rpc_method(request.body, request.path_url)] += 1
            return original(adapter, request, *args, **kwargs)

        requests.adapters.HTTPAdapter.send = send  # this benchmark process only

    @contextmanager
    def step(self, stats: StepStats) -> Iterator[None]:
        self.current = stats
        try:
            yield
        finally:
            self.current = None


def _rpc_method(body: Any, path: str) -> str:
    """The JSON-RPC method (or `batch[n]`); for an HTTP API (TRON's wallet API) the path's last
    segment, never the whole URL."""
    try:
        decoded = json.loads(body) if body else None
    except (TypeError, ValueError):
        decoded = None
    if isinstance(decoded, list):
        return f"batch[{len(decoded)}]"
    if isinstance(decoded, dict) and "method" in decoded:
        return str(decoded["method"])
    return path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "?"


# -- the stack ----------------------------------------------------------------------------------------

@dataclass
class Source:
    address: str
    asset_id: str


def _database_url(args: argparse.Namespace, workdir: Path, stack: ExitStack) -> str:
    if args.db == "postgresql":
        from devnet.postgres import PostgresServer

        return stack.enter_context(PostgresServer()).url
    return f"sqlite:///{workdir / 'bench.db'}"


def _setup(args: argparse.Namespace, stack: ExitStack, workdir: Path) -> tuple[Any, Any, list[Source], str]:
    """Node, migrated database, context, one client and `--sources` funded wallets."""
    from chains.registry import load_registry
    from devnet.nodes import start_node
    from pipeline.migrate import upgrade
    from pipeline.sealing import new_secrets_key
    from pipeline.settings import Settings
    from signer.local import SignerBase, new_master_key
    from workers import runtime
    from workers.stack import project_home

    spec = load_registry("devnet").chain(args.chain)
    node = start_node(spec, project_home(), args.block_time, stack)
    url = _database_url(args, workdir, stack)
    upgrade(url)
    settings = Settings(database_url=url, chain_registry="devnet", rpc_urls={args.chain: node.rpc_url},
                        signer_master_key=new_master_key(), secrets_key=new_secrets_key(),
                        max_countdown_s=60, _env_file=None)  # type: ignore[call-arg]
    ctx = runtime.build_context(settings)
    SignerBase.metadata.create_all(ctx.db.engine)
    client_id = _client(ctx, settings, args.webhook)
    sources = [_funded_source(ctx, node, client_id, args.chain, i, args.fund) for i in range(args.sources)]
    return ctx, node, sources, client_id


def _client(ctx: Any, settings: Any, webhook: bool) -> str:
    from pipeline import credentials

    with ctx.db.unit_of_work() as session:
        client, _ = credentials.create_client(session, credentials.secret_box(settings), "bench client")
        if webhook:  # event rows for every stage change (delivery is not part of this benchmark)
            client.webhook_url = "https://receiver.invalid/hook"
            client.webhook_events = json.dumps(["transaction.stage"])
        return client.client_id


def _funded_source(ctx: Any, node: Any, client_id: str, chain: str, index: int, amount: str) -> Source:
    from pipeline import ledger, onboarding
    from pipeline.amounts import parse_amount
    from pipeline.ids import new_id
    from signer.base import KeyRef

    adapter = ctx.adapter_for(chain)
    token = ctx.registry.chain(chain).native
    wallet_id = new_id("wallet")
    public = ctx.signer.create_key(KeyRef(wallet_id, adapter.key_name, adapter.curve))
    address = adapter.address_from_public_key(public.key)
    with ctx.db.unit_of_work() as session:
        onboarding.create_wallet(session, client_id, f"bench source {index}", wallet_id=wallet_id)
        onboarding.activate_wallet(session, wallet_id)
        account = onboarding.create_account(session, ctx.registry, wallet_id, chain, address)
        asset_id = onboarding.add_asset(session, ctx.registry, account.account_id, token.symbol).asset_id
    base_units = parse_amount(amount, token.decimals)
    node.fund(address, token, base_units)
    with ctx.db.unit_of_work() as session:
        ledger.credit(session, asset_id, base_units, reference="bench-faucet")
    return Source(address, asset_id)


def _destination(ctx: Any, chain: str) -> str:
    from eth_keys import keys

    from chains.base import Curve

    adapter = ctx.adapter_for(chain)
    if adapter.curve is Curve.ED25519:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return adapter.address_from_public_key(
            Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    return adapter.address_from_public_key(keys.PrivateKey(secrets.token_bytes(32)).public_key.to_bytes())


# -- the run ------------------------------------------------------------------------------------------

def _create(ctx: Any, args: argparse.Namespace, client_id: str, sources: list[Source], stats: StepStats,
            probe: Probe) -> list[Any]:
    from pipeline.driving import Dispatch
    from pipeline.transfers import TransferRequest, create_transfer

    symbol = ctx.registry.chain(args.chain).native.symbol
    dispatches = []
    for i in range(args.transfers):
        source = sources[i % len(sources)]
        req = TransferRequest(client_id=client_id, from_address=source.address, to_address=_destination(ctx, args.chain),
                              chain=args.chain, token_symbol=symbol, amount=args.amount, idempotency_key=f"bench-{i}")
        started = time.perf_counter()
        with probe.step(stats):
            with ctx.db.unit_of_work() as session:
                tx, _ = create_transfer(session, ctx.registry, req)
                dispatches.append(Dispatch(tx.transaction_id, STEPS[0], tx.driver_seq))
        stats.times_ms.append((time.perf_counter() - started) * 1000)
        stats.results["created"] += 1
    return dispatches


_TRACKED = ("BROADCAST", "CONFIRMING")


def _to_confirm_step(ctx: Any, transaction_id: str) -> Any:
    """A broadcast transfer handed to the chain's tracker goes to the per-transfer confirm step
    instead, as the sweeper does when no tracker ticks (`redrive`), so confirm is measured too."""
    from pipeline.driving import load_tx, redrive

    with ctx.db.unit_of_work() as session:
        return redrive(session, load_tx(session, transaction_id), ctx.stall_after_s)


def _drive(ctx: Any, dispatches: list[Any], stats: dict[str, StepStats], probe: Probe,
           timeout_s: float, inline: frozenset[str], tracked: list[str] | None = None) -> Counter[str]:
    """Run every message as one worker would (earliest due first) until no transfer has one; a
    next step in `inline` runs at once in the same "task" (`run_taken`), as `workers.tasks.run_step`
    does for the steps of the queues it consumes. A transfer handed to the chain's tracker goes to
    `tracked` if given, else to the per-transfer confirm step."""
    from pipeline.steps.runner import run_message, run_taken

    order = itertools.count()
    queue = [(time.monotonic(), next(order), d) for d in dispatches]
    heapq.heapify(queue)
    finals: Counter[str] = Counter()
    deadline = time.monotonic() + timeout_s
    while queue:
        due, _, dispatch = heapq.heappop(queue)
        now = time.monotonic()
        if now > deadline:
            finals["unfinished"] += 1 + len(queue)
            break
        if due > now:
            time.sleep(due - now)
        step, tx_id = dispatch.step, dispatch.transaction_id
        report = _timed(stats[step], probe, lambda: run_message(ctx, step, tx_id, dispatch.seq, dispatch.errors, inline))
        while report.next_run is not None:
            run = report.next_run
            report = _timed(stats[run.step], probe, lambda: run_taken(ctx, run))
            step = run.step
        if report.error and report.result not in ("wait", "advanced", "noop"):
            print(f"  {step} {tx_id}: {report.result}: {report.error}", file=sys.stderr)
        follow = report.dispatch
        if follow is None and report.stage in _TRACKED and report.result != "dropped":
            if tracked is not None:
                tracked.append(tx_id)
                continue
            follow = _to_confirm_step(ctx, tx_id)
        if follow is not None:
            heapq.heappush(queue, (time.monotonic() + follow.countdown_s, next(order), follow))
        else:
            finals[report.stage or report.result] += 1
    return finals


def _timed(step_stats: StepStats, probe: Probe, call: Any) -> Any:
    started = time.perf_counter()
    with probe.step(step_stats):
        report = call()
    step_stats.times_ms.append((time.perf_counter() - started) * 1000)
    step_stats.results[getattr(report, "result", "tick")] += 1
    return report


def _track(ctx: Any, chain: str, tracked: list[str], stats: dict[str, StepStats], probe: Probe,
           timeout_s: float, inline: frozenset[str]) -> Counter[str]:
    """Tick the chain's confirmation tracker (pipeline.tracking.tick, what beat runs) once per poll
    interval until every tracked transfer is final; what a tick hands to the confirm step is run."""
    from pipeline.models import Transaction
    from pipeline.tracking import TrackerLimits, tick

    limits = TrackerLimits(recheck_s=ctx.stall_after_s, confirm_timeout_s=ctx.confirm_timeout_s)
    poll_s = ctx.registry.chain(chain).poll_interval_ms / 1000.0
    finals: Counter[str] = Counter()
    pending = set(tracked)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        report = _timed(stats["tracker_tick"], probe, lambda: tick(ctx, chain, limits))
        stats["tracker_tick"].results["news"] += report.news
        if report.dispatches:
            finals.update(_drive(ctx, report.dispatches, stats, probe, timeout_s, inline))
        with ctx.db.unit_of_work() as session:
            rows = session.execute(select_stages(Transaction, pending)).all()
        for transaction_id, stage in rows:
            if stage in ("CONFIRMED", "FAILED"):
                pending.discard(transaction_id)
                finals[stage] += 1
        time.sleep(poll_s)
    finals["unfinished"] += len(pending)
    return +finals


def select_stages(model: Any, ids: set[str]) -> Any:
    from sqlalchemy import select

    return select(model.transaction_id, model.stage).where(model.transaction_id.in_(sorted(ids)))


# -- output -------------------------------------------------------------------------------------------

def _table(summary: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    rows = ["create", *STEPS, "tracker_tick"]
    if baseline is None:
        head = f"{'step':22} {'calls':>6} {'mean ms':>8} {'p50 ms':>8} {'p95 ms':>8} {'stmts':>6} {'commits':>7} {'rpc':>5}"
        lines = [head, "-" * len(head)]
        for step in rows:
            s = summary["steps"].get(step)
            if s and s["calls"]:
                lines.append(f"{step:22} {s['calls']:>6} {s['mean_ms']:>8.2f} {s['p50_ms']:>8.2f} {s['p95_ms']:>8.2f} "
                             f"{s['db_statements']:>6.1f} {s['db_commits']:>7.1f} {s['rpc_calls']:>5.1f}")
        return "\n".join(lines)
    head = (f"{'step':22} {'mean ms before':>14} {'after':>7} {'p95 before':>10} {'after':>7} "
            f"{'stmts before':>12} {'after':>6} {'rpc before':>10} {'after':>6}")
    lines = [head, "-" * len(head)]
    for step in rows:
        s, b = summary["steps"].get(step), baseline["steps"].get(step)
        if s and b and s["calls"]:
            lines.append(f"{step:22} {b['mean_ms']:>14.2f} {s['mean_ms']:>7.2f} {b['p95_ms']:>10.2f} {s['p95_ms']:>7.2f} "
                         f"{b['db_statements']:>12.1f} {s['db_statements']:>6.1f} {b['rpc_calls']:>10.1f} {s['rpc_calls']:>6.1f}")
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.steps", description=__doc__.split("\n\n")[0])
    parser.add_argument("--transfers", type=int, default=100)
    parser.add_argument("--sources", type=int, default=4, help="source accounts the transfers rotate over")
    parser.add_argument("--chain", default="ethereum", help="a devnet registry chain (EVM by default)")
    parser.add_argument("--amount", default="0.001", help="per transfer, in token units")
    parser.add_argument("--fund", default="100", help="per source account, in native token units")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--block-time", type=float, default=0.25, help="devnet seconds per block")
    parser.add_argument("--webhook", action="store_true", help="the client listens (stage events written)")
    parser.add_argument("--profile", type=Path, help="pyinstrument report of the stepping loop (.html or text)")
    parser.add_argument("--baseline", type=Path, help="a file whose last line is an earlier run's JSON line")
    parser.add_argument("--no-inline", action="store_true",
                        help="one message per step (take, step, conclude each time) instead of a worker "
                             "consuming every step queue, which runs the next step in the same task")
    parser.add_argument("--confirm", choices=("step", "tracker"), default="step",
                        help="after broadcast: the per-transfer confirm step (as the sweeper hands it over), "
                             "or the chain's batched tracker ticked once per poll interval")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up driving after this many seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    baseline = json.loads(args.baseline.read_text().strip().splitlines()[-1]) if args.baseline else None
    stats: dict[str, StepStats] = defaultdict(StepStats)
    probe = Probe()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-steps-") as tmp:
        print(f"starting {args.chain} devnet and {args.db} ...", file=sys.stderr)
        ctx, _node, sources, client_id = _setup(args, stack, Path(tmp))
        probe.install(ctx.db.engine)
        dispatches = _create(ctx, args, client_id, sources, stats["create"], probe)
        print(f"driving {len(dispatches)} transfers ...", file=sys.stderr)
        profiler = None
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0005)
            profiler.start()
        started = time.monotonic()
        inline = frozenset() if args.no_inline else frozenset(STEPS) - {"confirm"}
        tracked: list[str] | None = [] if args.confirm == "tracker" else None
        finals = _drive(ctx, dispatches, stats, probe, args.timeout, inline, tracked)
        if tracked:
            finals.update(_track(ctx, args.chain, tracked, stats, probe, args.timeout, inline))
        seconds = time.monotonic() - started
        if profiler is not None:
            profiler.stop()
            text = profiler.output_html() if args.profile.suffix == ".html" else profiler.output_text(show_all=False)
            args.profile.write_text(text)
            print(f"profile written to {args.profile}", file=sys.stderr)
        summary = {
            "bench": "steps", "chain": args.chain, "db": args.db, "transfers": args.transfers,
            "sources": args.sources, "block_time_s": args.block_time, "webhook": args.webhook,
            "inline": not args.no_inline,
            "outcomes": dict(finals), "drive_seconds": round(seconds, 2),
            "worker_ms_per_transfer": round(sum(sum(s.times_ms) for k, s in stats.items() if k != "create")
                                            / max(args.transfers, 1), 2),
            "confirm_path": args.confirm,
            "steps": {step: stats[step].summary() for step in ("create", *STEPS, "tracker_tick")},
        }
        ctx.db.dispose()
    print(_table(summary, baseline))
    if baseline is not None:
        print(f"worker ms per transfer: {baseline.get('worker_ms_per_transfer')} -> {summary['worker_ms_per_transfer']}")
    print(json.dumps(summary, separators=(",", ":")))
    return 0 if set(finals) <= {"CONFIRMED"} else 1


if __name__ == "__main__":
    sys.exit(main())
