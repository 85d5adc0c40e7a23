"""A point-in-time picture of the pipeline from the database: what ops and the metrics read.

One function, `snapshot(session, now)`, runs a handful of GROUP BY / MIN queries (the same SQL on
SQLite and PostgreSQL) and returns plain numbers, so `paratro status`, the API's `/metrics` and the
worker exporter all report the same thing from the same source of truth. No Prometheus and no
broker here: queue depths live in Redis and are the callers' business.

Why the database and not in-process counters: a transfer's state is the database's; a counter in
one worker process would miss what other processes did and forget everything on a restart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.models import ChainTracker, OutboxMessage, Transaction, WebhookAttempt, WebhookEvent
from pipeline.stages import Status

FAILURE_WINDOW = timedelta(hours=24)
NO_REASON = "unknown"  # a FAILED transfer without a reason code (should not happen; counted, not hidden)


@dataclass(frozen=True)
class OldestPending:
    """The pending transfer that has waited longest since it was created."""

    transaction_id: str
    chain: str
    stage: str
    age_s: float


@dataclass(frozen=True)
class TrackerState:
    """A chain's confirmation tracker as of its last completed tick."""

    tracked: int  # transfers it followed then
    head: int | None
    last_tick_age_s: float | None  # None: it never completed a tick


@dataclass(frozen=True)
class Snapshot:
    """Counts and ages at `taken_at` (naive UTC, like every timestamp in the database)."""

    taken_at: datetime
    transfers: dict[tuple[str, str], int]  # (chain, status) -> transfers
    pending_by_stage: dict[str, int]  # stage -> PENDING transfers
    held: int  # PENDING transfers held for ops (`paratro replay` after the cause is fixed)
    oldest_pending: OldestPending | None
    failures_total: dict[str, int]  # failure_reason -> FAILED transfers, ever
    failures_24h: dict[str, int]  # failure_reason -> transfers FAILED within FAILURE_WINDOW of taken_at
    outbox_due: int  # step messages past their deadline and not yet picked up
    outbox_lag_s: float | None  # age of the oldest of those (since it was written); None if none is due
    webhooks_pending: int  # events not delivered yet (due now or scheduled for a retry)
    webhooks_due: int  # pending events whose next attempt time has passed
    webhooks_oldest_due_s: float | None  # how long the most overdue of those has waited
    webhooks_failed: int  # events given up on (resend them with `paratro webhooks resend`)
    webhook_attempts: dict[str, int]  # attempt outcome (delivered, retry, failed) -> attempts, ever
    # chain -> its tracker; a chain with tracked transfers and an old last tick has no live tracker
    # (no worker consumes paratro.tracker, or beat is down): its transfers fall back to the sweeper
    trackers: dict[str, TrackerState] = field(default_factory=dict)

    @property
    def pending(self) -> int:
        return sum(self.pending_by_stage.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuple keys become nested `{chain: {status: n}}`, times ISO-8601 UTC."""
        data = asdict(self)
        data["taken_at"] = self.taken_at.isoformat(timespec="seconds") + "Z"
        by_chain: dict[str, dict[str, int]] = {}
        for (chain, status), count in sorted(self.transfers.items()):
            by_chain.setdefault(chain, {})[status] = count
        data["transfers"] = by_chain
        data["pending"] = self.pending
        return data


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else round(max(0.0, (now - then).total_seconds()), 3)


def _counts(session: Session, *columns: Any, where: Any = None) -> dict[Any, int]:
    """`SELECT columns, count(*) ... GROUP BY columns` as a dict (a 1-tuple key is unwrapped)."""
    query = select(*columns, func.count()).group_by(*columns)
    if where is not None:
        query = query.where(where)
    result: dict[Any, int] = {}
    for row in session.execute(query):
        key = tuple(row[:-1]) if len(columns) > 1 else row[0]
        result[key] = int(row[-1])
    return result


def _reasons(counts: dict[Any, int]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for reason, count in counts.items():
        merged[reason or NO_REASON] = merged.get(reason or NO_REASON, 0) + count
    return merged


def snapshot(session: Session, now: datetime) -> Snapshot:
    """Read the pipeline's state as of `now` (naive UTC): a dozen indexed or grouped queries."""
    pending = Transaction.status == Status.PENDING.value
    failed = Transaction.status == Status.FAILED.value
    transfers = _counts(session, Transaction.chain, Transaction.status)
    by_stage = _counts(session, Transaction.stage, where=pending)
    held = session.scalar(select(func.count()).select_from(Transaction).where(pending, Transaction.held_at.is_not(None)))
    oldest = session.execute(
        select(Transaction.transaction_id, Transaction.chain, Transaction.stage, Transaction.created_at)
        .where(pending).order_by(Transaction.created_at, Transaction.transaction_id).limit(1)
    ).first()
    failures_total = _reasons(_counts(session, Transaction.failure_reason, where=failed))
    failures_24h = _reasons(_counts(session, Transaction.failure_reason,
                                    where=failed & (Transaction.finalized_at >= now - FAILURE_WINDOW)))
    due = (OutboxMessage.kind == "step") & (OutboxMessage.due_at <= now)
    outbox_due, outbox_oldest = session.execute(
        select(func.count(), func.min(OutboxMessage.created_at)).where(due)).one()
    webhook_pending = WebhookEvent.status == "PENDING"
    webhooks_pending = session.scalar(select(func.count()).select_from(WebhookEvent).where(webhook_pending))
    webhooks_due, webhooks_oldest_due = session.execute(
        select(func.count(), func.min(WebhookEvent.next_attempt_at))
        .where(webhook_pending, WebhookEvent.next_attempt_at <= now)).one()
    webhooks_failed = session.scalar(select(func.count()).select_from(WebhookEvent).where(WebhookEvent.status == "FAILED"))
    return Snapshot(
        taken_at=now,
        transfers=transfers,
        pending_by_stage=by_stage,
        held=int(held or 0),
        oldest_pending=None if oldest is None else OldestPending(oldest.transaction_id, oldest.chain, oldest.stage,
                                                                 _age(now, oldest.created_at) or 0.0),
        failures_total=failures_total,
        failures_24h=failures_24h,
        outbox_due=int(outbox_due or 0),
        outbox_lag_s=_age(now, outbox_oldest),
        webhooks_pending=int(webhooks_pending or 0),
        webhooks_due=int(webhooks_due or 0),
        webhooks_oldest_due_s=_age(now, webhooks_oldest_due),
        webhooks_failed=int(webhooks_failed or 0),
        webhook_attempts=_counts(session, WebhookAttempt.outcome),
        trackers={row.chain: TrackerState(int(row.tracked or 0), row.head, _age(now, row.ticked_at))
                  for row in session.scalars(select(ChainTracker).order_by(ChainTracker.chain))},
    )
