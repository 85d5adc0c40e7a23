"""What one run of `make spike` did, per transfer, read from the database and the devnet nodes
after the drain; and the figures over a group of transfers (stuck, bumped, inclusion, overpaid).

Why per transfer first: every figure of the report (per family, per run, overall) is the same
aggregation over a different group of these facts, and the aggregation is tested without a stack.

Definitions (the module docstring of `bench.spike` repeats them for the reader of the report):
- stuck: not final (CONFIRMED or FAILED) at the end of the drain, or held (`held_at` set);
- bumped: at least one BUMP attempt (`transaction_attempts.kind`); bump attempts: all of them;
- inclusion: first send -> the first `transaction_events` row to CONFIRMING (or to CONFIRMED,
  when the tracker first saw it already at depth). The first send is the earlier of
  `transactions.broadcast_at` (the first send a node accepted) and the first attempt's `sent_at`
  (committed before its send RPC): a first send refused as underpriced, then bumped, counts from
  the refused send;
- overpaid: (paid - minimum) / minimum of the landed transaction, where EVM paid = receipt
  gasUsed x effectiveGasPrice and minimum = gasUsed x (the inclusion block's baseFeePerGas + the
  ORIGINAL attempt's maxPriorityFeePerGas); Bitcoin paid = `fee_paid` and minimum = vsize (of the
  landed attempt's signed bytes) x the rate blocks required when it was mined (`SpikeWindow`).
  Wei and satoshi stay integers; each transfer's ratio is an exact fraction, averaged exactly,
  turned into a percentage with two decimals only at the end.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

from bench.report import percentile

FINAL = ("CONFIRMED", "FAILED")
INCLUDED_STAGES = ("CONFIRMING", "CONFIRMED")


@dataclass(frozen=True)
class SpikeWindow:
    """Which Bitcoin blocks were mined under the fee-rate spike: heights in (first_after, last]
    certainly were (`first_after` read just after the spike began, `last` just before it ended);
    a block at either edge may not have been, so it counts as normal (a transfer in it can only
    look more overpaid, never less)."""

    first_after: int
    last: int | None  # None: the spike had not ended when the figures were read
    spike_sat_vb: int
    normal_sat_vb: int

    def required_sat_vb(self, height: int) -> int:
        under = height > self.first_after and (self.last is None or height <= self.last)
        return self.spike_sat_vb if under else self.normal_sat_vb


@dataclass(frozen=True)
class TransferFacts:
    """One transfer after the drain."""

    transaction_id: str
    chain: str
    status: str  # PENDING, CONFIRMED, FAILED
    stage: str
    held: bool
    bump_attempts: int
    inclusion_s: float | None  # None: never seen included
    paid: int | None  # the landed transaction's fee (wei, sat); None unless CONFIRMED
    minimum: int | None  # what the chain required when it was included
    failure: str | None = None  # failure_reason (FAILED) or last_error (stuck)

    @property
    def stuck(self) -> bool:
        return self.status not in FINAL or self.held


def inclusion_seconds(broadcast_at: datetime | None, events: Iterable[tuple[str, datetime]]) -> float | None:
    """First send -> the first event into CONFIRMING, else into CONFIRMED (None: neither)."""
    if broadcast_at is None:
        return None
    firsts: dict[str, datetime] = {}
    for stage, at in events:
        if stage in INCLUDED_STAGES and (stage not in firsts or at < firsts[stage]):
            firsts[stage] = at
    seen = firsts.get("CONFIRMING") or firsts.get("CONFIRMED")
    return None if seen is None else max((seen - broadcast_at).total_seconds(), 0.0)


def evm_minimum(gas_used: int, base_fee: int, original_tip: int) -> int:
    return gas_used * (base_fee + original_tip)


def overpaid_fraction(paid: int, minimum: int) -> Fraction:
    """(paid - minimum) / minimum, exactly."""
    if minimum <= 0:
        raise ValueError(f"a minimum fee must be positive, got {minimum}")
    return Fraction(paid - minimum, minimum)


def overpaid_fractions(facts: Iterable[TransferFacts]) -> list[Fraction]:
    return [overpaid_fraction(f.paid, f.minimum) for f in facts if f.paid is not None and f.minimum]


def mean_overpaid_pct(facts: Iterable[TransferFacts]) -> float | None:
    """The exact mean of the transfers' overpaid fractions, as a percentage (2 decimals)."""
    fractions = overpaid_fractions(facts)
    return _pct(sum(fractions, Fraction(0)) / len(fractions)) if fractions else None


def max_overpaid_pct(facts: Iterable[TransferFacts]) -> float | None:
    fractions = overpaid_fractions(facts)
    return _pct(max(fractions)) if fractions else None


def _pct(fraction: Fraction) -> float:
    return round(float(fraction * 100), 2)


def group_figures(facts: Sequence[TransferFacts]) -> dict[str, Any]:
    """The report's figures over one group of transfers."""
    inclusion = [f.inclusion_s for f in facts if f.inclusion_s is not None]
    return {
        "transfers": len(facts),
        "confirmed": sum(f.status == "CONFIRMED" for f in facts),
        "failed": sum(f.status == "FAILED" for f in facts),
        "stuck": sum(f.stuck for f in facts),
        "held": sum(f.held for f in facts),
        "bumped": sum(f.bump_attempts > 0 for f in facts),
        "bump_attempts": sum(f.bump_attempts for f in facts),
        "included": len(inclusion),
        "p50_inclusion_s": _seconds(percentile(inclusion, 50)),
        "p95_inclusion_s": _seconds(percentile(inclusion, 95)),
        "max_inclusion_s": _seconds(max(inclusion) if inclusion else None),
        "overpaid_fee_pct": mean_overpaid_pct(facts),
        "overpaid_fee_pct_bumped": mean_overpaid_pct(f for f in facts if f.bump_attempts),
        "overpaid_fee_pct_max": max_overpaid_pct(facts),
    }


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def original_tip(fee_params: str | None) -> int:
    """maxPriorityFeePerGas of an attempt's stored quote (a legacy gasPrice transaction: 0)."""
    params = json.loads(fee_params or "{}").get("params", {})
    return int(params.get("maxPriorityFeePerGas", 0))


# --- reading them -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    transaction_id: str
    chain: str
    status: str
    stage: str
    held: bool
    broadcast_at: datetime | None
    tx_hash: str | None
    block_number: int | None
    fee_paid: int | None
    failure: str | None


@dataclass(frozen=True)
class _Attempt:
    kind: str  # ORIGINAL, BUMP, RESIGN, NOOP
    tx_hash: str
    fee_params: str | None
    signed_payload: bytes
    sent_at: datetime | None


def first_send(broadcast_at: datetime | None, attempts: Sequence[_Attempt]) -> datetime | None:
    """The earlier of the first accepted send and the first send of any attempt."""
    sends = [at for at in [broadcast_at, *(a.sent_at for a in attempts)] if at is not None]
    return min(sends) if sends else None


def read_facts(ctx: Any, ids: Sequence[str], evm_rpc_url: str | None,
               window: SpikeWindow | None) -> list[TransferFacts]:
    """Every transfer's facts: its row, events and attempts from the database; EVM receipts and
    blocks from the node itself (not through the benchmark's proxies, one of which is dead)."""
    rows, events, attempts = _read_rows(ctx, ids)
    facts = []
    for row in rows:
        mine = attempts.get(row.transaction_id, [])
        paid, minimum = _fees(row, mine, evm_rpc_url, window)
        facts.append(TransferFacts(
            row.transaction_id, row.chain, row.status, row.stage, row.held, sum(a.kind == "BUMP" for a in mine),
            inclusion_seconds(first_send(row.broadcast_at, mine), events.get(row.transaction_id, [])),
            paid, minimum, row.failure))
    return facts


def _read_rows(ctx: Any, ids: Sequence[str]) -> tuple[list[_Row], dict[str, list[tuple[str, datetime]]],
                                                      dict[str, list[_Attempt]]]:
    from sqlalchemy import select

    from pipeline.models import Transaction, TransactionAttempt, TransactionEvent

    with ctx.db.reading() as session:
        rows = [_Row(t.transaction_id, t.chain, t.status, t.stage, t.held_at is not None, t.broadcast_at, t.tx_hash,
                     t.block_number, t.fee_paid, t.failure_reason or (t.last_error or "")[:200] or None)
                for t in session.scalars(select(Transaction).where(Transaction.transaction_id.in_(ids)))]
        events: dict[str, list[tuple[str, datetime]]] = {}
        for tx_id, stage, at in session.execute(
                select(TransactionEvent.transaction_id, TransactionEvent.to_stage, TransactionEvent.at).where(
                    TransactionEvent.transaction_id.in_(ids), TransactionEvent.to_stage.in_(INCLUDED_STAGES))):
            events.setdefault(tx_id, []).append((stage, at))
        attempts: dict[str, list[_Attempt]] = {}
        for a in session.scalars(select(TransactionAttempt).where(TransactionAttempt.transaction_id.in_(ids))
                                 .order_by(TransactionAttempt.number)):
            found = _Attempt(a.kind, a.tx_hash, a.fee_params, a.signed_payload, a.sent_at)
            attempts.setdefault(a.transaction_id, []).append(found)
    return rows, events, attempts


def _fees(row: _Row, attempts: list[_Attempt], evm_rpc_url: str | None,
          window: SpikeWindow | None) -> tuple[int | None, int | None]:
    """(paid, minimum) of a confirmed transfer's landed transaction; (None, None) otherwise."""
    if row.status != "CONFIRMED" or not row.tx_hash or not attempts:
        return None, None
    if row.chain == "bitcoin":
        landed = next((a.signed_payload for a in attempts if a.tx_hash == row.tx_hash), None)
        if landed is None or window is None or row.block_number is None or row.fee_paid is None:
            return row.fee_paid, None
        from chains.bitcoin_tx import parse_tx

        return row.fee_paid, parse_tx(landed).vsize * window.required_sat_vb(row.block_number)
    if evm_rpc_url is None:
        return row.fee_paid, None
    return _evm_fees(evm_rpc_url, row.tx_hash, original_tip(attempts[0].fee_params))


def _evm_fees(rpc_url: str, tx_hash: str, tip: int) -> tuple[int, int]:
    from devnet.anvil import rpc_call

    receipt = rpc_call(rpc_url, "eth_getTransactionReceipt", [tx_hash])
    block = rpc_call(rpc_url, "eth_getBlockByNumber", [receipt["blockNumber"], False])
    gas_used = int(receipt["gasUsed"], 16)
    return gas_used * int(receipt["effectiveGasPrice"], 16), evm_minimum(gas_used, int(block["baseFeePerGas"], 16), tip)
