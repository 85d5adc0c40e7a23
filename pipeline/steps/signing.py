"""Step 4: allocate the nonce, build the transaction, get it signed, store the signed bytes.

Sign once: the unsigned payload, its digests and the nonce are committed before the signer is
asked, and the signed bytes and hash are committed before anything is broadcast. A redelivered
task re-asks the signer with the same request id (a no-op) and collects the same signature.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from chains.base import ChainAdapter, TransferIntent
from pipeline import attempts, nonces
from pipeline.driving import Attempt, Run, load_held
from pipeline.errors import TransientError
from pipeline.lifecycle import advance, record_note, stage_of
from pipeline.models import NonceCursor, ReleasedNonce, Transaction, utcnow
from pipeline.stages import FailureReason, Stage
from pipeline.steps.handover import conclude_within
from pipeline.steps.context import (
    Outcome,
    OutcomeKind,
    StepContext,
    fail,
    fail_at,
    fee_quote_of,
    intent_of,
    signing_payloads_of,
    touch,
)
from signer.base import KeyRef, SignerError


def request_signature(ctx: StepContext, run: Run) -> Outcome:
    """FUNDS_LOCKED -> SIGNATURE_REQUESTED -> SIGNED (waits while the signer works).

    Every write requires the attempt the run read (token, stage, request id): a slow run can
    never store a signature over a request that a newer driver has replaced.

    When the build needs nothing from the chain (the account's nonce cursor exists and the
    adapter's build context is offline, as on EVM), the request is built and committed in the
    transaction that read the transfer: one DB transaction before the signer, one after."""
    with ctx.db.unit_of_work() as session:
        tx = load_held(session, run)
        stage = stage_of(tx)
        if stage not in (Stage.FUNDS_LOCKED, Stage.SIGNATURE_REQUESTED):
            return conclude_within(ctx, session, run, tx, OutcomeKind.NOOP)
        adapter = ctx.adapter_for(tx.chain)
        intent = intent_of(ctx, tx, tx.from_address)
        attempt = Attempt.of(tx)
        request, needs_cursor = None, False
        if stage is Stage.SIGNATURE_REQUESTED:
            request = _request_of(tx, adapter)
        else:
            needs_nonce = adapter.uses_account_nonce and tx.nonce is None
            if getattr(adapter, "build_context_offline", False):
                cursor = _locked_cursor(session, tx.account_id) if needs_nonce else None
                if needs_nonce and cursor is None:
                    needs_cursor = True  # first use of the account: its pending nonce comes from the chain
                else:
                    request = _write_request(session, tx, adapter, intent, adapter.build_context(intent), None, cursor)
            else:
                needs_cursor = needs_nonce and session.get(NonceCursor, tx.account_id) is None

    if request is None:
        request = _build(ctx, run, attempt, adapter, intent, needs_cursor)

    try:
        ctx.signer.request_signature(request.request_id, request.key, request.to_sign)
        signatures = ctx.signer.fetch_signature(request.request_id)
    except SignerError as exc:
        if exc.transient:
            raise TransientError(f"signer: {exc}") from exc
        if getattr(exc, "holds", False):
            raise  # the deployment's fault (a master key that cannot open the key): hold, keep the locks
        return fail_at(ctx, run, request.attempt, FailureReason.SIGNATURE_REFUSED, str(exc))
    if signatures is None:
        return _still_waiting(ctx, run, request.attempt)

    signed = adapter.attach_signature(request.payload, signatures)
    with ctx.db.unit_of_work() as session:
        tx = load_held(session, run, request.attempt)
        tx.signed_payload = signed.raw
        tx.tx_hash = signed.tx_hash
        attempts.record_signed(session, tx, attempts.previous_is_dead(session, tx))
        if tx.stuck_reason == "nonce_released":
            tx.stuck_reason = None  # it has its new nonce and signature: moving again
        advance(session, tx, Stage.SIGNED, detail=signed.tx_hash)
        return conclude_within(ctx, session, run, tx, OutcomeKind.ADVANCED)


@dataclass(frozen=True)
class _Request:
    """What the signer is asked, as committed, and the attempt it belongs to."""

    attempt: Attempt
    request_id: str
    payload: bytes
    to_sign: list[bytes]
    key: KeyRef


def _request_of(tx: Transaction, adapter: ChainAdapter) -> _Request:
    return _Request(Attempt.of(tx), tx.signature_request_id or "", tx.unsigned_payload or b"",
                    signing_payloads_of(tx), KeyRef(tx.wallet_id or "", adapter.key_name, adapter.curve))


def _build(ctx: StepContext, run: Run, attempt: Attempt, adapter: ChainAdapter, intent: TransferIntent,
           needs_cursor: bool) -> _Request:
    """FUNDS_LOCKED -> SIGNATURE_REQUESTED with chain data read first (no RPC under row locks):
    the pending nonce on first use, a fresh reference block or blockhash where the family needs one."""
    chain_nonce = adapter.next_nonce(intent.from_address) if needs_cursor else None
    context = adapter.build_context(intent)
    with ctx.db.unit_of_work() as session:
        tx = load_held(session, run, attempt)
        return _write_request(session, tx, adapter, intent, context, chain_nonce)


def _write_request(session: Session, tx: Transaction, adapter: ChainAdapter, intent: TransferIntent,
                   context: dict[str, Any], chain_nonce: int | None, cursor: NonceCursor | None = None) -> _Request:
    """Nonce, unsigned payload and digests, committed (with the caller's transaction) before the
    signer is asked; `cursor` is the account's nonce cursor if the caller has locked it already."""
    if adapter.uses_account_nonce and tx.nonce is None:
        tx.nonce = _allocate_nonce(session, tx.account_id, chain_nonce, cursor)
    unsigned = adapter.build(intent, fee_quote_of(tx), tx.nonce, context)
    tx.unsigned_payload = unsigned.payload
    tx.signing_payloads = json.dumps([item.hex() for item in unsigned.digests])
    tx.build_context = json.dumps(context, sort_keys=True)
    tx.signature_request_id = f"{tx.transaction_id}.{tx.replacement_count}"
    advance(session, tx, Stage.SIGNATURE_REQUESTED, detail=f"nonce={tx.nonce}")
    return _request_of(tx, adapter)


def _still_waiting(ctx: StepContext, run: Run, attempt: Attempt) -> Outcome:
    """The signer has not answered yet: stay alive, give up (replayably) at the deadline."""
    with ctx.db.unit_of_work() as session:
        tx = load_held(session, run, attempt)
        touch(tx)
        if utcnow() - tx.stage_changed_at > timedelta(seconds=ctx.signature_timeout_s):
            tx.last_error = f"the signer has not answered within {int(ctx.signature_timeout_s)} s"
            record_note(session, tx, "signature_timeout", tx.last_error)
            if _blocks_later_nonces(session, tx):
                if tx.kind == nonces.NOOP:  # a gap fill never takes another nonce: it ends, the gap stays
                    fail(session, tx, FailureReason.SIGNATURE_REFUSED, tx.last_error)
                    return conclude_within(ctx, session, run, tx, OutcomeKind.FINAL)
                _give_nonce_back(session, tx)
            return conclude_within(ctx, session, run, tx, OutcomeKind.STALLED)
    return Outcome(OutcomeKind.WAIT, Stage.SIGNATURE_REQUESTED, ctx.signature_poll_s)


def _blocks_later_nonces(session: Session, tx: Transaction) -> bool:
    """Its nonce was never sent, and later nonces of the account are signed or out: they wait
    behind it on the chain for as long as the signer does not answer."""
    if tx.nonce is None or not tx.account_id or attempts.nonce_sent(session, tx):
        return False
    return nonces.later_in_flight(session, tx.account_id, tx.nonce)


def _give_nonce_back(session: Session, tx: Transaction) -> None:
    """A signing that stalled gives its nonce back (the gap filler sends a no-op with it, so the
    account moves on) and waits at FUNDS_LOCKED for a new nonce and a new signature request:
    the old request's answer, if it ever comes, is for a request id no longer asked for."""
    released = tx.nonce
    session.add(ReleasedNonce(account_id=tx.account_id, nonce=released))
    tx.nonce = None
    tx.unsigned_payload = tx.signing_payloads = tx.build_context = None
    tx.replacement_count += 1
    tx.stuck_reason = "nonce_released"
    advance(session, tx, Stage.FUNDS_LOCKED, reason="nonce_released",
            detail=f"nonce {released} given back: the signer has not answered and later nonces wait behind it")


def _locked_cursor(session: Session, account_id: str) -> NonceCursor | None:
    return session.scalar(select(NonceCursor).where(NonceCursor.account_id == account_id).with_for_update())


def _allocate_nonce(session: Session, account_id: str, chain_nonce: int | None,
                    cursor: NonceCursor | None = None) -> int:
    """Lowest released nonce first (fills gaps), else the cursor; never hands one out twice.

    The cursor row is locked for the rest of the transaction (`cursor`, if given, was locked in
    this transaction already), so concurrent workers on one account queue here; on first use it
    starts from the chain's pending count.
    """
    if cursor is None:
        cursor = _locked_cursor(session, account_id)
    if cursor is None:
        if chain_nonce is None:
            raise TransientError("nonce cursor appeared concurrently; retry")
        try:
            with session.begin_nested():
                session.add(NonceCursor(account_id=account_id, next_nonce=chain_nonce))
        except IntegrityError:
            pass  # another worker created it first (PostgreSQL); theirs stands
        cursor = _locked_cursor(session, account_id)
        assert cursor is not None
    released = session.scalar(
        select(ReleasedNonce).where(ReleasedNonce.account_id == account_id)
        .order_by(ReleasedNonce.nonce).limit(1).with_for_update()
    )
    if released is not None:
        nonce = released.nonce
        session.delete(released)
        return nonce
    nonce = cursor.next_nonce
    cursor.next_nonce = nonce + 1
    return nonce


__all__ = ["request_signature"]
