"""The pipeline end to end: funded source accounts, a burst of transfers, a paced run.

A burst submits N transfers at once (through `workers.services.submit_transfer`, as the CLI and
the API's service layer do) rotating over the source accounts, and waits until every one is final.
Its throughput is confirmed transfers / (last `finalized_at` - first `created_at`), both read from
the database, the source of truth. Several sources spread the work over accounts; one source is an
exchange's hot wallet, every transfer of the burst in flight from one account at once (EVM: nonces
allocated back to back).

A paced run submits at a fixed rate (half the saturating one, from the burst) and reports creation
to broadcast: the first BROADCAST stage event's time minus the transfer's `created_at`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.report import percentile

POLL_S = 0.25
PROGRESS_EVERY_S = 3.0


@dataclass(frozen=True)
class FamilyPlan:
    """What one chain family sends in the benchmark (the native token: every family has one)."""

    chain: str
    symbol: str
    amount: str  # per transfer, token units
    funding_per_transfer: str  # token units given to a source per transfer it will send (fees included)
    output_per_transfer: bool = False  # UTXO chains: fund one output per transfer, so all can be in flight


PLANS: dict[str, FamilyPlan] = {
    "ethereum": FamilyPlan("ethereum", "ETH", "0.001", "0.01"),
    "tron": FamilyPlan("tron", "TRX", "1", "5"),
    "bitcoin": FamilyPlan("bitcoin", "BTC", "0.0001", "0.001", output_per_transfer=True),
    "solana": FamilyPlan("solana", "SOL", "0.01", "0.02"),
}


@dataclass(frozen=True)
class Source:
    address: str
    asset_id: str


@dataclass
class BurstResult:
    label: str
    chain: str
    sources: int
    transfers: int
    statuses: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0  # first created_at -> last finalized_at
    creation_seconds: float = 0.0  # submitting them all (this process)
    broadcast_ms: list[float] = field(default_factory=list)  # creation -> broadcast, per transfer
    costs: Any = None  # bench.counters.Sample over the burst

    @property
    def confirmed(self) -> int:
        return self.statuses.get("CONFIRMED", 0)

    @property
    def complete(self) -> bool:
        return self.confirmed == self.transfers

    @property
    def transfers_per_s(self) -> float:
        return self.confirmed / self.seconds if self.seconds > 0 else 0.0


def new_client(ctx: Any, name: str) -> str:
    from pipeline import credentials

    with ctx.db.unit_of_work() as session:
        client, _secret = credentials.create_client(session, credentials.secret_box(), name)
        return str(client.client_id)


def fund_sources(ctx: Any, node: Any, client_id: str, plan: FamilyPlan, transfers_each: Sequence[int]) -> list[Source]:
    """One wallet per entry of `transfers_each`, funded on its devnet for that many transfers and
    credited to the ledger with exactly what the chain shows (as the demo's faucet does)."""
    from pipeline import ledger
    from pipeline.amounts import parse_amount
    from workers.services import onboard_wallet

    token = ctx.registry.chain(plan.chain).token(plan.symbol)
    per_transfer = parse_amount(plan.funding_per_transfer, token.decimals)
    wallets = [onboard_wallet(ctx, client_id, f"bench {plan.chain} {i}", {plan.chain: [plan.symbol]})
               for i in range(len(transfers_each))]
    addresses = [w.accounts[plan.chain] for w in wallets]

    for address, count in zip(addresses, transfers_each):  # one faucet account per node: one payment at a time
        for amount in ([per_transfer] * count if plan.output_per_transfer else [per_transfer * count]):
            node.fund(address, token, amount)
    adapter = ctx.adapter_for(plan.chain)
    sources = []
    for wallet, address in zip(wallets, addresses):
        asset_id = wallet.assets[(plan.chain, plan.symbol)]
        with ctx.db.unit_of_work() as session:
            ledger.credit(session, asset_id, adapter.balance_of(address, token), reference="bench-faucet")
        sources.append(Source(address, asset_id))
    return sources


def transfer_requests(ctx: Any, client_id: str, plan: FamilyPlan, sources: Sequence[Source], count: int,
                      label: str) -> list[Any]:
    """`count` transfer requests to fresh addresses, rotating over `sources` (keys `label`-i)."""
    from pipeline.transfers import TransferRequest
    from workers.services import fresh_destination

    return [TransferRequest(client_id=client_id, from_address=sources[i % len(sources)].address,
                            to_address=fresh_destination(ctx, plan.chain), chain=plan.chain, token_symbol=plan.symbol,
                            amount=plan.amount, idempotency_key=f"{label}-{i}") for i in range(count)]


def run_burst(ctx: Any, client_id: str, plan: FamilyPlan, sources: Sequence[Source], count: int, label: str,
              measure: Callable[[], Any], say: Callable[[str], None], timeout_s: float) -> BurstResult:
    """Submit `count` transfers at once and wait for all of them to be final; `measure()` samples
    the counters before and after."""
    from workers.services import submit_transfer

    requests = transfer_requests(ctx, client_id, plan, sources, count, label)
    result = BurstResult(label, plan.chain, len(sources), count)
    before = measure()
    started = time.monotonic()
    ids = [submit_transfer(ctx, request).transaction_id for request in requests]
    result.creation_seconds = time.monotonic() - started
    wait_final(ctx, ids, timeout_s, say, label)
    result.costs = measure().minus(before)
    _read_outcome(ctx, ids, result)
    return result


def run_paced(ctx: Any, client_id: str, plan: FamilyPlan, sources: Sequence[Source], count: int, rate_per_s: float,
              label: str, say: Callable[[str], None], timeout_s: float) -> BurstResult:
    """Submit `count` transfers at `rate_per_s`, evenly spaced; wait for all to be final."""
    from workers.services import submit_transfer

    requests = transfer_requests(ctx, client_id, plan, sources, count, label)
    result = BurstResult(label, plan.chain, len(sources), count)
    interval = 1.0 / rate_per_s
    started = time.monotonic()
    ids = []
    for i, request in enumerate(requests):
        pause = started + i * interval - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        ids.append(submit_transfer(ctx, request).transaction_id)
    result.creation_seconds = time.monotonic() - started
    wait_final(ctx, ids, timeout_s, say, label)
    _read_outcome(ctx, ids, result)
    return result


def wait_final(ctx: Any, ids: Sequence[str], timeout_s: float, say: Callable[[str], None], label: str) -> Counter[str]:
    """Poll the database until every transfer is final or `timeout_s` passes; stages at the end."""
    from sqlalchemy import func, select

    from pipeline.models import Transaction

    deadline = time.monotonic() + timeout_s
    shown = time.monotonic()
    while True:
        with ctx.db.reading() as session:  # the bench's polling must not take the workers' write lock
            stages = Counter(dict(session.execute(
                select(Transaction.stage, func.count()).where(Transaction.transaction_id.in_(ids))
                .group_by(Transaction.stage)).tuples().all()))
        final = stages.get("CONFIRMED", 0) + stages.get("FAILED", 0)
        if final == len(ids):
            return stages
        if time.monotonic() > deadline:
            say(f"{label}: gave up after {timeout_s:.0f} s with {len(ids) - final} not final: {dict(stages)}")
            return stages
        if time.monotonic() - shown >= PROGRESS_EVERY_S:
            pending = ", ".join(f"{stage} {n}" for stage, n in sorted(stages.items()) if stage not in ("CONFIRMED", "FAILED"))
            say(f"{label}: {final}/{len(ids)} final ({pending})")
            shown = time.monotonic()
        time.sleep(POLL_S)


def _read_outcome(ctx: Any, ids: Sequence[str], result: BurstResult) -> None:
    """Statuses, the span from the first creation to the last finalization, creation -> broadcast."""
    from sqlalchemy import func, select

    from pipeline.models import Transaction, TransactionEvent

    with ctx.db.reading() as session:
        rows = session.execute(select(Transaction.status, Transaction.created_at, Transaction.finalized_at)
                               .where(Transaction.transaction_id.in_(ids))).tuples().all()
        broadcast = session.execute(
            select(Transaction.created_at, func.min(TransactionEvent.at))
            .join(TransactionEvent, TransactionEvent.transaction_id == Transaction.transaction_id)
            .where(Transaction.transaction_id.in_(ids), TransactionEvent.to_stage == "BROADCAST")
            .group_by(Transaction.transaction_id, Transaction.created_at)).tuples().all()
    result.statuses = Counter(status for status, _, _ in rows)
    finished = [final for _, _, final in rows if final is not None]
    if rows and finished:
        result.seconds = (max(finished) - min(created for _, created, _ in rows)).total_seconds()
    result.broadcast_ms = sorted((at - created).total_seconds() * 1000 for created, at in broadcast)


def latency_summary(result: BurstResult) -> dict[str, float | None]:
    values = result.broadcast_ms
    return {"p50_ms": _round(percentile(values, 50)), "p99_ms": _round(percentile(values, 99))}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
