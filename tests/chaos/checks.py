"""The verdict of a chaos run, from the devnets (what really moved) and the database.

- every accepted transfer is final; none is missing;
- per transfer, at most one on-chain transaction moved its value: every transfer paid a fresh
  address, so its balance on the devnet (asked directly, not through a fault proxy) must be
  exactly the amount for CONFIRMED and 0 for FAILED; more is a double payment, less (or value
  behind a FAILED) is lost money;
- the outcome is the expected one (CONFIRMED, or the planned failure reason);
- every asset's DB balance equals its devnet balance, and nothing is left locked (no locked
  balance, no UTXO reservation);
- every stage change has its event: the events of a transfer form one continuous path of allowed
  transitions from RECEIVED to its current stage, and every note sits at the stage of its time;
- a repeated idempotency key gave back the same transfer, and a reused key with different fields
  was refused, creating nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy import func, select

from tests.chaos.workload import Workload


@dataclass
class Violation:
    transaction_id: str | None
    kind: str
    what: str

    def __str__(self) -> str:
        return f"violation [{self.kind}] {self.transaction_id or '-'}: {self.what}"


@dataclass
class Verdict:
    transfers: int
    lost: int = 0
    doubled: int = 0
    ledger_ok: bool = True
    locked: int = 0
    pending: int = 0
    confirmed: int = 0
    failed: int = 0
    violations: list[Violation] = field(default_factory=list)

    def add(self, transaction_id: str | None, kind: str, what: str) -> None:
        self.violations.append(Violation(transaction_id, kind, what))


def _retrying(fn: Callable[[], Any], attempts: int = 5) -> Any:
    for attempt in range(attempts):
        try:
            return fn()
        except Exception:  # noqa: BLE001 - a check must not die of one transient error
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)


def check_all(ctx: Any, workload: Workload, adapter: Callable[[str], Any]) -> Verdict:
    verdict = Verdict(transfers=len(workload.planned))
    _check_transfers(ctx, workload, adapter, verdict)
    _check_ledger(ctx, workload, adapter, verdict)
    _check_events(ctx, workload, verdict)
    return verdict


def _check_transfers(ctx: Any, workload: Workload, adapter: Callable[[str], Any], verdict: Verdict) -> None:
    from pipeline.models import Transaction

    def load() -> dict[str, Transaction]:
        with ctx.db.unit_of_work() as session:
            rows = session.scalars(select(Transaction).where(Transaction.client_id == workload.client_id)).all()
            return {row.transaction_id: row for row in rows}

    rows = _retrying(load)
    accepted = {item.transaction_id for item in workload.planned if item.transaction_id}
    for extra in sorted(set(rows) - accepted):
        verdict.add(extra, "idempotency", f"a transfer nobody asked for (key {rows[extra].idempotency_key})")
    for item in workload.planned:
        label = f"{item.chain} {item.amount or '?'} {item.symbol} -> {item.to_address} ({item.key})"
        if item.transaction_id is None:
            verdict.lost += 1
            verdict.add(None, "lost", f"{label}: never accepted: {item.error}")
            continue
        row = rows.get(item.transaction_id)
        if row is None:
            verdict.lost += 1
            verdict.add(item.transaction_id, "lost", f"{label}: accepted but not in the database")
            continue
        outcome = "CONFIRMED" if row.status == "CONFIRMED" else row.failure_reason or row.status
        if row.status == "PENDING":
            verdict.pending += 1
            verdict.lost += 1
            verdict.add(item.transaction_id, "lost", f"{label}: still PENDING at {row.stage}"
                        f"{' (held)' if row.held_at else ''}; last error: {row.last_error}")
        elif row.status == "CONFIRMED":
            verdict.confirmed += 1
        else:
            verdict.failed += 1
        if row.status != "PENDING" and outcome != item.expect:
            verdict.add(item.transaction_id, "outcome", f"{label}: ended {outcome} ({row.failure_detail or ''}), "
                        f"expected {item.expect}"[:400])
        if item.expect == "invalid_destination":
            continue  # no address to look at
        token = ctx.registry.chain(item.chain).token(item.symbol)
        try:
            received = _retrying(lambda: adapter(item.chain).balance_of(item.to_address, token))
        except Exception as exc:  # noqa: BLE001
            verdict.add(item.transaction_id, "scan", f"{label}: cannot read the destination's balance: {exc}")
            continue
        amount = row.amount
        if received > amount:
            verdict.doubled += 1
            verdict.add(item.transaction_id, "doubled", f"{label}: {row.status} at {row.stage}, the destination "
                        f"received {received} base units for an amount of {amount} (tx {row.tx_hash}, "
                        f"{row.replacement_count} replacements, {row.broadcast_count} broadcasts)")
        elif row.status == "CONFIRMED" and received < amount:
            verdict.lost += 1
            verdict.add(item.transaction_id, "lost", f"{label}: CONFIRMED but the destination holds {received} of "
                        f"{amount} base units (tx {row.tx_hash})")
        elif row.status == "FAILED" and received > 0:
            verdict.lost += 1
            verdict.add(item.transaction_id, "lost", f"{label}: FAILED ({row.failure_reason}) but the destination "
                        f"received {received} base units (tx {row.tx_hash})")
    for repeat in workload.repeats:
        item = workload.planned[repeat.of]
        wanted = "refused" if repeat.conflicting else "same"
        if repeat.outcome != wanted:
            verdict.add(item.transaction_id, "idempotency",
                        f"key {item.key} submitted again ({'different' if repeat.conflicting else 'same'} request): "
                        f"{repeat.outcome}, expected {wanted}")


def _check_ledger(ctx: Any, workload: Workload, adapter: Callable[[str], Any], verdict: Verdict) -> None:
    from pipeline.models import UtxoReservation
    from workers.services import asset_rows

    for wallet in workload.wallets:
        for account, asset in _retrying(lambda: asset_rows(ctx, wallet.wallet_id)):
            token = ctx.registry.chain(account.chain).token(asset.symbol)
            on_chain = _retrying(lambda: adapter(account.chain).balance_of(account.address, token))
            name = f"{account.chain}:{asset.symbol} of {account.address}"
            if on_chain != asset.balance:
                verdict.ledger_ok = False
                verdict.add(None, "ledger", f"{name}: DB balance {asset.balance}, devnet {on_chain} "
                            f"(difference {asset.balance - on_chain} base units)")
            if asset.locked_balance != 0:
                verdict.locked += 1
                verdict.add(None, "locked", f"{name}: {asset.locked_balance} base units still locked")

    def reservations() -> list[tuple[str, str]]:
        with ctx.db.unit_of_work() as session:
            return list(session.execute(select(UtxoReservation.transaction_id, UtxoReservation.outpoint)).tuples())

    for transaction_id, outpoint in _retrying(reservations):
        verdict.locked += 1
        verdict.add(transaction_id, "locked", f"UTXO {outpoint} still reserved")


def _check_events(ctx: Any, workload: Workload, verdict: Verdict) -> None:
    from pipeline.models import Transaction, TransactionEvent
    from pipeline.stages import FINAL, TRANSITIONS, Stage

    def load() -> tuple[dict[str, str], dict[str, list[tuple[str | None, str, str | None]]]]:
        with ctx.db.unit_of_work() as session:
            stages = dict(session.execute(select(Transaction.transaction_id, Transaction.stage)
                                          .where(Transaction.client_id == workload.client_id)).tuples().all())
            events: dict[str, list[tuple[str | None, str, str | None]]] = defaultdict(list)
            rows = session.execute(
                select(TransactionEvent.transaction_id, TransactionEvent.from_stage, TransactionEvent.to_stage,
                       TransactionEvent.reason)
                .join(Transaction, Transaction.transaction_id == TransactionEvent.transaction_id)
                .where(Transaction.client_id == workload.client_id).order_by(TransactionEvent.id)).tuples()
            for transaction_id, from_stage, to_stage, reason in rows:
                events[transaction_id].append((from_stage, to_stage, reason))
            return stages, events

    stages, events = _retrying(load)
    for transaction_id, stage in stages.items():
        problems = []
        current: str | None = None
        finals = 0
        for n, (from_stage, to_stage, reason) in enumerate(events.get(transaction_id, [])):
            if n == 0:
                if from_stage is not None or to_stage != Stage.RECEIVED.value:
                    problems.append(f"first event {from_stage} -> {to_stage}, not the creation -> RECEIVED")
                current = to_stage
                continue
            if from_stage == to_stage:  # a note (rebroadcast, re-drive, retries exhausted)
                if from_stage != current:
                    problems.append(f"note {reason!r} at {from_stage} while the transfer was at {current}")
                continue
            if from_stage != current:
                problems.append(f"event {from_stage} -> {to_stage} ({reason}) while the transfer was at {current}")
            try:
                if Stage(to_stage) not in TRANSITIONS[Stage(from_stage)]:
                    problems.append(f"event {from_stage} -> {to_stage} is not an allowed transition")
            except (ValueError, KeyError):
                problems.append(f"event with unknown stages {from_stage} -> {to_stage}")
            if to_stage in {s.value for s in FINAL}:
                finals += 1
            current = to_stage
        if current != stage:
            problems.append(f"the events end at {current}, the transfer is at {stage} (a stage change without its event)")
        if finals > 1:
            problems.append(f"{finals} events into a final stage")
        for problem in problems:
            verdict.add(transaction_id, "events", problem)


def count_transfers(ctx: Any, client_id: str) -> dict[str, int]:
    """Status -> count for the client's transfers (progress lines)."""
    from pipeline.models import Transaction

    with ctx.db.unit_of_work() as session:
        return dict(session.execute(select(Transaction.stage, func.count()).where(Transaction.client_id == client_id)
                                    .group_by(Transaction.stage)).tuples().all())
