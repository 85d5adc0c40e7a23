"""`make demo` / `paratro demo`: real transfers through the real stack, watched live, reconciled.

Starts the embedded stack (redis-server, anvil with a USDT-like ERC20, SQLite, a prefork worker
with the sweeper), onboards a client and a wallet, funds the wallet's address on the devnet and
credits the same amounts to the ledger, submits a mix of transfers including the expected
failures and a repeated idempotency key, and shows them move until every one is final. Then it
reconciles every asset against the chain and exits 0 only if outcomes and balances hold.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.live import Live
from rich.table import Table
from sqlalchemy import func, select

DEMO_CHAIN = "ethereum"
FUNDING = {"ETH": "10", "USDT": "10000"}


@dataclass(frozen=True)
class DemoOptions:
    transfers: int = 20
    json_only: bool = False
    block_time: float = 0.5
    concurrency: int = 4
    workdir: Path | None = None


@dataclass(frozen=True)
class PlannedTransfer:
    key: str
    token: str
    amount: str
    to_address: str
    expect: str  # "CONFIRMED" or a failure reason


@dataclass
class DemoResult:
    counts: Counter[str] = field(default_factory=Counter)
    mismatches: list[str] = field(default_factory=list)
    reconciliation: list[dict[str, str]] = field(default_factory=list)


def plan_transfers(n: int) -> list[PlannedTransfer]:
    """n distinct transfers: ETH and USDT to fresh addresses, one malformed, one over balance."""
    plan: list[PlannedTransfer] = []
    for i in range(n - 2):
        token = "ETH" if i % 2 == 0 else "USDT"
        amount = f"0.0{1 + i % 5}" if token == "ETH" else f"{1 + i % 40}.5"
        to_address = "0x" + secrets.token_hex(20)  # lowercase: the pipeline normalizes it to EIP-55
        plan.append(PlannedTransfer(f"demo-{i:04d}", token, amount, to_address, "CONFIRMED"))
    plan.insert(min(3, len(plan)), PlannedTransfer("demo-bad-address", "ETH", "0.01", "0x12345", "invalid_destination"))
    plan.insert(min(7, len(plan)), PlannedTransfer("demo-too-much", "USDT", "25000", "0x" + secrets.token_hex(20),
                                                   "insufficient_funds"))
    return plan


def run_demo(options: DemoOptions) -> bool:
    from workers.stack import EmbeddedStack, StackOptions, project_home

    started = time.monotonic()
    workdir = options.workdir or project_home() / "var" / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    say = (lambda *_: None) if options.json_only else _console_print
    say(f"[bold]paratro demo[/]: starting redis-server, anvil ({DEMO_CHAIN}), SQLite and a Celery worker in {workdir}")
    with EmbeddedStack(StackOptions(workdir=workdir, chains=(DEMO_CHAIN,), block_time=options.block_time,
                                    concurrency=options.concurrency)) as stack:
        say(f"stack up in {time.monotonic() - started:.1f} s: redis {stack.env['PARATRO_BROKER_URL']}, "
            f"anvil {stack.nodes[DEMO_CHAIN].rpc_url}")
        result = _run(options, stack, say)
        say("stopping the worker, anvil and redis-server")
    seconds = round(time.monotonic() - started, 1)
    ok = not result.mismatches
    summary = {
        "confirmed": result.counts["CONFIRMED"],
        "failed": result.counts["FAILED"],
        "pending": result.counts["PENDING"],
        "seconds": seconds,
        "transfers": options.transfers,
        "chains": {DEMO_CHAIN: {"confirmed": result.counts["CONFIRMED"], "failed": result.counts["FAILED"]}},
        "reconciled": not any(r["ok"] != "yes" for r in result.reconciliation),
        "ok": ok,
    }
    if not ok:
        for problem in result.mismatches:
            say(f"[red]mismatch:[/] {problem}")
    print(json.dumps(summary), flush=True)
    return ok


def _console_print(*args: object) -> None:
    from workers.display import console

    console.print(*args)


def _run(options: DemoOptions, stack: object, say: object) -> DemoResult:
    from pipeline import ledger, onboarding
    from pipeline.amounts import parse_amount
    from pipeline.models import Transaction
    from pipeline.transfers import TransferRequest
    from workers import runtime
    from workers.services import onboard_wallet, submit_transfer

    ctx = runtime.context()
    node = stack.nodes[DEMO_CHAIN]  # type: ignore[attr-defined]
    spec = ctx.registry.chain(DEMO_CHAIN)
    with ctx.db.unit_of_work() as session:
        client, _secret = onboarding.create_client(session, "Demo Exchange Ltd")
        client_id = client.client_id
    wallet = onboard_wallet(ctx, client_id, "demo hot wallet", {DEMO_CHAIN: list(FUNDING)})
    address = wallet.accounts[DEMO_CHAIN]
    say(f"wallet {wallet.wallet_id} address {address}: funding {FUNDING['ETH']} ETH and {FUNDING['USDT']} USDT on the devnet")

    # Fund on chain, then credit the ledger with exactly what the chain shows (a deposit).
    from devnet.token import mint

    node.set_balance(address, parse_amount(FUNDING["ETH"], spec.native.decimals))
    mint(node.rpc_url, spec.token("USDT").contract, address, parse_amount(FUNDING["USDT"], 6))
    adapter = ctx.adapter_for(DEMO_CHAIN)
    with ctx.db.unit_of_work() as session:
        for symbol in FUNDING:
            on_chain = adapter.balance_of(address, spec.token(symbol))
            ledger.credit(session, wallet.assets[(DEMO_CHAIN, symbol)], on_chain, reference="devnet-faucet")

    plan = plan_transfers(options.transfers)
    ids: dict[str, PlannedTransfer] = {}
    for item in plan:
        req = TransferRequest(client_id=client_id, from_address=address, to_address=item.to_address,
                              chain=DEMO_CHAIN, token_symbol=item.token, amount=item.amount, idempotency_key=item.key)
        transaction_id, _ = submit_transfer(ctx, req)
        ids[transaction_id] = item
    # The same request again (a client retrying after a timeout) must not create a second transfer.
    first = plan[0]
    repeat_id, repeat_created = submit_transfer(ctx, TransferRequest(
        client_id=client_id, from_address=address, to_address=first.to_address, chain=DEMO_CHAIN,
        token_symbol=first.token, amount=first.amount, idempotency_key=first.key))
    result = DemoResult()
    if repeat_created or repeat_id not in ids:
        result.mismatches.append("repeated idempotency key created a second transfer")
    say(f"submitted {len(plan)} transfers (+1 repeat of {first.key} -> same {repeat_id})")

    _watch(ctx, list(ids), options, say)

    with ctx.db.unit_of_work() as session:
        txs = session.scalars(select(Transaction).where(Transaction.client_id == client_id)).all()
        total = session.scalar(select(func.count()).select_from(Transaction)) or 0
        rows = [(t.transaction_id, t.token_symbol, t.amount, t.status, t.failure_reason, t.tx_hash, t.confirmations)
                for t in txs]
    if total != len(plan):
        result.mismatches.append(f"{total} transactions in the database for {len(plan)} distinct requests")
    for transaction_id, _sym, _amt, status, reason, _hash, _conf in rows:
        result.counts[status] += 1
        expected = ids[transaction_id].expect
        got = "CONFIRMED" if status == "CONFIRMED" else (reason or status)
        if got != expected:
            result.mismatches.append(f"{transaction_id} ({ids[transaction_id].key}) ended {got}, expected {expected}")
    result.reconciliation = _reconcile(ctx, wallet.wallet_id)
    for row in result.reconciliation:
        if row["ok"] != "yes":
            result.mismatches.append(f"reconciliation failed for {row['asset']}: db {row['db']} chain {row['chain']} "
                                     f"locked {row['locked']}")
    if not options.json_only:
        _print_summary(rows, result, spec, ctx.db.url)
    return result


def _watch(ctx: object, transaction_ids: list[str], options: DemoOptions, say: object) -> None:
    """Poll the database (the source of truth) until every transfer is final or time runs out."""
    from pipeline.models import Transaction
    from workers.display import live_view, stage_progress

    deadline = time.monotonic() + 90 + 1.5 * len(transaction_ids)
    progress = stage_progress(len(transaction_ids))
    bar = progress.add_task("final", total=len(transaction_ids))
    live = None if options.json_only else Live(live_view(progress, Counter()), refresh_per_second=8)
    try:
        if live:
            live.start()
        while True:
            with ctx.db.unit_of_work() as session:  # type: ignore[attr-defined]
                stages = Counter(dict(session.execute(
                    select(Transaction.stage, func.count()).where(Transaction.transaction_id.in_(transaction_ids))
                    .group_by(Transaction.stage)).tuples().all()))
            final = stages.get("CONFIRMED", 0) + stages.get("FAILED", 0)
            progress.update(bar, completed=final)
            if live:
                live.update(live_view(progress, stages))
            if final == len(transaction_ids) or time.monotonic() > deadline:
                return
            time.sleep(0.25)
    finally:
        if live:
            live.stop()


def _reconcile(ctx: object, wallet_id: str) -> list[dict[str, str]]:
    """Every asset: DB balance == chain balance (fees included) and nothing left locked."""
    from pipeline.amounts import format_amount
    from workers.services import asset_rows

    report = []
    for account, asset in asset_rows(ctx, wallet_id):  # type: ignore[arg-type]
        token = ctx.registry.chain(account.chain).token(asset.symbol)  # type: ignore[attr-defined]
        on_chain = ctx.adapter_for(account.chain).balance_of(account.address, token)  # type: ignore[attr-defined]
        ok = on_chain == asset.balance and asset.locked_balance == 0
        report.append({"asset": f"{account.chain}:{asset.symbol}", "db": format_amount(asset.balance, asset.decimals),
                       "chain": format_amount(on_chain, asset.decimals),
                       "locked": format_amount(asset.locked_balance, asset.decimals), "ok": "yes" if ok else "NO"})
    return report


def _print_summary(rows: list[tuple], result: DemoResult, spec: object, database_url: str) -> None:
    from pipeline.amounts import format_amount
    from workers.display import console

    table = Table(title="transfers")
    for column in ("transaction", "token", "amount", "status", "reason", "tx hash", "conf"):
        table.add_column(column, no_wrap=column in ("transaction", "tx hash"))
    shown = rows if len(rows) <= 40 else [r for r in rows if r[3] != "CONFIRMED"] + rows[:20]
    for transaction_id, symbol, amount, status, reason, tx_hash, confirmations in shown:
        colour = "green" if status == "CONFIRMED" else "red" if status == "FAILED" else "yellow"
        decimals = spec.token(symbol).decimals  # type: ignore[attr-defined]
        table.add_row(transaction_id, symbol, format_amount(amount, decimals), f"[{colour}]{status}[/]",
                      reason or "", (tx_hash or "")[:12], str(confirmations))
    console.print(table)
    recon = Table("asset", "db balance", "chain balance", "locked", "match", title="reconciliation")
    for row in result.reconciliation:
        recon.add_row(row["asset"], row["db"], row["chain"], row["locked"], row["ok"])
    console.print(recon)
    example = rows[0][0] if rows else "TX_ID"
    console.print("inspect a transfer (the demo's database stays in its work folder):")
    console.print(f"  PARATRO_DATABASE_URL={database_url} PARATRO_CHAIN_REGISTRY=devnet .venv/bin/paratro show {example}",
                  soft_wrap=True, highlight=False)
