"""Finding transfers nobody drives, re-publishing messages that went missing, and ops' re-drives.

The queue only nudges; the database drives. Two things can go missing, and each has its finder:
- a *message* (broker down at publish time, Redis restarted, a worker killed holding it): its
  outbox row is still there when `due_at` passes, and the relay publishes it again with the same
  token (`due_messages`), backing off while it stays unpicked;
- a *driver* (a worker killed in the middle of a step): its lease expires, and the sweeper hands
  the transfer to a new driver (`claim_stalled`), which supersedes anything the dead one left.
A transfer merely waiting in a queue has an outbox row and no lease, so the sweeper leaves it be.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import Session

from pipeline.driving import (
    Dispatch,
    drop_step_messages,
    due_outbox,
    is_driven,
    redrive,
    release,
    step_messages_of,
    tracker_ticking,
)
from pipeline.lifecycle import record_note
from pipeline.models import Transaction, utcnow
from pipeline.stages import Stage, Status


@dataclass(frozen=True)
class Redrive:
    transaction_id: str
    stage: Stage
    step: str
    dispatch: Dispatch


def claim_stalled(session: Session, park_s: float, limit: int = 500) -> list[Redrive]:
    """Pending transfers that nobody drives: a running step's lease expired, or a parked transfer
    (no lease, no message) has waited `park_s`. A transfer with a message on its way (an outbox
    row) is not touched: the relay looks after its message; nor is one its chain's tracker
    follows while that tracker ticks (a tracker that stopped ticking hands them all back here)."""
    now = utcnow()
    waiting = exists().where(step_messages_of(Transaction.transaction_id))
    tracked = and_(Transaction.tracked_at.is_not(None), tracker_ticking(Transaction.chain, park_s))
    parked = and_(Transaction.lease_until.is_(None), Transaction.heartbeat_at < now - timedelta(seconds=park_s))
    rows = session.scalars(
        select(Transaction)
        .where(Transaction.status == Status.PENDING.value, Transaction.held_at.is_(None), ~waiting, ~tracked,
               or_(Transaction.lease_until < now, parked))
        .order_by(Transaction.heartbeat_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    return [_redrive(session, tx, "redriven_by_sweeper", park_s) for tx in rows]


def claim_for_replay(session: Session, tx: Transaction, grace_s: float, force: bool = False) -> Redrive | None:
    """An operator's re-drive of one pending transfer from its last durable stage: None if it is
    final, or if a live driver holds it (a running step's lease, a message on its way) unless
    `force`. A forced replay supersedes every driver and message in flight (a step hung in an RPC):
    whatever they conclude is not written."""
    if tx.status != Status.PENDING.value or (not force and tx.held_at is None and is_driven(session, tx, grace_s)):
        return None
    tx.held_at = None
    return _redrive(session, tx, "replayed", grace_s)


def due_messages(session: Session, grace_s: float, backlogged: frozenset[str] = frozenset(),
                 limit: int = 500) -> list[Dispatch]:
    """Outbox rows whose message should have been picked up by now: published again (same token,
    so a copy that does arrive late is dropped), next time after a doubling delay (`grace_s`,
    twice that, ... up to eight times), so a message that is merely slow is copied a few times
    at most, while a lost one is found within `grace_s` of its deadline.

    A row whose step queue still holds messages (`backlogged`) is most likely queued, not lost:
    it is not copied, only looked at again later, unless it has waited ten times `grace_s` (a
    queue that never drains must not hide a lost message for ever)."""
    dispatches = []
    now = utcnow()
    for row in due_outbox(session, limit):
        row.due_at = now + timedelta(seconds=grace_s * min(8, 2 ** row.attempts))
        if row.step in backlogged and now - row.created_at < timedelta(seconds=10 * grace_s):
            continue
        row.attempts += 1
        dispatches.append(Dispatch(row.transaction_id, row.step, row.seq, 0.0, row.errors))
    return dispatches


def hold(session: Session, tx: Transaction, error: str) -> None:
    """Park a transfer that hit an error no retry can cure; it keeps its stage (and its locks)
    and nobody drives it until ops replays it."""
    tx.held_at = utcnow()
    tx.last_error = error[:1000]
    release(tx)
    drop_step_messages(session, tx.transaction_id)
    record_note(session, tx, "held", tx.last_error)


def _redrive(session: Session, tx: Transaction, reason: str, grace_s: float) -> Redrive:
    stage = Stage(tx.stage)
    record_note(session, tx, reason, tx.last_error)
    dispatch = redrive(session, tx, grace_s)
    return Redrive(tx.transaction_id, stage, dispatch.step, dispatch)
