"""Steps 5-6: broadcast the stored bytes, then follow them to the registry's depth.

An RPC error is never a transfer failure: it is retried. FAILED here means the node refused the
bytes for good, or the transaction was mined and reverted (then its fee was still paid). A receipt
whose block is no longer canonical sends the transfer back to BROADCAST and the same bytes go out
again. Nothing is re-signed implicitly: only a transaction the adapter proves dead (EXPIRED: past
its TRON expiration or Solana blockhash, and not on chain) is replaced, as a recorded event. A
refused send (first or again) is judged by what the chain proves, never by the refusal alone.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from chains.base import ChainAdapter, SignedTransaction, TxState, TxStatus
from chains.errors import TransactionRejected
from pipeline import ledger
from pipeline import attempts, nonces
from pipeline.driving import Attempt, Run, load_held
from pipeline.errors import ReplacementLimit, TransientError, UnprovenRejection
from pipeline.lifecycle import advance, record_note, stage_of
from pipeline.models import Transaction, utcnow
from pipeline.stages import FailureReason, Stage
from pipeline.steps.handover import conclude_within
from pipeline.steps.bumping import raise_fee
from pipeline.steps.context import (
    Outcome,
    OutcomeKind,
    StepContext,
    attempt_signed,
    fail,
    fail_at,
    failure_reason,
    fee_quote_of,
    intent_of,
    locked_amounts,
    release_utxos,
    replace_expired,
    replace_used_nonce,
    signed_of,
    touch,
)

_FOLLOWING = (Stage.BROADCAST, Stage.CONFIRMING)
_ON_CHAIN = (TxState.PENDING, TxState.INCLUDED, TxState.REVERTED)


def broadcast(ctx: StepContext, run: Run) -> Outcome:
    """SIGNED -> BROADCAST: send the stored bytes (sending them again is harmless).

    The attempt is recorded (send_attempts) before the RPC, so that a send whose reply was lost
    is never forgotten: a later refusal fails the transfer only on proof from the chain."""
    with ctx.db.unit_of_work() as session:
        tx = load_held(session, run)
        if stage_of(tx) is not Stage.SIGNED:
            return Outcome.of(OutcomeKind.NOOP, tx)
        tx.send_attempts += 1
        attempts.mark_sent(session, tx)
        signed, chain, attempt = signed_of(tx), tx.chain, Attempt.of(tx)
    adapter = ctx.adapter_for(chain)
    try:
        adapter.broadcast(signed)
    except TransactionRejected as exc:
        return _refused(ctx, run, attempt, adapter, signed, exc)
    return _mark_broadcast(ctx, run, attempt, detail=signed.tx_hash)


def _mark_broadcast(ctx: StepContext, run: Run, attempt: Attempt, detail: str, reason: str | None = None) -> Outcome:
    with ctx.db.unit_of_work() as session:
        tx = load_held(session, run, attempt)
        now = utcnow()
        tx.broadcast_at = tx.broadcast_at or now
        tx.last_broadcast_at = now
        tx.broadcast_count += 1
        if tx.stuck_reason == "bumping":
            tx.stuck_reason = None
        advance(session, tx, Stage.BROADCAST, reason=reason, detail=detail)
        return conclude_within(ctx, session, run, tx, OutcomeKind.ADVANCED)


def _refused(ctx: StepContext, run: Run, attempt: Attempt, adapter: ChainAdapter, signed: SignedTransaction,
             exc: TransactionRejected) -> Outcome:
    """A node refused our bytes (first send or a rebroadcast). The refusal alone proves nothing:
    an earlier send may have been accepted, another backend may have it. Ask the chain:
    it has the transaction -> follow it; proven dead -> replace (expired) or fail; else retry,
    and hold when the retries run out."""
    status = adapter.get_status(signed)
    if status.state in _ON_CHAIN:
        if Stage(attempt.stage) is Stage.SIGNED:
            return _mark_broadcast(ctx, run, attempt, detail=f"{signed.tx_hash} (node said: {exc.reason})",
                                   reason="already_known")
        return Outcome(OutcomeKind.WAIT, Stage(attempt.stage), _poll_s(ctx, adapter))
    if exc.reason == UNDERPRICED:  # a first send, a replacement, or a rebroadcast of a dropped one
        if not ctx.fee_bumping:
            raise TransientError(f"the node wants a higher fee and fee bumping is off: {exc.detail[:200]}")
        return _bump_refused(ctx, run, attempt, adapter, exc)
    if _has_live_others(ctx, run, attempt):
        # A replacement refused for another reason (its nonce or inputs already spent: most likely
        # by the transaction it replaces, mined meanwhile): follow the attempts that were sent.
        return fail_at(ctx, run, attempt, failure_reason(exc.reason), f"replacement refused: {exc.detail}")
    if exc.reason == NONCE_TOO_LOW and adapter.uses_account_nonce:
        return _nonce_used(ctx, run, attempt, adapter, signed, exc)
    if status.state is TxState.EXPIRED and exc.reason == FailureReason.EXPIRED.value:
        return _replace(ctx, run, attempt, f"refused as expired and proven not on chain: {exc.detail}")
    if status.state is TxState.EXPIRED or (_first_send(ctx, run, attempt) and adapter.proves_unlandable(signed)):
        detail = f"{exc.detail} (proven: the transaction cannot land)"
        return fail_at(ctx, run, attempt, failure_reason(exc.reason), detail, nonce_unused=not exc.nonce_consumed)
    raise UnprovenRejection(f"send refused ({exc.reason}: {exc.detail[:200]}) without proof it cannot land")


UNDERPRICED = "replacement_underpriced"
# Kept waiting by the bump step, which checks them again every replacement-policy interval: no
# confirmation timeout parks them (a top-up or a falling fee must still get them bumped).
RECHECKED = frozenset({"waiting_for_funds", "at_fee_cap", "change_below_dust"})


def _bump_refused(ctx: StepContext, run: Run, attempt: Attempt, adapter: ChainAdapter,
                  exc: TransactionRejected) -> Outcome:
    """The node wants more for this replacement: bump again, from the refused fee."""
    with ctx.db.unit_of_work() as session:
        tx = load_held(session, run, attempt)
        intent, refused = intent_of(ctx, tx, tx.from_address), fee_quote_of(tx)
        record_note(session, tx, UNDERPRICED, exc.detail[:1000])
        attempt = Attempt.of(tx)
    return raise_fee(ctx, run, attempt, adapter, intent, refused)


NONCE_TOO_LOW = "nonce_too_low"


def _nonce_used(ctx: StepContext, run: Run, attempt: Attempt, adapter: ChainAdapter, signed: SignedTransaction,
                exc: TransactionRejected) -> Outcome:
    """The node says our nonce is used and does not show our transaction. Which transaction used
    it, read from the block that did (at depth): one of ours -> it is on chain, follow it; another
    -> nothing of this transfer can land: re-signed with a new nonce; not deep yet -> retried."""
    with ctx.db.unit_of_work() as session:
        ours = attempts.hashes(session, load_held(session, run, attempt)) | {signed.tx_hash.lower()}
    taken_by = adapter.nonce_taken_by(signed)
    if taken_by is None:
        raise UnprovenRejection(f"send refused ({exc.detail[:200]}); which transaction used the nonce is not known yet")
    if taken_by.lower() in ours:
        if Stage(attempt.stage) is Stage.SIGNED:
            return _mark_broadcast(ctx, run, attempt, detail=f"{taken_by} is already mined", reason="already_mined")
        return Outcome(OutcomeKind.WAIT, Stage(attempt.stage), _poll_s(ctx, adapter))
    return _renonce(ctx, run, attempt, adapter, signed, taken_by)


def _renonce(ctx: StepContext, run: Run, attempt: Attempt, adapter: ChainAdapter, signed: SignedTransaction,
             taken_by: str) -> Outcome:
    """The nonce went to a transaction not ours: the cursor moves past what the chain has used
    (the key is used outside the pipeline) and the transfer is re-signed with a new nonce."""
    with ctx.db.unit_of_work() as session:
        sender = load_held(session, run, attempt).from_address
    pending = adapter.next_nonce(sender)
    with ctx.db.unit_of_work() as session:
        tx = load_held(session, run, attempt)
        moved = nonces.resync(session, tx.account_id or "", pending)
        if tx.kind == nonces.NOOP:  # the gap it was to fill is filled (by another): nothing left to do
            attempts.mark_all_dead(session, tx)
            fail(session, tx, FailureReason.NONCE_CONSUMED, f"nonce {tx.nonce} was used by {taken_by}", nonce_unused=False)
            return conclude_within(ctx, session, run, tx, OutcomeKind.FINAL)
        replace_used_nonce(session, tx, f"nonce {tx.nonce} was used by {taken_by}, not by this transfer"
                                        + (f"; the account's next nonce is now {pending}" if moved else ""))
        return conclude_within(ctx, session, run, tx, OutcomeKind.RESTART, step="request_signature")


def _has_live_others(ctx: StepContext, run: Run, attempt: Attempt) -> bool:
    with ctx.db.unit_of_work() as session:
        return bool(attempts.live_others(session, load_held(session, run, attempt)))


def _first_send(ctx: StepContext, run: Run, attempt: Attempt) -> bool:
    """Whether this refusal answers the only send ever attempted. Once one send may have been
    accepted (a later attempt, a reply lost, a rebroadcast) the bytes can sit in mempools this
    node does not see, and "not landed yet" is no proof that they never will: hold instead."""
    if Stage(attempt.stage) is not Stage.SIGNED:
        return False
    with ctx.db.unit_of_work() as session:
        return load_held(session, run, attempt).send_attempts == 1


MAX_REPLACEMENTS = 5  # a transfer whose every signing expires unsent is refused for a reason of its own


def _replace(ctx: StepContext, run: Run, attempt: Attempt, detail: str) -> Outcome:
    with ctx.db.unit_of_work() as session:
        tx = load_held(session, run, attempt)
        if tx.replacement_count >= MAX_REPLACEMENTS:
            raise ReplacementLimit(f"{tx.replacement_count} replacements expired unsent; last: {detail}"[:500])
        replace_expired(session, tx, detail)
        return Outcome(OutcomeKind.RESTART, Stage.FUNDS_LOCKED, step="request_signature")


def _poll_s(ctx: StepContext, adapter: ChainAdapter) -> float:
    return min(adapter.spec.poll_interval_ms / 1000.0, ctx.max_countdown_s)


def confirm(ctx: StepContext, run: Run) -> Outcome:
    """BROADCAST/CONFIRMING -> CONFIRMED | FAILED(reverted), polling without sleeping."""
    with ctx.db.unit_of_work() as session:
        tx = load_held(session, run)
        if stage_of(tx) not in _FOLLOWING:
            return Outcome.of(OutcomeKind.NOOP, tx)
        chain, sent, attempt = tx.chain, signed_of(tx), Attempt.of(tx)
        others = [attempt_signed(other) for other in attempts.live_others(session, tx)]
        ours = attempts.hashes(session, tx) if tx.replacement_count else {(tx.tx_hash or "").lower()}
    spec = ctx.registry.chain(chain)
    adapter = ctx.adapter_for(chain)
    poll = _poll_s(ctx, adapter)
    status, landed = _landed_attempt(adapter, sent, others)
    taken_by = _nonce_taken_by(adapter, sent, ours) if status.state is TxState.NOT_FOUND else None
    if taken_by is not None:
        return _renonce(ctx, run, attempt, adapter, sent, taken_by)

    rebroadcast = False
    outcome_kind = OutcomeKind.WAIT
    with ctx.db.unit_of_work() as session:
        tx = load_held(session, run, attempt)
        touch(tx)
        if status.state in (TxState.INCLUDED, TxState.REVERTED):
            if landed is not None:
                attempts.adopt_hash(session, tx, landed.tx_hash)
            if record_inclusion(session, tx, status, spec.confirmations):
                return Outcome.of(OutcomeKind.FINAL, tx)
        else:
            if stage_of(tx) is Stage.CONFIRMING:
                left = f"block {tx.block_number} {tx.block_hash} left the canonical chain"
                tx.block_number, tx.block_hash, tx.confirmations = None, None, 0  # before the event renders it
                advance(session, tx, Stage.BROADCAST, reason="reorg", detail=left)
            if status.state is TxState.EXPIRED:
                if tx.replacement_count >= MAX_REPLACEMENTS:
                    raise ReplacementLimit(f"{tx.replacement_count} replacements expired without landing")
                replace_expired(session, tx, "proven: past its validity and not on chain")
                return Outcome(OutcomeKind.RESTART, Stage.FUNDS_LOCKED, step="request_signature")
            # A dropped transaction is sent again (same bytes) even after the timeout: a re-drive by
            # the sweeper or `paratro replay` must be able to push it back into the mempool.
            if status.state is TxState.NOT_FOUND and _due_for_rebroadcast(tx, poll):
                rebroadcast = True
                tx.broadcast_count += 1
                tx.send_attempts += 1
                tx.last_broadcast_at = utcnow()
                record_note(session, tx, "rebroadcast", "node does not know the transaction; same bytes sent again")
            if (tx.broadcast_at and utcnow() - tx.broadcast_at > timedelta(seconds=ctx.confirm_timeout_s)
                    and tx.stuck_reason not in RECHECKED):
                tx.last_error = f"not confirmed within {int(ctx.confirm_timeout_s)} s of broadcast"
                record_note(session, tx, "confirmation_timeout", tx.last_error)
                outcome_kind = OutcomeKind.STALLED
        stage_after, attempt = stage_of(tx), Attempt.of(tx)
    if rebroadcast:
        try:
            adapter.broadcast(sent)
        except TransactionRejected as exc:
            return _refused(ctx, run, attempt, adapter, sent, exc)
    return Outcome(outcome_kind, stage_after, poll)


def _landed_attempt(adapter: ChainAdapter, sent: SignedTransaction,
                    others: list[SignedTransaction]) -> tuple[TxStatus, SignedTransaction | None]:
    """The current transaction's status, or an earlier sent attempt's if that one is on chain
    instead (a bump's original mined first): (status, the other attempt or None)."""
    status = adapter.get_status(sent)
    if status.state in (TxState.INCLUDED, TxState.REVERTED):
        return status, None
    for other in others:
        other_status = adapter.get_status(other)
        if other_status.state in (TxState.INCLUDED, TxState.REVERTED):
            return other_status, other
    return status, None


def _nonce_taken_by(adapter: ChainAdapter, sent: SignedTransaction, ours: set[str]) -> str | None:
    """The hash of a transaction that is not ours and used this transfer's nonce, at depth (the
    key used outside the pipeline): proof that none of its attempts can land. None otherwise."""
    if not adapter.uses_account_nonce:
        return None
    taken_by = adapter.nonce_taken_by(sent)
    return taken_by if taken_by is not None and taken_by.lower() not in ours else None


def record_inclusion(session: Session, tx: Transaction, status: TxStatus, depth: int) -> bool:
    """Store where the transaction is; settle when deep enough. True when the transfer is final."""
    if tx.block_hash and tx.block_hash != status.block_hash:
        record_note(session, tx, "reorg", f"now in block {status.block_number} {status.block_hash}")
    tx.block_number, tx.block_hash, tx.confirmations = status.block_number, status.block_hash, status.confirmations
    if status.confirmations < depth:
        if stage_of(tx) is Stage.BROADCAST:
            advance(session, tx, Stage.CONFIRMING, detail=f"block {status.block_number}")
        return False
    if status.fee_paid is None:
        raise RuntimeError(f"adapter reported inclusion of {tx.tx_hash} without the fee paid")
    tx.fee_paid = status.fee_paid
    if status.fee_paid > (tx.fee_reserved or 0):
        # The chain charged more than we reserved (e.g. an L2's L1 data fee): the ledger follows the chain.
        record_note(session, tx, "fee_exceeded_reserve", f"paid {status.fee_paid} > reserved {tx.fee_reserved}")
    fee_debit = (tx.fee_asset_id or "", "FEE", status.fee_paid)
    release_utxos(session, tx)  # spent on chain now
    attempts.settle(session, tx)
    tx.stuck_reason = None
    if status.state is TxState.INCLUDED:
        ledger.settle(session, tx.transaction_id, locked_amounts(tx), [(tx.asset_id or "", "DEBIT", tx.amount), fee_debit])
        advance(session, tx, Stage.CONFIRMED, detail=f"{status.confirmations} confirmations")
    else:
        ledger.settle(session, tx.transaction_id, locked_amounts(tx), [fee_debit])
        tx.failure_reason = FailureReason.REVERTED.value
        why = f" ({status.detail})" if status.detail else ""
        tx.failure_detail = f"reverted in block {status.block_number}{why}; fee paid"
        advance(session, tx, Stage.FAILED, reason=FailureReason.REVERTED.value, detail=tx.failure_detail)
    return True


def _due_for_rebroadcast(tx: Transaction, poll_s: float) -> bool:
    last = tx.last_broadcast_at or tx.stage_changed_at
    return utcnow() - last > timedelta(seconds=max(5.0, 4 * poll_s))
