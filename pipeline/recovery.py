"""Finding transfers the queue forgot, and marking what ops re-drives.

The queue only nudges; the database drives. A transfer whose heartbeat is older than the deadline
lost its message (worker killed, Redis restarted, retries exhausted): `claim_stalled` returns it
with the step to re-drive from, touching its heartbeat so the next sweep does not claim it again
while the new message is in flight.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.lifecycle import record_note
from pipeline.models import Transaction, utcnow
from pipeline.stages import STEP_FOR_STAGE, Stage, Status


@dataclass(frozen=True)
class Redrive:
    transaction_id: str
    stage: Stage
    step: str


def claim_stalled(session: Session, older_than_s: float, limit: int = 500) -> list[Redrive]:
    """Pending transfers with no progress for `older_than_s`, claimed for re-driving."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    rows = session.scalars(
        select(Transaction)
        .where(Transaction.status == Status.PENDING.value, Transaction.heartbeat_at < cutoff,
               Transaction.held_at.is_(None))
        .order_by(Transaction.heartbeat_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    return [_claim(session, tx, "redriven_by_sweeper") for tx in rows]


def claim_for_replay(session: Session, tx: Transaction) -> Redrive | None:
    """An operator's re-drive of one pending transfer from its last durable stage (None if final)."""
    if tx.status != Status.PENDING.value:
        return None
    tx.held_at = None
    return _claim(session, tx, "replayed")


def hold(session: Session, tx: Transaction, error: str) -> None:
    """Park a transfer that hit an error no retry can cure; it keeps its stage (and its locks)."""
    tx.held_at = utcnow()
    tx.last_error = error[:1000]
    record_note(session, tx, "held", tx.last_error)


def _claim(session: Session, tx: Transaction, reason: str) -> Redrive:
    stage = Stage(tx.stage)
    tx.heartbeat_at = utcnow()
    record_note(session, tx, reason, tx.last_error)
    return Redrive(tx.transaction_id, stage, STEP_FOR_STAGE[stage])
