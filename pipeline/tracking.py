"""Confirmation tracking per chain: one tick follows every broadcast transfer of a chain at once.

A Celery task per pending transfer per poll costs an ETA message held in worker memory and an RPC
per transfer per poll: 100,000 transfers waiting for depth during congestion would be 100,000 of
each. A tick instead reads the chain's tracked transfers (one indexed query), asks the adapter
about all of them in a few batched calls (`ChainAdapter.track`: news only), and writes only the
transfers that changed, a chunk per DB transaction. Its cost grows with what moved, not with the
backlog.

One driver per transfer still holds: a transfer handed to the tracker (`driving.hand_to_tracker`)
has a token and no message and no lease; every write here re-reads the row under lock and
requires the token and attempt the tick read (`Attempt`), so a replay or sweeper that took the
transfer meanwhile wins and the tick's view is dropped. One tick per chain at a time: the chain's
`ChainTracker` row is a lease with its own token (`acquire`/`finish`).

The tracker does the common path only (seen included -> CONFIRMING; at depth -> settled, exactly
as the confirm step settles: `record_inclusion`). Anything unusual goes to the per-transfer
confirm step (`hand_off(..., "confirm")`), which keeps the one-by-one logic: a reorg (a block
seen before is no longer canonical), and a transfer without news for `recheck_s` (dropped and to
be sent again, expired and to be replaced, or past the confirmation timeout). The confirm step
hands it back to the tracker when it is waiting again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from chains.base import Observation, SignedTransaction, TxState, TxStatus, Watched
from pipeline import ledger
from pipeline.db import translate_db_error
from pipeline.driving import Attempt, Dispatch, hand_off, hand_to_stage, release
from pipeline.errors import PipelineError
from pipeline.models import ChainTracker, Transaction, utcnow
from pipeline.stages import TRACKED_STAGES, Stage, Status
from pipeline.steps.context import StepContext, touch
from pipeline.steps.settlement import record_inclusion

log = structlog.get_logger("paratro.tracker")

TICK_LEASE_S = 600.0  # one tick's lease on its chain: longer than any tick (a TRON tick at most ~150 RPCs x 10 s)
CHUNK = 100  # transfers written per DB transaction: short row locks, few commits



@dataclass(frozen=True)
class TrackerLimits:
    """How the tracker hands transfers to the per-transfer confirm step."""

    recheck_s: float = 15.0  # no news this long after broadcast or hand-over: ask one by one
    confirm_timeout_s: float = 1800.0
    handoffs_per_tick: int = 200  # bound on confirm-step messages per tick and chain
    publish_grace_s: float = 120.0


@dataclass(frozen=True)
class Followed:
    """One tracked transfer as the tick read it."""

    transaction_id: str
    attempt: Attempt
    from_address: str
    nonce: int | None
    block_number: int | None
    block_hash: str | None
    build_context: str | None
    quiet_since: datetime  # last hand-over to the tracker or last send, whichever is later
    broadcast_at: datetime | None

    def watched(self) -> Watched:
        context = json.loads(self.build_context) if self.build_context else {}
        return Watched(key=self.transaction_id, signed=SignedTransaction(b"", self.attempt.tx_hash or "", context),
                       sender=self.from_address, nonce=self.nonce, block_number=self.block_number,
                       block_hash=self.block_hash)


@dataclass
class TickReport:
    """What one tick did, for the log line, the metrics and the scale benchmark."""

    chain: str
    ran: bool = True
    tracked: int = 0
    head: int | None = None
    news: int = 0
    confirming: int = 0
    confirmed: int = 0
    failed: int = 0
    handed: int = 0  # to the per-transfer confirm step
    superseded: int = 0  # another driver took the transfer between read and write
    errors: int = 0  # transfers that could not be written (handed to the confirm step)
    rpc_calls: int = 0
    error: str | None = None  # the tick failed (chain or database trouble); retried next tick
    dispatches: list[Dispatch] = field(default_factory=list)


# --- the chain's lease --------------------------------------------------------------------------

def acquire(session: Session, chain: str, lease_s: float = TICK_LEASE_S) -> tuple[int, dict[str, Any]] | None:
    """Take the chain's tick lease: (token, cursor), or None while another tick holds it."""
    row = session.get(ChainTracker, chain, with_for_update=True, populate_existing=True)
    now = utcnow()
    if row is None:
        row = ChainTracker(chain=chain, cursor="{}", lease_token=0, tracked=0)
        try:
            with session.begin_nested():  # a savepoint: PostgreSQL aborts the whole transaction otherwise
                session.add(row)
        except IntegrityError:  # another tick created it first: it holds the chain now
            return None
    elif _leased(row, now):
        return None
    row.lease_token += 1
    row.lease_until = now + timedelta(seconds=lease_s)
    return row.lease_token, json.loads(row.cursor or "{}")


def _leased(row: ChainTracker, now: datetime) -> bool:
    return row.lease_until is not None and row.lease_until > now


def _keeping_cursor(chains: Sequence[str]) -> ColumnElement[bool]:
    return and_(ChainTracker.chain.in_(list(chains)), ChainTracker.cursor != "{}")


def has_cursor(session: Session, chains: Sequence[str]) -> bool:
    """Whether any of these chains' trackers keeps a cursor (cheap: one row per chain)."""
    return session.scalar(select(ChainTracker.chain).where(_keeping_cursor(chains)).limit(1)) is not None


def forget_idle_cursors(session: Session, chains: Sequence[str]) -> list[str]:
    """Drop the cursor of these chains (none has a tracked transfer), unless a tick holds one: when
    transfers come again, the scan starts near the head instead of catching up, a bounded number
    of blocks per tick, on every block mined while the chain was idle. Nothing can be missed: a
    transfer handed over later was sent after this, so it lands after the new start. (A tracker
    that was down keeps its cursor and catches up: its transfers are in those blocks.)"""
    rows = session.scalars(select(ChainTracker).where(_keeping_cursor(chains)).with_for_update())
    now = utcnow()
    forgotten = []
    for row in rows:
        if not _leased(row, now):
            row.cursor = "{}"
            forgotten.append(row.chain)
    return forgotten


def finish(session: Session, chain: str, token: int, observation: Observation | None, tracked: int) -> bool:
    """Store the cursor and mark the tick done, if the lease is still this tick's. A failed tick
    (observation None) only gives the lease back: `ticked_at` says the chain is really followed."""
    row = session.get(ChainTracker, chain, with_for_update=True, populate_existing=True)
    if row is None or row.lease_token != token:
        return False
    row.lease_until = None
    if observation is not None:
        row.cursor = json.dumps(observation.cursor, sort_keys=True)
        row.head = observation.head or row.head
        row.ticked_at = utcnow()
        row.tracked = tracked
    return True


# --- reading and deciding ---------------------------------------------------------------------

_FOLLOWED_COLUMNS = (
    Transaction.transaction_id, Transaction.driver_seq, Transaction.stage, Transaction.replacement_count,
    Transaction.tx_hash, Transaction.signature_request_id, Transaction.from_address, Transaction.nonce,
    Transaction.block_number, Transaction.block_hash, Transaction.build_context, Transaction.tracked_at,
    Transaction.last_broadcast_at, Transaction.broadcast_at,
)


def has_tracked(session: Session, chain: str) -> bool:
    """Whether the chain has any transfer for its tracker (an index seek)."""
    return session.scalar(select(Transaction.transaction_id).where(
        Transaction.chain == chain, Transaction.tracked_at.is_not(None)).limit(1)) is not None


def read_followed(session: Session, chain: str) -> list[Followed]:
    """Every transfer the chain's tracker drives, as plain values (no ORM objects: 100,000 rows)."""
    rows = session.execute(select(*_FOLLOWED_COLUMNS).where(
        Transaction.chain == chain, Transaction.tracked_at.is_not(None),
        Transaction.status == Status.PENDING.value, Transaction.held_at.is_(None)))
    followed = []
    for (tx_id, seq, stage, replacements, tx_hash, request_id, sender, nonce, block_number, block_hash,
         context, tracked_at, last_sent, first_sent) in rows:
        quiet_since = max(tracked_at, last_sent) if last_sent else tracked_at
        followed.append(Followed(tx_id, Attempt(seq, stage, replacements, tx_hash, request_id), sender, nonce,
                                 block_number, block_hash, context, quiet_since, first_sent))
    return followed


@dataclass(frozen=True)
class Decision:
    followed: Followed
    status: TxStatus | None  # record this inclusion; None: hand to the per-transfer confirm step


def decide(followed: Sequence[Followed], observation: Observation, depth: int, limits: TrackerLimits,
           now: datetime) -> list[Decision]:
    """Which transfers to write: inclusions that change something, reorgs, and (oldest first, at
    most `handoffs_per_tick`) the ones quiet for too long."""
    decisions: list[Decision] = []
    quiet: list[Followed] = []
    for item in followed:
        status = observation.statuses.get(item.transaction_id)
        if status is not None and status.state in (TxState.INCLUDED, TxState.REVERTED):
            if _changes_something(item, status, depth):
                decisions.append(Decision(item, status))
        elif status is not None or Stage(item.attempt.stage) not in TRACKED_STAGES:
            decisions.append(Decision(item, None))  # a reorg, or not ours to follow: one by one
        elif _too_quiet(item, limits, now):
            quiet.append(item)
    quiet.sort(key=lambda item: item.quiet_since)
    decisions.extend(Decision(item, None) for item in quiet[:limits.handoffs_per_tick])
    return decisions


def _changes_something(item: Followed, status: TxStatus, depth: int) -> bool:
    return (Stage(item.attempt.stage) is Stage.BROADCAST or status.confirmations >= depth
            or status.block_hash != item.block_hash)


def _too_quiet(item: Followed, limits: TrackerLimits, now: datetime) -> bool:
    """Quiet for `recheck_s`, or a quarter of its age, whichever is longer: a transfer that waits
    long (deep confirmation depths, a congested mempool) is asked about one by one ever more
    rarely, so the hand-offs do not grow into a poll per transfer. The confirmation timeout counts
    only for a transfer never seen included (as in the confirm step)."""
    age = now - (item.broadcast_at or item.quiet_since)
    if now - item.quiet_since > max(timedelta(seconds=limits.recheck_s), age / 4):
        return True
    return (Stage(item.attempt.stage) is Stage.BROADCAST and item.broadcast_at is not None
            and age > timedelta(seconds=limits.confirm_timeout_s))


# --- writing ------------------------------------------------------------------------------------

def apply(ctx: StepContext, decisions: Sequence[Decision], depth: int, limits: TrackerLimits,
          report: TickReport) -> None:
    """Write the decisions a chunk per DB transaction, each only if the transfer is still in the
    attempt the tick read and still the tracker's.

    Row locks in one order: the chunk's transfers by id, then every asset it may settle by id (as
    `ledger.lock` takes them), so a chunk and a step locking funds cannot deadlock. Each transfer
    is written in its own savepoint: one that cannot be settled (a broken adapter answer, a ledger
    invariant) is rolled back alone and handed to the confirm step, which holds it with the reason,
    instead of stopping its chain. Database trouble aborts the tick (retried next tick)."""
    for start in range(0, len(decisions), CHUNK):
        chunk = {decision.followed.transaction_id: decision for decision in decisions[start:start + CHUNK]}
        with ctx.db.unit_of_work() as session:
            rows = list(session.scalars(
                select(Transaction).where(Transaction.transaction_id.in_(sorted(chunk)))
                .order_by(Transaction.transaction_id).with_for_update().execution_options(populate_existing=True)))
            ledger.load_for_update(session, _settled_assets(rows, chunk))
            for tx in rows:
                _apply_isolated(session, tx, chunk[tx.transaction_id], depth, limits, report)


def _settled_assets(rows: Sequence[Transaction], chunk: dict[str, Decision]) -> set[str]:
    return {asset_id for tx in rows if chunk[tx.transaction_id].status is not None
            for asset_id in (tx.asset_id, tx.fee_asset_id) if asset_id}


def _apply_isolated(session: Session, tx: Transaction, decision: Decision, depth: int, limits: TrackerLimits,
                    report: TickReport) -> None:
    try:
        with session.begin_nested():
            _apply_one(session, tx, decision, depth, limits, report)
    except DBAPIError as exc:
        if isinstance(translate_db_error(exc), PipelineError):
            raise  # the database itself is in trouble (locked, gone, not migrated): the next tick retries
        _unwritable(session, tx, decision, limits, report, exc)  # this row's data (e.g. a value out of range)
    except Exception as exc:  # noqa: BLE001 - one transfer's trouble must not stop its chain
        _unwritable(session, tx, decision, limits, report, exc)


def _unwritable(session: Session, tx: Transaction, decision: Decision, limits: TrackerLimits, report: TickReport,
                exc: Exception) -> None:
    """Its savepoint is rolled back: hand it to the confirm step, which holds it with the reason."""
    report.errors += 1
    log.error("tracker.transfer_unwritable", tx=tx.transaction_id, error=f"{type(exc).__name__}: {str(exc)[:200]}")
    session.refresh(tx)
    if Attempt.of(tx) == decision.followed.attempt and tx.tracked_at is not None:
        report.dispatches.append(hand_off(session, tx, "confirm", publish_grace_s=limits.publish_grace_s))
        report.handed += 1


def _apply_one(session: Session, tx: Transaction, decision: Decision, depth: int, limits: TrackerLimits,
               report: TickReport) -> None:
    if (tx.tracked_at is None or tx.held_at is not None or tx.status != Status.PENDING.value
            or Attempt.of(tx) != decision.followed.attempt):
        report.superseded += 1
        return
    if decision.status is None:
        dispatch = (hand_off(session, tx, "confirm", publish_grace_s=limits.publish_grace_s)
                    if Stage(tx.stage) in TRACKED_STAGES else hand_to_stage(session, tx, limits.publish_grace_s))
        if dispatch is not None:
            report.dispatches.append(dispatch)
        report.handed += 1
        return
    touch(tx)
    if not record_inclusion(session, tx, decision.status, depth):
        report.confirming += 1
        return
    release(tx)
    if tx.status == Status.CONFIRMED.value:
        report.confirmed += 1
    else:
        report.failed += 1


# --- one tick -----------------------------------------------------------------------------------

def tick(ctx: StepContext, chain: str, limits: TrackerLimits) -> TickReport:
    """One tick for one chain (see the module docstring). Trouble with the chain or the database
    is reported in `error` after giving the lease back, and `ticked_at` stays old unless the tick
    completed: a tracker that keeps failing lets the sweeper take its transfers over."""
    report = TickReport(chain)
    with ctx.db.reading() as session:
        if not has_tracked(session, chain):
            report.ran = False
            return report
    with ctx.db.unit_of_work() as session:
        lease = acquire(session, chain)
    if lease is None:
        report.ran = False
        return report
    token, cursor = lease
    completed: Observation | None = None
    try:
        completed = _follow(ctx, chain, cursor, limits, report)
    except Exception as exc:  # noqa: BLE001 - logged by the task; the next tick tries again
        report.error = f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        still = report.tracked - report.confirmed - report.failed - report.handed  # followed after this tick
        with ctx.db.unit_of_work() as session:
            finish(session, chain, token, completed, max(still, 0))
    return report


def _follow(ctx: StepContext, chain: str, cursor: dict[str, Any], limits: TrackerLimits,
            report: TickReport) -> Observation:
    with ctx.db.reading() as session:  # no write lock while 100,000 rows are read
        followed = read_followed(session, chain)
    report.tracked = len(followed)
    readable, watched, unreadable = _watched(followed)
    if watched:
        observation = ctx.adapter_for(chain).track(watched, cursor)
    else:
        observation = Observation(head=0, statuses={}, cursor=cursor)
    report.head, report.news, report.rpc_calls = observation.head, len(observation.statuses), observation.rpc_calls
    depth = ctx.registry.chain(chain).confirmations
    decisions = decide(readable, observation, depth, limits, utcnow())
    decisions.extend(Decision(item, None) for item in unreadable)  # the confirm step holds them with the reason
    apply(ctx, decisions, depth, limits, report)
    return observation


def _watched(followed: Sequence[Followed]) -> tuple[list[Followed], list[Watched], list[Followed]]:
    """(readable, what the adapter is asked about, unreadable): a row whose stored data cannot be
    read is not asked about (one bad row must not blind the tick to every other transfer)."""
    readable: list[Followed] = []
    watched: list[Watched] = []
    unreadable: list[Followed] = []
    for item in followed:
        try:
            watched.append(item.watched())
            readable.append(item)
        except ValueError:
            unreadable.append(item)
    return readable, watched, unreadable
