"""Stage changes and their event rows, always written together in the caller's DB transaction."""

from __future__ import annotations

from sqlalchemy.orm import Session

from pipeline import events
from pipeline.models import Transaction, TransactionEvent, utcnow
from pipeline.stages import FINAL, Stage, check_transition, status_for


def stage_of(tx: Transaction) -> Stage:
    return Stage(tx.stage)


def is_final(tx: Transaction) -> bool:
    return stage_of(tx) in FINAL


def advance(session: Session, tx: Transaction, new: Stage, reason: str | None = None, detail: str | None = None) -> None:
    """Move `tx` to `new` (raises InvalidTransition) and record the event in the same transaction,
    with the client's webhook events (whether it listens: cached briefly, see `pipeline.events`)."""
    current = stage_of(tx)
    previous_status = tx.status
    check_transition(current, new)
    now = utcnow()
    tx.stage = new.value
    tx.status = status_for(new).value
    tx.stage_changed_at = now
    tx.heartbeat_at = now
    tx.last_error = None
    if new in FINAL:
        tx.finalized_at = now
    session.add(TransactionEvent(transaction_id=tx.transaction_id, from_stage=current.value, to_stage=new.value,
                                 reason=reason, detail=detail, at=now))
    events.transaction_changed(session, tx, status_changed=tx.status != previous_status, cached=True)


def record_note(session: Session, tx: Transaction, reason: str, detail: str | None = None) -> None:
    """An audit row without a stage change (a rebroadcast, a reorg seen, retries exhausted)."""
    session.add(TransactionEvent(transaction_id=tx.transaction_id, from_stage=tx.stage, to_stage=tx.stage,
                                 reason=reason, detail=detail, at=utcnow()))
