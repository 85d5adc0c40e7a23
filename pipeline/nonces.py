"""Account nonces that would jam an account: gaps, and drift between the cursor and the chain.

An EVM account's transactions are mined in nonce order, so one nonce that never reaches the chain
holds back every later one, funds locked, for ever. The allocator (`steps.signing`) reuses a
released nonce at the next allocation, but nothing says another transfer will come. This module
finds, on each tracker tick of an account-nonce chain:

- gaps: a released nonce (its transfer failed before sending, or its signing stalled) with later
  nonces of the account signed or out. It is filled at once by a NOOP transfer: a zero-value
  self-transfer of the native coin at that nonce, driven by the ordinary steps (priced, funded,
  signed, sent, tracked, bumped, settled: its fee is debited to the native asset like any other);
- drift: the chain's pending nonce past the cursor means the key sent transactions outside the
  pipeline: the cursor moves up to it, so the next allocation does not collide; released nonces
  the chain has already used are forgotten (they can never be sent again).

Why NOOP transfers are transfer rows and not a side table: a gap fill needs everything a transfer
needs (a fee quote, a fee reserve, the signer, broadcast to every endpoint, the tracker, fee
bumping when the base fee rises, the ledger); a row of kind NOOP gets all of it from the code that
already does it, and is shown by `paratro show`/`paratro stuck` like any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from pipeline.models import Account, Asset, NonceCursor, ReleasedNonce, Transaction, TransactionEvent, utcnow
from pipeline.stages import Stage, Status

IN_FLIGHT = (Stage.SIGNED.value, Stage.BROADCAST.value, Stage.CONFIRMING.value)
NOOP = "NOOP"


def later_in_flight(session: Session, account_id: str, nonce: int) -> bool:
    """Whether a later nonce of the account is signed or out (and so waits behind `nonce`)."""
    return session.scalar(select(Transaction.transaction_id).where(
        Transaction.account_id == account_id, Transaction.nonce > nonce, Transaction.status == Status.PENDING.value,
        Transaction.stage.in_(IN_FLIGHT)).limit(1)) is not None


@dataclass(frozen=True)
class Gap:
    """A released nonce with later nonces of its account in flight."""

    account_id: str
    nonce: int


GAP_RETRY_S = 300.0  # after a NOOP for a gap failed, the next one waits this long (no NOOP per tick)


def find_gaps(session: Session, chain: str) -> list[Gap]:
    """Released nonces of the chain's accounts that later nonces wait behind (unless a NOOP for
    the same nonce failed within GAP_RETRY_S: a signer refusing gap fills must not get one a tick)."""
    rows = session.execute(
        select(ReleasedNonce.account_id, ReleasedNonce.nonce)
        .join(Account, Account.account_id == ReleasedNonce.account_id).where(Account.chain == chain))
    return [Gap(account_id, nonce) for account_id, nonce in rows
            if later_in_flight(session, account_id, nonce) and not _failed_lately(session, account_id, nonce)]


def _failed_lately(session: Session, account_id: str, nonce: int) -> bool:
    since = utcnow() - timedelta(seconds=GAP_RETRY_S)
    return session.scalar(select(Transaction.transaction_id).where(
        Transaction.account_id == account_id, Transaction.nonce == nonce, Transaction.kind == NOOP,
        Transaction.status == Status.FAILED.value, Transaction.finalized_at > since).limit(1)) is not None


def claim_gap(session: Session, gap: Gap, native_symbol: str, new_id: str) -> Transaction | None:
    """Take the released nonce for a NOOP transfer, under the account's cursor lock (the allocator
    takes the same lock, so the nonce goes to exactly one of them). None when it is gone (reused
    by an allocation meanwhile) or the account has no native asset to pay the fee from."""
    session.scalar(select(NonceCursor).where(NonceCursor.account_id == gap.account_id).with_for_update())
    released = session.get(ReleasedNonce, (gap.account_id, gap.nonce), with_for_update=True)
    account = session.get(Account, gap.account_id)
    native = session.scalar(select(Asset).where(Asset.account_id == gap.account_id, Asset.symbol == native_symbol))
    if released is None or account is None or native is None:
        return None
    session.delete(released)
    tx = _noop_transfer(account, native, gap.nonce, new_id)
    session.add(tx)
    session.add(TransactionEvent(transaction_id=tx.transaction_id, from_stage=None, to_stage=tx.stage,
                                 reason="nonce_gap", detail=f"fills nonce {gap.nonce}: later nonces wait behind it"))
    return tx


def _noop_transfer(account: Account, native: Asset, nonce: int, new_id: str) -> Transaction:
    """A zero-value self-transfer at `nonce`, resolved and checked already (it is ours)."""
    return Transaction(
        transaction_id=new_id, client_id=account.client_id, idempotency_key=f"noop:{account.account_id}:{nonce}:{new_id}",
        request_fingerprint="noop", from_address=account.address, to_address=account.address, chain=account.chain,
        network=account.network, token_symbol=native.symbol, amount=0, decimals=native.decimals, kind=NOOP,
        stage=Stage.DESTINATION_VALID.value, status=Status.PENDING.value, wallet_id=account.wallet_id,
        account_id=account.account_id, asset_id=native.asset_id, fee_asset_id=native.asset_id,
        normalized_to_address=account.address, nonce=nonce, stuck_reason="gap_fill")


def resync(session: Session, account_id: str, pending: int) -> bool:
    """Move the account's cursor up to the chain's pending nonce (never down). True if it moved."""
    cursor = session.scalar(select(NonceCursor).where(NonceCursor.account_id == account_id).with_for_update())
    if cursor is None or pending <= cursor.next_nonce:
        return False
    cursor.next_nonce = pending
    return True


def drifted(session: Session, chain: str, chain_nonces: Mapping[str, tuple[int, int]]) -> bool:
    """Whether `reconcile` has anything to do (a read: most ticks then write nothing)."""
    if not chain_nonces:
        return False
    rows = session.execute(
        select(Account.account_id, Account.address, NonceCursor.next_nonce)
        .join(NonceCursor, NonceCursor.account_id == Account.account_id)
        .where(Account.chain == chain, Account.address.in_(list(chain_nonces)))).all()
    if any(chain_nonces[address][1] > next_nonce for _, address, next_nonce in rows):
        return True
    mined = {account_id: chain_nonces[address][0] for account_id, address, _ in rows}
    released = session.execute(select(ReleasedNonce.account_id, ReleasedNonce.nonce)
                               .where(ReleasedNonce.account_id.in_(list(mined))))
    return any(nonce < mined[account_id] for account_id, nonce in released)


def reconcile(session: Session, chain: str, chain_nonces: Mapping[str, tuple[int, int]]) -> list[str]:
    """Move cursors up to the chain's pending nonce where the key was used outside the pipeline,
    and forget released nonces the chain has used. `chain_nonces`: address -> (latest, pending).
    Returns what it did, one line per account, for the tick's log."""
    if not chain_nonces:
        return []
    rows = session.execute(
        select(Account.account_id, Account.address, NonceCursor)
        .join(NonceCursor, NonceCursor.account_id == Account.account_id)
        .where(Account.chain == chain, Account.address.in_(list(chain_nonces))).with_for_update(of=NonceCursor))
    changes = []
    for account_id, address, cursor in rows:
        latest, pending = chain_nonces[address]
        session.execute(delete(ReleasedNonce).where(ReleasedNonce.account_id == account_id, ReleasedNonce.nonce < latest))
        if pending > cursor.next_nonce:
            changes.append(f"{address}: cursor {cursor.next_nonce} -> {pending} (nonces used outside the pipeline)")
            cursor.next_nonce = pending
    return changes
