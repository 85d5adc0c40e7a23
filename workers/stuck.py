"""`paratro stuck`: the pending transfers something is being done about, or that wait too long.

Listed: every PENDING transfer with a `stuck_reason` (bumping, waiting_for_funds, at_fee_cap,
change_below_dust, nonce_released, gap_fill: the pipeline says why it waits), every pending NOOP
transfer (a gap fill: later nonces of its account wait behind it), and every transfer in
BROADCAST whose latest send is older than `older_than_s` (sent, not in a block yet). Each is
counted under one reason: its stuck_reason, else "gap_fill" for a NOOP, else "not_included".

Why two narrow queries and no ORM rows: at 100,000 pending transfers the list must stay cheap.
The filter is `status = 'PENDING'` (the leading column of ix_tx_status_heartbeat) and a
condition few pending rows meet; the counts are one GROUP BY, and only the rows shown (oldest
wait first, `limit`) are read, with their attempt counts and last event reason in one query each.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, or_, select
from sqlalchemy.orm import Session

from pipeline.lookup import chain_spec
from pipeline.models import Transaction, TransactionAttempt, TransactionEvent, utcnow
from pipeline.stages import Stage, Status
from pipeline.steps import StepContext
from workers.attempt_view import iso, price_of

NOOP = "NOOP"
GAP_FILL, NOT_INCLUDED = "gap_fill", "not_included"
DEFAULT_OLDER_THAN_S = 60
DEFAULT_LIMIT = 100
_CHUNK = 500  # ids per IN (...) list: far below every database's bound-parameter limit


@dataclass(frozen=True)
class StuckTransfer:
    """One listed transfer: where it is, why it waits, since when, and what was done last."""

    transaction_id: str
    chain: str
    kind: str
    stage: str
    stuck_reason: str | None
    reason: str  # what it is counted under: stuck_reason, gap_fill or not_included
    nonce: int | None
    attempts: int
    last_fee: dict[str, int] | None
    waiting_since: datetime
    last_event: str | None
    last_event_detail: str | None
    held: bool

    def to_dict(self, now: datetime) -> dict[str, Any]:
        return {"transaction_id": self.transaction_id, "chain": self.chain, "kind": self.kind, "stage": self.stage,
                "stuck_reason": self.stuck_reason, "reason": self.reason, "nonce": self.nonce, "attempts": self.attempts,
                "last_fee": self.last_fee, "waiting_since": iso(self.waiting_since),
                "waiting_s": waited_s(self.waiting_since, now), "last_event": self.last_event,
                "last_event_detail": self.last_event_detail, "held": self.held}


@dataclass(frozen=True)
class StuckReport:
    """The transfers shown (oldest wait first, at most the limit) and the counts of all of them."""

    transfers: list[StuckTransfer]
    by_reason: dict[str, int]
    older_than_s: int
    chain: str | None
    taken_at: datetime

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def summary(self) -> str:
        """`3 transfers stuck: 1 bumping, 1 gap_fill, 1 waiting_for_funds`, or `nothing stuck`."""
        if not self.total:
            return "nothing stuck" + (f" on {self.chain}" if self.chain else "")
        parts = ", ".join(f"{count} {reason}" for reason, count in self.by_reason.items())
        noun = "transfer" if self.total == 1 else "transfers"
        shown = f" (the {len(self.transfers)} waiting longest shown)" if len(self.transfers) < self.total else ""
        return f"{self.total} {noun} stuck: {parts}{shown}"

    def to_dict(self) -> dict[str, Any]:
        return {"taken_at": iso(self.taken_at), "older_than_s": self.older_than_s, "chain": self.chain,
                "total": self.total, "by_reason": self.by_reason, "summary": self.summary(),
                "transfers": [t.to_dict(self.taken_at) for t in self.transfers]}


def waited_s(since: datetime, now: datetime) -> int:
    return max(0, int((now - since).total_seconds()))


def _waiting_since() -> ColumnElement[datetime]:
    """A sent transfer waits since its latest send; any other since its stage changed."""
    sent = func.coalesce(Transaction.last_broadcast_at, Transaction.stage_changed_at)
    return case((Transaction.stage == Stage.BROADCAST.value, sent), else_=Transaction.stage_changed_at)


def _reason() -> ColumnElement[str]:
    return case((Transaction.stuck_reason.is_not(None), Transaction.stuck_reason),
                (Transaction.kind == NOOP, literal(GAP_FILL)), else_=literal(NOT_INCLUDED))


def stuck_filter(now: datetime, older_than_s: int, chain: str | None) -> list[ColumnElement[bool]]:
    cutoff = now - timedelta(seconds=older_than_s)
    sent_before = or_(Transaction.last_broadcast_at < cutoff,  # no coalesce(): an index can serve it
                      and_(Transaction.last_broadcast_at.is_(None), Transaction.stage_changed_at < cutoff))
    sent_long_ago = and_(Transaction.stage == Stage.BROADCAST.value, sent_before)
    waiting = or_(Transaction.stuck_reason.is_not(None), Transaction.kind == NOOP, sent_long_ago)
    chosen = [Transaction.status == Status.PENDING.value, waiting]
    return chosen + ([Transaction.chain == chain] if chain else [])


def find_stuck(session: Session, now: datetime, older_than_s: int = DEFAULT_OLDER_THAN_S, chain: str | None = None,
               limit: int = DEFAULT_LIMIT) -> StuckReport:
    """The report at `now` (see the module docstring)."""
    where = stuck_filter(now, older_than_s, chain)
    reason = _reason().label("reason")
    counted = session.execute(select(reason, func.count()).where(*where).group_by(reason)).all()
    by_reason = dict(sorted(((r, int(n)) for r, n in counted), key=lambda item: (-item[1], item[0])))
    since = _waiting_since().label("since")
    rows = session.execute(select(
        Transaction.transaction_id, Transaction.chain, Transaction.kind, Transaction.stage, Transaction.stuck_reason,
        _reason(), Transaction.nonce, Transaction.fee_params, since, Transaction.held_at)
        .where(*where).order_by(since, Transaction.transaction_id).limit(limit)).all()
    ids = [row[0] for row in rows]
    counts, events = _attempt_counts(session, ids), _last_events(session, ids)
    shown = [StuckTransfer(tx_id, chain_, kind, stage, sub, why, nonce, counts.get(tx_id, 0), price_of(fees), at,
                           *events.get(tx_id, (None, None)), held_at is not None)
             for tx_id, chain_, kind, stage, sub, why, nonce, fees, at, held_at in rows]
    return StuckReport(shown, by_reason, older_than_s, chain, now)


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start:start + _CHUNK]


def _attempt_counts(session: Session, ids: Sequence[str]) -> dict[str, int]:
    """Signed attempts per transfer (ix_transaction_attempts_transaction_id)."""
    counts: dict[str, int] = {}
    for chunk in _chunks(ids):
        rows = session.execute(select(TransactionAttempt.transaction_id, func.count())
                               .where(TransactionAttempt.transaction_id.in_(chunk))
                               .group_by(TransactionAttempt.transaction_id))
        counts.update({tx_id: int(count) for tx_id, count in rows})
    return counts


def _last_events(session: Session, ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
    """The latest event with a reason per transfer: (reason, detail)."""
    found: dict[str, tuple[str, str | None]] = {}
    for chunk in _chunks(ids):
        latest = (select(func.max(TransactionEvent.id)).where(TransactionEvent.transaction_id.in_(chunk),
                                                              TransactionEvent.reason.is_not(None))
                  .group_by(TransactionEvent.transaction_id))
        rows = session.execute(select(TransactionEvent.transaction_id, TransactionEvent.reason, TransactionEvent.detail)
                               .where(TransactionEvent.id.in_(latest)))
        found.update({tx_id: (reason, detail) for tx_id, reason, detail in rows})
    return found


def list_stuck(ctx: StepContext, older_than_s: int = DEFAULT_OLDER_THAN_S, chain: str | None = None,
               limit: int = DEFAULT_LIMIT) -> StuckReport:
    """`paratro stuck`: an unknown chain is bad input (UnknownChainError naming the known ones)."""
    if chain is not None:
        chain_spec(ctx.registry, chain)
    with ctx.db.reading() as session:
        return find_stuck(session, utcnow(), older_than_s, chain, limit)
