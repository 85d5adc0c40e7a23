"""One driver at a time: the fencing token and the lease that decide who may move a transfer.

Redelivery, the sweeper and `paratro replay` can each start a run of a step for the same
transfer. Without a referee two runs race: each reads the transfer, asks a node, and writes what
it concluded from a state the other has already changed (a late "expired" throws away a live
replacement; a stale "rejected" fails a transfer whose replacement is in the mempool).

The referee is `Transaction.driver_seq`, a fencing token (Kleppmann's term) that moves on every
hand-over:

    message (tx, seq=S) --take()--> run holds S+1, lease_until = now + lease
    run's writes: load_held() checks driver_seq == S+1 (and the attempt it read) or raises Superseded
    run ends --hand_off()--> driver_seq = S+2, outbox row (tx, next step, S+2), lease cleared
    sweeper/replay --redrive()--> driver_seq + 1, outbox row, generation + 1

Once broadcast, a transfer is handed to its chain's confirmation tracker instead of a message
(`hand_to_tracker`: token + 1, `tracked_at` set, no outbox row, no lease): one tick per chain
follows every tracked transfer in a few batched RPC calls and writes only if the transfer still
has the token and attempt it read. While that chain's tracker ticks, the sweeper leaves its
transfers alone; when it stops ticking, the sweeper hands them to the per-transfer confirm step.

A message whose seq is not the transfer's current token was superseded: it is dropped and passes
nothing on. A running step's lease expires only if its worker died (it is longer than any single
RPC), and only then may the sweeper re-drive; a transfer waiting in the queue has an outbox row
instead of a lease, and the relay re-publishes it (same token) if its message went missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, and_, delete, exists, select
from sqlalchemy.orm import Session

from pipeline.errors import NotFound, Superseded
from pipeline.ids import check_id
from pipeline.models import ChainTracker, OutboxMessage, Transaction, utcnow
from pipeline.stages import FINAL, STEP_FOR_STAGE, TRACKED_STAGES, Stage, Status


@dataclass(frozen=True)
class Dispatch:
    """A step message to publish after the commit that wrote its outbox row."""

    transaction_id: str
    step: str
    seq: int
    countdown_s: float = 0.0
    errors: int = 0


@dataclass(frozen=True)
class Attempt:
    """What a run read and based its decision on; its writes require all of it unchanged."""

    seq: int
    stage: str
    replacement_count: int
    tx_hash: str | None
    signature_request_id: str | None

    @classmethod
    def of(cls, tx: Transaction) -> "Attempt":
        return cls(tx.driver_seq, tx.stage, tx.replacement_count, tx.tx_hash, tx.signature_request_id)


@dataclass(frozen=True)
class Run:
    """One execution of one step by the holder of the transfer's token."""

    transaction_id: str
    step: str
    seq: int
    errors: int = 0
    inline: frozenset[str] = frozenset()  # next steps this process runs itself (see runner.run_taken)


def load_tx(session: Session, tx_id: str, for_update: bool = True) -> Transaction:
    """The transfer's row (locked unless told otherwise), its columns re-read from the database.

    `populate_existing` matters: a session that already holds the object would otherwise hand
    back the identity-map copy with the stage it read before taking the lock."""
    check_id("transaction", tx_id)
    stmt = select(Transaction).where(Transaction.transaction_id == tx_id).execution_options(populate_existing=True)
    if for_update:
        stmt = stmt.with_for_update()
    tx = session.scalar(stmt)
    if tx is None:
        raise NotFound(f"transaction {tx_id} not found")
    return tx


def take(session: Session, transaction_id: str, seq: int | None, step: str, lease_s: float,
         errors: int = 0, inline: frozenset[str] = frozenset()) -> Run | None:
    """Pick up a message: the run gets the next token and a lease, or None if it was superseded
    (or the transfer is final or held by ops)."""
    tx = load_tx(session, transaction_id)
    if tx.status != Status.PENDING.value or tx.held_at is not None:
        drop_step_messages(session, transaction_id)
        return None
    if seq is None or tx.driver_seq != seq:
        return None
    tx.driver_seq += 1
    tx.lease_until = utcnow() + timedelta(seconds=lease_s)
    tx.heartbeat_at = utcnow()
    drop_step_messages(session, transaction_id)
    return Run(transaction_id, step, tx.driver_seq, errors, inline)


def step_messages_of(transaction_id: str | ColumnElement[str]) -> ColumnElement[bool]:
    """The outbox rows that are step messages of a transfer (an id, or a correlated column)."""
    return and_(OutboxMessage.kind == "step", OutboxMessage.transaction_id == transaction_id)


def drop_step_messages(session: Session, transaction_id: str) -> None:
    """Nobody will take them (picked up, final, held): nothing left for the relay to publish."""
    session.execute(delete(OutboxMessage).where(step_messages_of(transaction_id)))


def load_held(session: Session, run: Run, attempt: Attempt | None = None) -> Transaction:
    """The transfer, locked, if `run` still holds its token (and, given `attempt`, nothing it read
    has changed); otherwise raises Superseded and the caller's transaction writes nothing."""
    tx = load_tx(session, run.transaction_id)
    if tx.driver_seq != run.seq:
        raise Superseded(f"{run.step} of {run.transaction_id}: token {run.seq} superseded by {tx.driver_seq}")
    if attempt is not None and Attempt.of(tx) != attempt:
        raise Superseded(f"{run.step} of {run.transaction_id}: the attempt it read has changed")
    return tx


def hand_off(session: Session, tx: Transaction, step: str, countdown_s: float = 0.0, errors: int = 0,
             publish_grace_s: float = 120.0) -> Dispatch:
    """Give the transfer to the next message: new token, outbox row, lease cleared.

    The row is due for the relay only `publish_grace_s` after the message's countdown: the caller
    publishes right after the commit, and marks the row due at once if that fails."""
    tx.driver_seq += 1
    tx.lease_until = tx.tracked_at = None
    tx.heartbeat_at = utcnow()
    due = utcnow() + timedelta(seconds=countdown_s + publish_grace_s)
    session.add(OutboxMessage(kind="step", transaction_id=tx.transaction_id, step=step, seq=tx.driver_seq,
                              errors=errors, countdown_ms=int(countdown_s * 1000), due_at=due))
    return Dispatch(tx.transaction_id, step, tx.driver_seq, countdown_s, errors)


def next_step(tx: Transaction) -> str | None:
    """The step message `hand_to_stage` would send (None: final, or the tracker's)."""
    stage = Stage(tx.stage)
    return None if stage in FINAL or stage in TRACKED_STAGES else STEP_FOR_STAGE[stage]


def take_here(tx: Transaction, step: str, lease_s: float, inline: frozenset[str] = frozenset()) -> Run:
    """The concluding run hands the transfer straight to the next run in the same process, in the
    conclusion's commit: a new token and a lease, as if a message had been sent and taken at once.
    No message and no outbox row: if this process dies, the lease expires and the sweeper takes
    over, as for a run killed in the middle of a step."""
    tx.driver_seq += 1
    tx.lease_until = utcnow() + timedelta(seconds=lease_s)
    tx.heartbeat_at = utcnow()
    tx.tracked_at = None
    return Run(tx.transaction_id, step, tx.driver_seq, 0, inline)


def hand_to_tracker(tx: Transaction) -> None:
    """Give a broadcast transfer to its chain's confirmation tracker: new token, no message, no
    lease. The tracker's writes check this token; any other driver taking over moves it on."""
    tx.driver_seq += 1
    tx.lease_until = None
    tx.heartbeat_at = tx.tracked_at = utcnow()


def hand_to_stage(session: Session, tx: Transaction, publish_grace_s: float) -> Dispatch | None:
    """Hand off to whoever moves the transfer out of its current stage: the step's message, or the
    chain's tracker once broadcast (None then, and when final)."""
    stage = Stage(tx.stage)
    if stage in FINAL:
        release(tx)
        return None
    if stage in TRACKED_STAGES:
        hand_to_tracker(tx)
        return None
    return hand_off(session, tx, STEP_FOR_STAGE[stage], publish_grace_s=publish_grace_s)


def release(tx: Transaction) -> None:
    """Nobody drives it any more (final, or held for ops)."""
    tx.lease_until = tx.tracked_at = None


def tracker_ticking(chain: str | ColumnElement[str], within_s: float) -> ColumnElement[bool]:
    """The chain's tracker finished a tick within `within_s` (a chain name or a correlated column)."""
    since = utcnow() - timedelta(seconds=within_s)
    return exists().where(ChainTracker.chain == chain, ChainTracker.ticked_at > since)


def park(tx: Transaction) -> None:
    """A step gave up for now (retries exhausted, a deadline passed): nobody drives it (no lease,
    no message) until the sweeper takes it again, `park_s` after this heartbeat."""
    tx.lease_until = None
    tx.heartbeat_at = utcnow()


def is_driven(session: Session, tx: Transaction, tracker_within_s: float = 120.0) -> bool:
    """A live driver holds it: a running step's lease, a message on its way (an outbox row), or a
    chain tracker that ticked within `tracker_within_s`."""
    if tx.lease_until is not None and tx.lease_until > utcnow():
        return True
    if tx.tracked_at is not None and session.scalar(select(tracker_ticking(tx.chain, tracker_within_s))):
        return True
    return session.scalar(select(OutboxMessage.id).where(step_messages_of(tx.transaction_id)).limit(1)) is not None


def redrive(session: Session, tx: Transaction, publish_grace_s: float) -> Dispatch:
    """A new driver from the transfer's durable stage (sweeper or replay): every older message and
    every run still going is superseded."""
    tx.generation += 1
    stage = Stage(tx.stage)
    return hand_off(session, tx, STEP_FOR_STAGE[stage], publish_grace_s=publish_grace_s)


def due_outbox(session: Session, limit: int = 500) -> list[OutboxMessage]:
    """Outbox rows whose message should exist by now but was not picked up: locked for the relay."""
    return list(session.scalars(
        select(OutboxMessage).where(OutboxMessage.due_at <= utcnow()).order_by(OutboxMessage.due_at)
        .limit(limit).with_for_update(skip_locked=True)
    ))


def mark_due_now(session: Session, dispatch: Dispatch) -> None:
    """Publishing failed (broker down): let the relay take the row on its next tick."""
    row = session.scalar(select(OutboxMessage).where(OutboxMessage.transaction_id == dispatch.transaction_id,
                                                     OutboxMessage.seq == dispatch.seq))
    if row is not None:
        row.due_at = utcnow()
