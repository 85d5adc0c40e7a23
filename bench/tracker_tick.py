"""One confirmation-tracker tick at 1,000 / 10,000 / 100,000 pending transfers.

The claim to check: a tick's cost grows with what moved, not with the backlog. This inserts N
broadcast transfers spread over ethereum, tron, bitcoin and solana (real devnet nodes; the
transactions are unknown to them, as transfers waiting in a congested mempool are: EVM ones from
100 sending accounts with nonces not yet mined) into a real database, then runs one tick per chain
exactly as the worker does (`pipeline.tracking.tick`) and reports per chain and in all: wall time,
DB statements, RPC (HTTP) requests and Celery tasks (the tick itself + confirm-step messages).

    python -m bench.tracker_tick                    # SQLite, 1k / 10k / 100k
    python -m bench.tracker_tick --db postgresql    # a throwaway PostgreSQL cluster
    python -m bench.tracker_tick --sizes 1000,5000  # other sizes

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHAINS = ("ethereum", "tron", "bitcoin", "solana")
EVM_SENDERS = 100
INSERT_BATCH = 5_000


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class TickCost:
    chain: str
    pending: int
    wall_ms: float
    db_statements: int
    rpc_calls: int
    tasks: int


def fake_hash(chain: str) -> str:
    """A well-formed transaction id no node knows."""
    if chain == "ethereum":
        return "0x" + secrets.token_hex(32)
    if chain == "solana":
        from solders.signature import Signature

        return str(Signature(secrets.token_bytes(64)))
    return secrets.token_hex(32)


def sender_of(chain: str, index: int, evm_senders: list[str]) -> str:
    return evm_senders[index % len(evm_senders)] if chain == "ethereum" else f"{chain}-sender"


def insert_pending(db: Any, client_id: str, total: int) -> None:
    """`total` tracked BROADCAST transfers, round-robin over CHAINS (EVM nonces far above mined)."""
    from sqlalchemy import insert

    from pipeline.ids import new_id
    from pipeline.models import Transaction, utcnow

    evm_senders = ["0x" + secrets.token_hex(20) for _ in range(EVM_SENDERS)]
    now = utcnow()
    for start in range(0, total, INSERT_BATCH):
        rows = []
        for i in range(start, min(total, start + INSERT_BATCH)):
            chain = CHAINS[i % len(CHAINS)]
            rows.append({
                "transaction_id": new_id("transaction"), "client_id": client_id, "idempotency_key": f"bench-{i}",
                "request_fingerprint": "bench", "from_address": sender_of(chain, i, evm_senders),
                "to_address": "bench", "chain": chain, "token_symbol": "X", "amount": 1, "status": "PENDING",
                "stage": "BROADCAST", "tx_hash": fake_hash(chain), "nonce": 1_000 + i if chain == "ethereum" else None,
                "driver_seq": 1, "tracked_at": now, "last_broadcast_at": now, "broadcast_at": now,
                "heartbeat_at": now, "stage_changed_at": now, "created_at": now, "updated_at": now,
            })
        with db.unit_of_work() as session:
            session.execute(insert(Transaction), rows)
        say(f"  inserted {min(total, start + INSERT_BATCH):,} / {total:,}")


def clear(db: Any) -> None:
    from sqlalchemy import delete

    from pipeline.models import ChainTracker, Transaction

    with db.unit_of_work() as session:
        session.execute(delete(Transaction))
        session.execute(delete(ChainTracker))


def just_sent(db: Any) -> None:
    from sqlalchemy import update

    from pipeline.models import Transaction, utcnow

    with db.unit_of_work() as session:
        session.execute(update(Transaction).values(tracked_at=utcnow(), last_broadcast_at=utcnow()))


@contextmanager
def statement_counter(engine: Any) -> Iterator[list[int]]:
    from sqlalchemy import event

    count = [0]

    def on_execute(*_: Any) -> None:
        count[0] += 1

    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield count
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)


def measure_tick(ctx: Any, chain: str, pending: int) -> TickCost:
    from pipeline.tracking import TrackerLimits, tick

    limits = TrackerLimits()
    with statement_counter(ctx.db.engine) as statements:
        started = time.perf_counter()
        report = tick(ctx, chain, limits)
        wall_ms = (time.perf_counter() - started) * 1000
    return TickCost(chain, pending, round(wall_ms, 1), statements[0], report.rpc_calls, 1 + len(report.dispatches))


def start_stack(stack: ExitStack, workdir: Path, db_kind: str) -> Any:
    """Devnet nodes, a migrated database, and the worker's StepContext over them."""
    from chains import get_adapter
    from chains.registry import load_registry
    from devnet.nodes import start_node
    from pipeline.db import Database
    from pipeline.migrate import upgrade
    from pipeline.steps import StepContext
    from workers.stack import project_home

    registry = load_registry("devnet")
    urls = {}
    for chain in CHAINS:
        say(f"starting the {chain} devnet node ...")
        urls[chain] = start_node(registry.chain(chain), project_home(), 0.25, stack).rpc_url
    registry = registry.with_rpc_urls(urls)
    if db_kind == "postgresql":
        from devnet.postgres import PostgresServer

        url = stack.enter_context(PostgresServer()).url
    else:
        url = f"sqlite:///{workdir / 'tick.db'}"
    upgrade(url)
    db = Database(url)
    stack.callback(db.dispose)
    return StepContext(db=db, registry=registry, adapter_for=lambda name: get_adapter(registry.chain(name)),
                       signer=None)  # type: ignore[arg-type]


def seed_client(ctx: Any) -> str:
    from pipeline import credentials
    from pipeline.sealing import SecretBox, new_secrets_key

    with ctx.db.unit_of_work() as session:
        client, _ = credentials.create_client(session, SecretBox(new_secrets_key()), "bench")
        return client.client_id


def run(sizes: list[int], db_kind: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="paratro-tick-") as tmp:
        ctx = start_stack(stack, Path(tmp), db_kind)
        client_id = seed_client(ctx)
        for size in sizes:
            clear(ctx.db)
            say(f"{size:,} pending transfers over {len(CHAINS)} chains ...")
            insert_pending(ctx.db, client_id, size)
            for chain in CHAINS:
                measure_tick(ctx, chain, size)  # warm: adapter connected, cursor placed
            just_sent(ctx.db)  # inserting took a while: none is yet "quiet" (handed to the confirm step)
            costs = [measure_tick(ctx, chain, size // len(CHAINS)) for chain in CHAINS]
            results[str(size)] = costs
            print_table(size, costs)
    return summarize(results, db_kind)


def print_table(size: int, costs: list[TickCost]) -> None:
    print(f"\n{size:,} pending:")
    print(f"  {'chain':<10}{'pending':>9}{'tick ms':>10}{'DB stmts':>10}{'RPC':>6}{'tasks':>7}")
    for cost in costs:
        print(f"  {cost.chain:<10}{cost.pending:>9,}{cost.wall_ms:>10.1f}{cost.db_statements:>10}"
              f"{cost.rpc_calls:>6}{cost.tasks:>7}")
    total = sum(cost.wall_ms for cost in costs)
    print(f"  {'all':<10}{size:>9,}{total:>10.1f}{sum(c.db_statements for c in costs):>10}"
          f"{sum(c.rpc_calls for c in costs):>6}{sum(c.tasks for c in costs):>7}")


def summarize(results: dict[str, list[TickCost]], db_kind: str) -> dict[str, Any]:
    summary: dict[str, Any] = {"db": db_kind, "chains": list(CHAINS), "ticks": {}}
    for size, costs in results.items():
        summary["ticks"][size] = {
            "wall_ms_all_chains": round(sum(c.wall_ms for c in costs), 1),
            "wall_ms_slowest_chain": max(c.wall_ms for c in costs),
            "db_statements": sum(c.db_statements for c in costs),
            "rpc_calls": sum(c.rpc_calls for c in costs),
            "celery_tasks": sum(c.tasks for c in costs),
            "per_chain": {c.chain: {"wall_ms": c.wall_ms, "db_statements": c.db_statements, "rpc_calls": c.rpc_calls,
                                    "tasks": c.tasks} for c in costs},
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracker_tick", description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated pending counts")
    args = parser.parse_args(argv)
    try:
        sizes = [int(part) for part in args.sizes.split(",")]
    except ValueError:
        parser.error("--sizes must be comma-separated integers, e.g. 1000,10000")
    if any(size < len(CHAINS) for size in sizes):
        parser.error(f"every size must be at least {len(CHAINS)} (one transfer per chain)")
    print(json.dumps(run(sizes, args.db), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
