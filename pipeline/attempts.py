"""Every signed transaction of a transfer, and which of them may still land.

A transfer is signed more than once when its fee is bumped (EVM: the same nonce at a higher fee;
Bitcoin: the same inputs at a higher fee rate) or when its transaction expired (TRON, Solana:
re-signed after the expiry proof). A bumped transaction is not dead: the one it replaces may
still be mined first (a miner that had it, a replacement the network refused). So each signed
transaction is a `TransactionAttempt` row, the transfer row holds the latest, and:

- the tracker and the confirm step look for every LIVE attempt that was sent, and the transfer
  settles with whichever landed, at the fee it actually paid (`adopt`, then `settle`);
- nothing fails a transfer while an earlier sent attempt may still land: a replacement that
  cannot be signed or sent falls back to the attempt it was to replace (`fall_back`);
- an attempt proven never to land (expired and not on chain) is marked DEAD and no longer watched.

Why a table rather than columns: the number of attempts is open (one per bump), each has its own
hash, fee and bytes, and `paratro show` lists them all.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from pipeline.models import Transaction, TransactionAttempt, utcnow

LIVE, DEAD, LANDED = "LIVE", "DEAD", "LANDED"


def record_signed(session: Session, tx: Transaction, previous_dead: bool = False) -> None:
    """The transfer's current signed transaction as an attempt row (in the signing commit)."""
    number = tx.replacement_count
    kind = "NOOP" if tx.kind == "NOOP" and number == 0 else "ORIGINAL" if number == 0 else (
        "RESIGN" if previous_dead else "BUMP")
    session.add(TransactionAttempt(
        transaction_id=tx.transaction_id, number=number, kind=kind, tx_hash=tx.tx_hash or "",
        nonce=tx.nonce, fee_params=tx.fee_params, max_fee=_max_fee(tx.fee_params), signed_payload=tx.signed_payload or b"",
        build_context=tx.build_context, state=LIVE))


def _max_fee(fee_params: str | None) -> int | None:
    """The most this attempt can be charged: its own quote's max_fee (not the transfer's reserve,
    which is the largest over its attempts)."""
    value = json.loads(fee_params).get("max_fee") if fee_params else None
    return int(value) if isinstance(value, int) else None


def nonce_sent(session: Session, tx: Transaction) -> bool:
    """Whether any transaction with the transfer's current nonce was ever sent (committed before
    the send RPC): then the nonce may be used on chain and is never given back."""
    if not tx.send_attempts or tx.nonce is None:
        return False
    return session.scalar(select(TransactionAttempt.id).where(
        TransactionAttempt.transaction_id == tx.transaction_id, TransactionAttempt.nonce == tx.nonce,
        TransactionAttempt.sent_at.is_not(None)).limit(1)) is not None


def previous_is_dead(session: Session, tx: Transaction) -> bool:
    """Whether the attempt before the current one was proven dead (the current is a re-signing)."""
    if tx.replacement_count == 0:
        return False
    state = session.scalar(select(TransactionAttempt.state).where(
        TransactionAttempt.transaction_id == tx.transaction_id,
        TransactionAttempt.number == tx.replacement_count - 1))
    return state == DEAD


def _current(tx: Transaction) -> Any:
    return (TransactionAttempt.transaction_id == tx.transaction_id) & (TransactionAttempt.tx_hash == (tx.tx_hash or ""))


def mark_sent(session: Session, tx: Transaction) -> None:
    """The current attempt is about to be sent (committed before the send RPC)."""
    session.execute(update(TransactionAttempt).where(_current(tx), TransactionAttempt.sent_at.is_(None))
                    .values(sent_at=utcnow()))


def mark_current_dead(session: Session, tx: Transaction) -> None:
    """The current attempt is proven never to land (expired and not on chain)."""
    session.execute(update(TransactionAttempt).where(_current(tx)).values(state=DEAD))


def live_others(session: Session, tx: Transaction) -> list[TransactionAttempt]:
    """Sent attempts other than the current one that may still land, newest first (none before
    the first replacement: a query only for transfers that were ever re-signed)."""
    if tx.replacement_count == 0:
        return []
    return list(session.scalars(select(TransactionAttempt).where(
        TransactionAttempt.transaction_id == tx.transaction_id, TransactionAttempt.state == LIVE,
        TransactionAttempt.sent_at.is_not(None), TransactionAttempt.tx_hash != (tx.tx_hash or ""))
        .order_by(TransactionAttempt.number.desc())))


def adopt(tx: Transaction, attempt: TransactionAttempt) -> None:
    """Make another attempt the transfer's transaction again (it landed, or the replacement of it
    was abandoned): its hash, bytes, build context and fee parameters. `replacement_count` stays:
    the next re-signing takes a signature request id never used before."""
    tx.tx_hash = attempt.tx_hash
    tx.signed_payload = attempt.signed_payload
    tx.build_context = attempt.build_context
    tx.fee_params = attempt.fee_params


def adopt_hash(session: Session, tx: Transaction, tx_hash: str) -> None:
    """`adopt` the transfer's attempt with this hash (one that landed)."""
    attempt = session.scalar(select(TransactionAttempt).where(
        TransactionAttempt.transaction_id == tx.transaction_id, TransactionAttempt.tx_hash == tx_hash))
    if attempt is None:
        raise LookupError(f"{tx.transaction_id} has no attempt {tx_hash}")
    adopt(tx, attempt)


def hashes(session: Session, tx: Transaction) -> set[str]:
    """Every hash the transfer ever signed (lower case), dead ones included."""
    found = session.scalars(select(TransactionAttempt.tx_hash).where(TransactionAttempt.transaction_id == tx.transaction_id))
    return {value.lower() for value in found} | ({tx.tx_hash.lower()} if tx.tx_hash else set())


def mark_all_dead(session: Session, tx: Transaction) -> None:
    """Every attempt of the transfer is proven never to land (its nonce was used by another)."""
    session.execute(update(TransactionAttempt).where(TransactionAttempt.transaction_id == tx.transaction_id)
                    .values(state=DEAD))


def settle(session: Session, tx: Transaction) -> None:
    """The transfer is final with its current transaction: that attempt LANDED, every other DEAD
    (its nonce or inputs are spent by the one that landed)."""
    landed = case((TransactionAttempt.tx_hash == (tx.tx_hash or ""), LANDED), else_=DEAD)
    session.execute(update(TransactionAttempt).where(TransactionAttempt.transaction_id == tx.transaction_id)
                    .values(state=landed))


def of(session: Session, transaction_id: str) -> list[TransactionAttempt]:
    """Every attempt of a transfer, oldest first (for `paratro show` and the API)."""
    return list(session.scalars(select(TransactionAttempt).where(
        TransactionAttempt.transaction_id == transaction_id).order_by(TransactionAttempt.number)))
