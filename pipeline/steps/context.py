"""What every step needs, passed in rather than imported: the DB, chain adapters, the signer.

Steps return an `Outcome`; the Celery layer maps it to "pass the chain on" or "poll again in N
seconds". Keeping the mapping out of the domain lets unit tests drive steps with in-memory fakes.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete
from sqlalchemy.orm import Session

from chains.base import ChainAdapter, FeeQuote, SignedTransaction, TransferIntent, Utxo
from chains.registry import Registry
from pipeline.db import Database
from pipeline.driving import Attempt, Run, load_held
from pipeline.lifecycle import advance, record_note, stage_of
from pipeline.models import ReleasedNonce, Transaction, TransactionAttempt, UtxoReservation, utcnow
from pipeline.stages import TRACKED_STAGES, FailureReason, Stage
from pipeline import attempts, ledger
from signer.base import Signer

if TYPE_CHECKING:
    from pipeline.steps.handover import StepReport


class OutcomeKind(str, enum.Enum):
    ADVANCED = "advanced"  # the step did its work; pass the chain on
    NOOP = "noop"  # the work was already done (redelivery): pass the chain on
    FINAL = "final"  # the transfer reached CONFIRMED or FAILED
    WAIT = "wait"  # not yet (signature pending, confirmations short): run this step again later
    STALLED = "stalled"  # gave up polling for now; the sweeper or `paratro replay` takes over
    RESTART = "restart"  # re-run the chain from `Outcome.step` (an expired transaction is re-signed)


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    stage: Stage
    countdown: float = 0.0
    step: str | None = None  # for RESTART
    report: "StepReport | None" = None  # set when the step concluded in its own unit of work (handover)

    @classmethod
    def of(cls, kind: OutcomeKind, tx: Transaction, countdown: float = 0.0) -> "Outcome":
        return cls(kind, stage_of(tx), countdown)


@dataclass
class StepContext:
    db: Database
    registry: Registry
    adapter_for: Callable[[str], ChainAdapter]
    signer: Signer
    max_countdown_s: float = 60.0
    confirm_timeout_s: float = 1800.0
    signature_poll_s: float = 0.5
    signature_timeout_s: float = 600.0
    step_lease_s: float = 300.0  # a running step's lease: longer than any single RPC it makes
    stall_after_s: float = 120.0  # outbox grace before the relay republishes; park time of a step that gave up
    fee_bumping: bool = True  # settings.fee_bumping: false, a transaction refused as underpriced waits instead


def touch(tx: Transaction) -> None:
    tx.heartbeat_at = utcnow()


def intent_of(ctx: StepContext, tx: Transaction, from_address: str) -> TransferIntent:
    token = ctx.registry.chain(tx.chain).token(tx.token_symbol)
    return TransferIntent(from_address=from_address, to_address=tx.normalized_to_address or tx.to_address,
                          amount=tx.amount, token=token)


def fee_params_json(quote: FeeQuote) -> str:
    """The quote as stored on the transfer (inputs included), so the build reuses it exactly."""
    return json.dumps({"max_fee": quote.max_fee, "params": quote.params,
                       "inputs": [asdict(utxo) for utxo in quote.inputs]}, sort_keys=True)


def fee_quote_of(tx: Transaction) -> FeeQuote:
    data = json.loads(tx.fee_params or "{}")
    return FeeQuote(max_fee=int(data["max_fee"]), params=data["params"],
                    inputs=tuple(Utxo(**item) for item in data.get("inputs", [])))


def locked_amounts(tx: Transaction) -> dict[str, int]:
    """What this transfer holds locked: the amount on its asset, the fee reserve on the native asset."""
    held: dict[str, int] = {}
    if tx.asset_id:
        held[tx.asset_id] = held.get(tx.asset_id, 0) + tx.amount
    if tx.fee_asset_id and tx.fee_reserved:
        held[tx.fee_asset_id] = held.get(tx.fee_asset_id, 0) + tx.fee_reserved
    return {asset_id: amount for asset_id, amount in held.items() if amount}


def release_utxos(session: Session, tx: Transaction) -> None:
    """Drop the transfer's output reservations: it failed before spending them, or it is final
    (then they are spent on chain and no node lists them any more)."""
    session.execute(delete(UtxoReservation).where(UtxoReservation.transaction_id == tx.transaction_id))


def signed_of(tx: Transaction) -> SignedTransaction:
    """The stored signed bytes, with the build context they were built from (expiry proofs)."""
    context = json.loads(tx.build_context) if tx.build_context else {}
    return SignedTransaction(raw=tx.signed_payload or b"", tx_hash=tx.tx_hash or "", context=context)


def attempt_signed(attempt: TransactionAttempt) -> SignedTransaction:
    """An attempt's signed bytes with the build context they were built from."""
    context = json.loads(attempt.build_context) if attempt.build_context else {}
    return SignedTransaction(raw=attempt.signed_payload, tx_hash=attempt.tx_hash, context=context)


def signing_payloads_of(tx: Transaction) -> list[bytes]:
    return [bytes.fromhex(item) for item in json.loads(tx.signing_payloads or "[]")]


def replace_expired(session: Session, tx: Transaction, detail: str) -> None:
    """The signed transaction is provably dead (expired, not on chain): mark its attempt DEAD and go
    back to FUNDS_LOCKED, keeping locks, nonce and reserved inputs, so it is re-signed under a new
    request id. Recorded as its own event."""
    attempts.mark_current_dead(session, tx)
    _resign(session, tx, FailureReason.EXPIRED.value, f"replacing {tx.tx_hash}: {detail}")


def replace_for_fee(session: Session, tx: Transaction, detail: str) -> None:
    """Re-sign at the transfer's (raised) fee parameters: the same nonce or inputs, so at most one
    of its attempts can land. The current attempt stays LIVE and watched (it may still be mined)."""
    _resign(session, tx, "fee_bump", f"replacing {tx.tx_hash}: {detail}")


def replace_used_nonce(session: Session, tx: Transaction, detail: str) -> None:
    """Its nonce was used by a transaction that is not ours (proven from the block, at depth):
    none of its attempts can land. Every attempt is DEAD and it is re-signed with a new nonce
    (the caller has moved the account's cursor past the nonces used outside)."""
    attempts.mark_all_dead(session, tx)
    tx.nonce = None
    _resign(session, tx, FailureReason.NONCE_CONSUMED.value, detail)


def _resign(session: Session, tx: Transaction, reason: str, detail: str) -> None:
    """Back to FUNDS_LOCKED for a new signature: the only way a transfer is ever signed twice."""
    tx.unsigned_payload = tx.signing_payloads = tx.build_context = None
    tx.signed_payload = None
    tx.tx_hash = tx.block_hash = None
    tx.block_number = None
    tx.confirmations = 0
    tx.bump_armed_head = tx.bump_armed_at = None
    tx.broadcast_at = None  # the confirmation timeout counts from the new attempt's first send
    tx.replacement_count += 1
    advance(session, tx, Stage.FUNDS_LOCKED, reason=reason, detail=detail[:1000])


def fall_back(session: Session, tx: Transaction, attempt: TransactionAttempt, why: str) -> None:
    """A replacement could not be signed or sent: the transfer goes on with `attempt`, an earlier
    sent transaction that may still land, followed again by the tracker."""
    attempts.adopt(tx, attempt)
    tx.stuck_reason = None
    tx.bump_armed_head = tx.bump_armed_at = None
    detail = f"replacement abandoned ({why}); following {attempt.tx_hash} again"[:1000]
    if stage_of(tx) in TRACKED_STAGES:
        tx.block_number, tx.block_hash, tx.confirmations = None, None, 0
        if stage_of(tx) is Stage.CONFIRMING:
            advance(session, tx, Stage.BROADCAST, reason="replacement_abandoned", detail=detail)
        else:
            record_note(session, tx, "replacement_abandoned", detail)
        return
    advance(session, tx, Stage.BROADCAST, reason="replacement_abandoned", detail=detail)


HOLDS_LOCKS = frozenset({Stage.FUNDS_LOCKED, Stage.SIGNATURE_REQUESTED, Stage.SIGNED, Stage.BROADCAST, Stage.CONFIRMING})


def failure_reason(code: str) -> FailureReason:
    """An adapter's rejection code as a failure reason; codes the pipeline does not know are
    reported as rejected_by_node (the detail keeps the node's own words)."""
    try:
        return FailureReason(code)
    except ValueError:
        return FailureReason.REJECTED_BY_NODE


def fail_at(ctx: StepContext, run: Run, attempt: Attempt, reason: FailureReason, detail: str,
            nonce_unused: bool | None = None) -> Outcome:
    """FAIL the transfer in its own unit of work, if the run still holds it in the attempt it read
    (else Superseded: another driver took over and its view wins)."""
    with ctx.db.unit_of_work() as session:
        tx = load_held(session, run, attempt)
        fail(session, tx, reason, detail, nonce_unused)
        return Outcome.of(OutcomeKind.FINAL, tx)


def fail(session: Session, tx: Transaction, reason: FailureReason, detail: str, nonce_unused: bool | None = None) -> None:
    """End the transfer as FAILED: give back its locks and (if it never reached the chain) its nonce.

    Never while another sent attempt of it may still land (a bump refused or unsignable): the
    transfer falls back to that attempt instead, and the tracker follows it. `nonce_unused`
    overrides the rule when the chain proved it (a refused send whose nonce the account has not
    used); None: unused only if no transaction with it was ever sent."""
    others = attempts.live_others(session, tx)
    if others:
        fall_back(session, tx, others[0], f"{reason.value}: {detail}"[:300])
        return
    stage = stage_of(tx)
    if stage in HOLDS_LOCKS:
        ledger.release(session, locked_amounts(tx))
    unused = not attempts.nonce_sent(session, tx) if nonce_unused is None else nonce_unused
    if unused and tx.nonce is not None and tx.account_id:
        session.add(ReleasedNonce(account_id=tx.account_id, nonce=tx.nonce))
    if tx.tx_hash or tx.replacement_count:
        attempts.mark_all_dead(session, tx)  # none of them can land (proven, or never sent)
    release_utxos(session, tx)
    tx.stuck_reason = None
    tx.failure_reason = reason.value
    tx.failure_detail = detail[:1000]
    advance(session, tx, Stage.FAILED, reason=reason.value, detail=detail[:1000])
