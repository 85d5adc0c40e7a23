"""`make demo` / `paratro demo`: real transfers through the real stack, watched live, reconciled.

Starts the embedded stack (redis-server, a devnet node per chain, SQLite, a prefork worker with
the sweeper and the webhook dispatcher) and the HTTP API, onboards a client and one wallet with an
account on every chain, funds the addresses with the devnet faucets and credits the same amounts
to the ledger, points the client's webhook at a local receiver that verifies every signature, and
submits a mix of transfers on every chain (every other one through the HTTP API with the shipped
client, the rest through the Python service) including expected failures and a repeated
idempotency key, and shows them move until every one is final. Then it waits for each transfer's
webhooks (created, then confirmed or failed), reconciles every asset against its chain and exits
0 only if every outcome, every webhook signature and every balance holds.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.live import Live
from rich.table import Table
from sqlalchemy import func, select

from paratro.demo_plan import PLANS, distribute

WEBHOOKS_WITHIN_S = 30.0  # after the last transfer is final: the dispatcher's relay runs every second
FINAL_EVENTS = ("transaction.confirmed", "transaction.failed")


@dataclass(frozen=True)
class DemoOptions:
    transfers: int = 20
    json_only: bool = False
    block_time: float = 0.5
    concurrency: int = 4
    chains: tuple[str, ...] = ()  # default: every chain whose family has a devnet node
    workdir: Path | None = None


@dataclass(frozen=True)
class PlannedTransfer:
    chain: str
    key: str
    symbol: str
    amount: str
    to_address: str
    expect: str  # "CONFIRMED" or a failure reason


@dataclass
class DemoResult:
    per_chain: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    mismatches: list[str] = field(default_factory=list)
    reconciliation: list[dict[str, str]] = field(default_factory=list)
    webhooks: dict[str, int] = field(default_factory=lambda: {"delivered": 0, "signature_ok": 0})

    def total(self, status: str) -> int:
        return sum(counts[status] for counts in self.per_chain.values())


def default_chains() -> tuple[str, ...]:
    from chains.registry import load_registry
    from devnet.nodes import SUPPORTED_FAMILIES

    registry = load_registry("devnet")
    return tuple(c for c in PLANS if registry.chain(c).family in SUPPORTED_FAMILIES)


def run_demo(options: DemoOptions) -> bool:
    from workers.stack import EmbeddedStack, StackOptions, project_home

    chains = options.chains or default_chains()
    distribute(chains, options.transfers)  # refuses too few transfers before anything starts
    started = time.monotonic()
    workdir = options.workdir or project_home() / "var" / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    say: Callable[..., None] = (lambda *_: None) if options.json_only else _console_print
    say(f"[bold]paratro demo[/]: starting redis-server, devnet nodes for {', '.join(chains)}, SQLite and a Celery "
        f"worker in {workdir}")
    with EmbeddedStack(StackOptions(workdir=workdir, chains=chains, block_time=options.block_time,
                                    concurrency=options.concurrency)) as stack:
        nodes = ", ".join(f"{chain} {node.rpc_url}" for chain, node in stack.nodes.items())
        say(f"stack up in {time.monotonic() - started:.1f} s: redis {stack.env['PARATRO_BROKER_URL']}; {nodes}")
        result = _run(options, chains, stack, say)
        say("stopping the worker, the devnet nodes and redis-server")
    ok = not result.mismatches
    summary = {
        "confirmed": result.total("CONFIRMED"),
        "failed": result.total("FAILED"),
        "pending": result.total("PENDING"),
        "seconds": round(time.monotonic() - started, 1),
        "transfers": options.transfers,
        "chains": {chain: {"confirmed": counts["CONFIRMED"], "failed": counts["FAILED"]}
                   for chain, counts in result.per_chain.items()},
        "reconciled": all(row["ok"] == "yes" for row in result.reconciliation),
        "webhooks": result.webhooks,
        "ok": ok,
    }
    for problem in result.mismatches:
        say(f"[red]mismatch:[/] {problem}")
    print(json.dumps(summary), flush=True)
    return ok


def _console_print(*args: object) -> None:
    from workers.display import console

    console.print(*args)


def plan_transfers(chains: tuple[str, ...], transfers: int, fresh_address: Callable[[str], str]) -> list[PlannedTransfer]:
    """Happy transfers round-robin over each chain's sends, failures spread through the list."""
    happy = distribute(chains, transfers)
    plan: list[PlannedTransfer] = []
    for chain in chains:
        sends = PLANS[chain].sends
        for i in range(happy[chain]):
            symbol, amount = sends[i % len(sends)]
            plan.append(PlannedTransfer(chain, f"demo-{chain}-{i:04d}", symbol, amount, fresh_address(chain), "CONFIRMED"))
    for chain in chains:
        for j, failure in enumerate(PLANS[chain].failures):
            planned = PlannedTransfer(chain, f"demo-{chain}-{failure.name}", failure.symbol, failure.amount,
                                      failure.to(fresh_address(chain)), failure.reason)
            plan.insert(min(len(plan), 2 + 5 * j + len(plan) // 3), planned)
    return plan


def _run(options: DemoOptions, chains: tuple[str, ...], stack: Any, say: Callable[..., None]) -> DemoResult:
    from api.receiver import WebhookReceiver
    from api.server import serve_in_thread
    from api.app import create_app

    server = serve_in_thread(create_app(), host="127.0.0.1", port=0)
    try:
        with WebhookReceiver() as receiver:
            return _run_with_api(options, chains, stack, say, server.base_url, receiver)
    finally:
        server.stop()


def _run_with_api(options: DemoOptions, chains: tuple[str, ...], stack: Any, say: Callable[..., None],
                  base_url: str, receiver: Any) -> DemoResult:
    from api.client import ParatroClient
    from pipeline import credentials, ledger
    from pipeline.amounts import parse_amount
    from pipeline.models import Transaction
    from workers import runtime
    from workers.services import fresh_destination, onboard_wallet

    ctx = runtime.context()
    with ctx.db.unit_of_work() as session:
        client, secret = credentials.create_client(session, credentials.secret_box(), "Demo Exchange Ltd")
        client_id, api_key = client.client_id, client.api_key_id
    api = ParatroClient(base_url + "/api/v1", api_key, secret)
    receiver.secret = api.set_webhook(receiver.url)["secret"]
    say(f"API at {base_url}/api/v1; webhooks to {receiver.url} (every signature checked)")
    wallet = onboard_wallet(ctx, client_id, "demo hot wallet", {c: list(PLANS[c].funding) for c in chains})
    for chain in chains:
        plan, spec, address = PLANS[chain], ctx.registry.chain(chain), wallet.accounts[chain]
        funding = ", ".join(f"{amount} {symbol}" for symbol, amount in plan.funding.items())
        say(f"{chain}: account {address}, faucet {funding}")
        for symbol, amount in plan.funding.items():
            token = spec.token(symbol)
            total = parse_amount(amount, token.decimals)
            chunk = total // plan.funding_chunks
            for i in range(plan.funding_chunks):
                stack.nodes[chain].fund(address, token, chunk if i < plan.funding_chunks - 1 else total - chunk * i)
        # The ledger is credited with exactly what the chain shows: a deposit.
        with ctx.db.unit_of_work() as session:
            for symbol in plan.funding:
                on_chain = ctx.adapter_for(chain).balance_of(address, spec.token(symbol))
                ledger.credit(session, wallet.assets[(chain, symbol)], on_chain, reference="devnet-faucet")

    planned = plan_transfers(chains, options.transfers, lambda chain: fresh_destination(ctx, chain))
    ids: dict[str, PlannedTransfer] = {}
    for i, item in enumerate(planned):
        ids[_submit(ctx, api if i % 2 == 0 else None, client_id, wallet.accounts[item.chain], item)[0]] = item
    # The same request again (a client retrying after a timeout) must not create a second transfer.
    first = planned[0]
    repeat_id, repeat_created = _submit(ctx, api, client_id, wallet.accounts[first.chain], first)
    result = DemoResult()
    if repeat_created or repeat_id not in ids:
        result.mismatches.append("a repeated idempotency key created a second transfer")
    say(f"submitted {len(planned)} transfers on {len(chains)} chains, {(len(planned) + 1) // 2} of them through the "
        f"HTTP API (+1 repeat of {first.key} -> the same {repeat_id})")

    _watch(ctx, list(ids), options)

    with ctx.db.unit_of_work() as session:
        txs = session.scalars(select(Transaction).where(Transaction.client_id == client_id)).all()
        total = session.scalar(select(func.count()).select_from(Transaction)) or 0
        rows = [(t.transaction_id, t.chain, t.token_symbol, t.amount, t.status, t.failure_reason, t.tx_hash,
                 t.confirmations) for t in txs]
    if total != len(planned):
        result.mismatches.append(f"{total} transactions in the database for {len(planned)} distinct requests")
    for transaction_id, chain, _sym, _amt, status, reason, _hash, _conf in rows:
        result.per_chain[chain][status] += 1
        expected = ids[transaction_id].expect
        got = "CONFIRMED" if status == "CONFIRMED" else (reason or status)
        if got != expected:
            result.mismatches.append(f"{transaction_id} ({ids[transaction_id].key}) ended {got}, expected {expected}")
    result.webhooks = _check_webhooks(receiver, list(ids), result.mismatches)
    result.reconciliation = _reconcile(ctx, wallet.wallet_id)
    for row in result.reconciliation:
        if row["ok"] != "yes":
            result.mismatches.append(f"reconciliation failed for {row['asset']}: db {row['db']} chain {row['chain']} "
                                     f"locked {row['locked']}")
    if not options.json_only:
        _print_summary(ctx, rows, result)
    return result


def _submit(ctx: Any, api: Any, client_id: str, from_address: str, item: PlannedTransfer) -> tuple[str, bool]:
    """One planned transfer, through the HTTP API when `api` is given, else the Python service;
    (transaction id, created)."""
    from pipeline.transfers import TransferRequest
    from workers.services import submit_transfer

    if api is not None:  # 201 created, 200 the same request again
        body = {"from_address": from_address, "to_address": item.to_address, "chain": item.chain,
                "token_symbol": item.symbol, "amount": item.amount}
        response = api.request("POST", "transactions", body, headers={"Idempotency-Key": item.key})
        response.raise_for_status()
        return response.json()["transaction_id"], response.status_code == 201
    submission = submit_transfer(ctx, TransferRequest(
        client_id=client_id, from_address=from_address, to_address=item.to_address, chain=item.chain,
        token_symbol=item.symbol, amount=item.amount, idempotency_key=item.key))
    return submission.transaction_id, submission.created


def _check_webhooks(receiver: Any, transaction_ids: list[str], mismatches: list[str]) -> dict[str, int]:
    """Every transfer's webhooks arrived, signed: transaction.pending, then its final status."""
    def complete(received: Any) -> bool:
        return all(len(received.of_resource(t)) >= 2 for t in transaction_ids)

    receiver.wait_for(complete, WEBHOOKS_WITHIN_S)
    got = receiver.received
    for transaction_id in transaction_ids:
        types = [event["type"] for event in got.of_resource(transaction_id)]
        if types[:1] != ["transaction.pending"] or len(types) < 2 or types[-1] not in FINAL_EVENTS:
            mismatches.append(f"{transaction_id}: webhooks {types or 'none'}, expected transaction.pending then "
                              "transaction.confirmed or transaction.failed")
    if got.signature_bad:
        mismatches.append(f"{got.signature_bad} webhook deliveries failed signature verification")
    return {"delivered": len(got.events), "signature_ok": got.signature_ok}


def _watch(ctx: Any, transaction_ids: list[str], options: DemoOptions) -> None:
    """Poll the database (the source of truth) until every transfer is final or time runs out."""
    from pipeline.models import Transaction
    from workers.display import live_view, stage_progress

    deadline = time.monotonic() + 120 + 1.5 * len(transaction_ids)
    progress = stage_progress(len(transaction_ids))
    bar = progress.add_task("final", total=len(transaction_ids))
    live = None if options.json_only else Live(live_view(progress, Counter()), refresh_per_second=8)
    try:
        if live:
            live.start()
        while True:
            with ctx.db.unit_of_work() as session:
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


def _reconcile(ctx: Any, wallet_id: str) -> list[dict[str, str]]:
    """Every asset: DB balance == chain balance (fees included) and nothing left locked."""
    from pipeline.amounts import format_amount
    from workers.services import asset_rows

    report = []
    for account, asset in asset_rows(ctx, wallet_id):
        token = ctx.registry.chain(account.chain).token(asset.symbol)
        on_chain = ctx.adapter_for(account.chain).balance_of(account.address, token)
        ok = on_chain == asset.balance and asset.locked_balance == 0
        report.append({"asset": f"{account.chain}:{asset.symbol}", "db": format_amount(asset.balance, asset.decimals),
                       "chain": format_amount(on_chain, asset.decimals),
                       "locked": format_amount(asset.locked_balance, asset.decimals), "ok": "yes" if ok else "NO"})
    return report


def _print_summary(ctx: Any, rows: list[tuple], result: DemoResult) -> None:
    from pipeline.amounts import format_amount
    from workers.display import console

    table = Table(title="transfers")
    for column in ("transaction", "chain", "token", "amount", "status", "reason", "tx hash", "conf"):
        table.add_column(column, no_wrap=column in ("transaction", "tx hash"))
    shown = rows if len(rows) <= 40 else [r for r in rows if r[4] != "CONFIRMED"] + rows[:20]
    for transaction_id, chain, symbol, amount, status, reason, tx_hash, confirmations in shown:
        colour = "green" if status == "CONFIRMED" else "red" if status == "FAILED" else "yellow"
        decimals = ctx.registry.chain(chain).token(symbol).decimals
        table.add_row(transaction_id, chain, symbol, format_amount(amount, decimals), f"[{colour}]{status}[/]",
                      reason or "", (tx_hash or "")[:12], str(confirmations))
    console.print(table)
    per_chain = Table("chain", "confirmed", "failed", "pending", title="per chain")
    for chain, counts in result.per_chain.items():
        per_chain.add_row(chain, str(counts["CONFIRMED"]), str(counts["FAILED"]), str(counts["PENDING"]))
    console.print(per_chain)
    recon = Table("asset", "db balance", "chain balance", "locked", "match", title="reconciliation")
    for row in result.reconciliation:
        recon.add_row(row["asset"], row["db"], row["chain"], row["locked"], row["ok"])
    console.print(recon)
    example = rows[0][0] if rows else "TX_ID"
    console.print("inspect a transfer (the demo's database stays in its work folder):")
    console.print(f"  PARATRO_DATABASE_URL={ctx.db.url} PARATRO_CHAIN_REGISTRY=devnet .venv/bin/paratro show {example}",
                  soft_wrap=True, highlight=False)
