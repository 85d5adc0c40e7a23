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
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import ColumnElement, and_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from chains.base import Observation, ReplacementPolicy, SignedTransaction, TxState, TxStatus, Watched
from pipeline import attempts, ledger, nonces
from pipeline.db import translate_db_error
from pipeline.driving import Attempt, Dispatch, hand_off, hand_to_stage, release
from pipeline.errors import PipelineError
from pipeline.ids import new_id
from pipeline.models import ChainTracker, Transaction, TransactionAttempt, utcnow
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
    bumping: bool = True  # hand transactions waiting past the chain's replacement policy to the bump step


@dataclass(frozen=True)
class Other:
    """An earlier sent attempt of a tracked transfer that may still land (a bump's original)."""

    key: str  # "<transaction id>#<attempt number>": its key in the adapter's Observation
    tx_hash: str
    build_context: str | None


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
    armed_head: int | None = None  # the bump clock (Transaction.bump_armed_head / _at)
    armed_at: datetime | None = None
    others: tuple[Other, ...] = ()

    def watched(self) -> list[Watched]:
        """The current transaction and every earlier sent attempt that may still land."""
        current = Watched(key=self.transaction_id, signed=_signed(self.attempt.tx_hash, self.build_context),
                          sender=self.from_address, nonce=self.nonce, block_number=self.block_number,
                          block_hash=self.block_hash)
        return [current] + [Watched(key=other.key, signed=_signed(other.tx_hash, other.build_context),
                                    sender=self.from_address, nonce=self.nonce) for other in self.others]


def _signed(tx_hash: str | None, build_context: str | None) -> SignedTransaction:
    return SignedTransaction(b"", tx_hash or "", json.loads(build_context) if build_context else {})


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
    handed: int = 0  # to the per-transfer confirm (or bump) step
    bumps: int = 0  # of those, to the bump step
    armed: int = 0  # bump clocks started (in the tick's closing commit)
    unarmed: list[str] = field(default_factory=list)  # what this tick read without a bump clock
    nonce_notes: list[str] = field(default_factory=list)  # cursors resynced, gaps filled (EVM)
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
    Transaction.last_broadcast_at, Transaction.broadcast_at, Transaction.bump_armed_head, Transaction.bump_armed_at,
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
         context, tracked_at, last_sent, first_sent, armed_head, armed_at) in rows:
        quiet_since = max(tracked_at, last_sent) if last_sent else tracked_at
        followed.append(Followed(tx_id, Attempt(seq, stage, replacements, tx_hash, request_id), sender, nonce,
                                 block_number, block_hash, context, quiet_since, first_sent, armed_head, armed_at))
    return _with_others(session, followed)


def _with_others(session: Session, followed: list[Followed]) -> list[Followed]:
    """Attach each re-signed transfer's earlier sent attempts that may still land (one query per
    CHUNK of re-signed transfers: none at all while nothing was ever bumped)."""
    resigned = [item.transaction_id for item in followed if item.attempt.replacement_count > 0]
    others: dict[str, list[Other]] = {}
    for start in range(0, len(resigned), CHUNK * 10):
        rows = session.execute(select(
            TransactionAttempt.transaction_id, TransactionAttempt.number, TransactionAttempt.tx_hash,
            TransactionAttempt.build_context).where(
            TransactionAttempt.transaction_id.in_(resigned[start:start + CHUNK * 10]),
            TransactionAttempt.state == attempts.LIVE, TransactionAttempt.sent_at.is_not(None)))
        for tx_id, number, tx_hash, context in rows:
            others.setdefault(tx_id, []).append(Other(f"{tx_id}#{number}", tx_hash, context))
    if not others:
        return followed
    return [replace(item, others=tuple(other for other in others.get(item.transaction_id, ())
                                       if other.tx_hash != item.attempt.tx_hash)) for item in followed]


@dataclass(frozen=True)
class Decision:
    followed: Followed
    status: TxStatus | None  # record this inclusion; None: hand to `step`
    landed: str | None = None  # the hash of an earlier attempt that is the one included
    step: str = "confirm"  # the per-transfer step it goes to when `status` is None


_ON_CHAIN = (TxState.INCLUDED, TxState.REVERTED)


def decide(followed: Sequence[Followed], observation: Observation, depth: int, limits: TrackerLimits,
           now: datetime, policy: ReplacementPolicy | None = None) -> list[Decision]:
    """Which transfers to write: inclusions that change something (of the current transaction or
    of an earlier attempt), reorgs, and (oldest first, at most `handoffs_per_tick` each) the ones
    whose transaction waited past the replacement policy (to the bump step) or quiet for too long."""
    decisions: list[Decision] = []
    quiet: list[Followed] = []
    due: list[Followed] = []
    for item in followed:
        status, landed = _status_of(item, observation)
        if status is not None and status.state in _ON_CHAIN:
            if landed is not None or _changes_something(item, status, depth):
                decisions.append(Decision(item, status, landed))
        elif status is not None or Stage(item.attempt.stage) not in TRACKED_STAGES:
            decisions.append(Decision(item, None))  # a reorg, or not ours to follow: one by one
        elif _bump_due(item, observation, policy, now):
            due.append(item)
        elif _too_quiet(item, limits, now):
            quiet.append(item)
    for waiting, step in ((due, "bump_fee"), (quiet, "confirm")):
        waiting.sort(key=lambda item: item.quiet_since)
        decisions.extend(Decision(item, None, step=step) for item in waiting[:limits.handoffs_per_tick])
    return decisions


def _status_of(item: Followed, observation: Observation) -> tuple[TxStatus | None, str | None]:
    """The news about the transfer: its current transaction's, or (when that has none on chain)
    an earlier attempt's inclusion, with that attempt's hash."""
    status = observation.statuses.get(item.transaction_id)
    if status is not None and status.state in _ON_CHAIN:
        return status, None
    for other in item.others:
        found = observation.statuses.get(other.key)
        if found is not None and found.state in _ON_CHAIN:
            return found, other.tx_hash
    return status, None


def _bump_due(item: Followed, observation: Observation, policy: ReplacementPolicy | None, now: datetime) -> bool:
    """Its latest transaction waited the chain's replacement policy since the clock was armed
    (blocks: and its nonce is the one the chain waits for; a later nonce waits behind it)."""
    if policy is None or Stage(item.attempt.stage) is not Stage.BROADCAST or item.armed_head is None:
        return False
    if policy.after_blocks is not None:
        if observation.head - item.armed_head < policy.after_blocks:
            return False
        next_nonce = observation.nonces.get(item.from_address)
        return item.nonce is None or next_nonce is None or next_nonce[0] >= item.nonce
    return (policy.after_s is not None and item.armed_at is not None
            and (now - item.armed_at).total_seconds() >= policy.after_s)


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
        dispatch = (hand_off(session, tx, decision.step, publish_grace_s=limits.publish_grace_s)
                    if Stage(tx.stage) in TRACKED_STAGES else hand_to_stage(session, tx, limits.publish_grace_s))
        if dispatch is not None:
            report.dispatches.append(dispatch)
        report.handed += 1
        report.bumps += decision.step == "bump_fee"
        return
    touch(tx)
    if decision.landed is not None:
        attempts.adopt_hash(session, tx, decision.landed)
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
        with ctx.db.unit_of_work() as session:  # the bump clocks in the lease's own commit: no extra one
            if finish(session, chain, token, completed, max(still, 0)) and completed is not None and report.unarmed:
                report.armed = arm_bump_clocks(session, report.unarmed, completed.head)
    return report


def _follow(ctx: StepContext, chain: str, cursor: dict[str, Any], limits: TrackerLimits,
            report: TickReport) -> Observation:
    with ctx.db.reading() as session:  # no write lock while 100,000 rows are read
        followed = read_followed(session, chain)
    report.tracked = len(followed)
    readable, watched, unreadable = _watched(followed)
    adapter = ctx.adapter_for(chain)
    if watched:
        observation = adapter.track(watched, cursor)
    else:
        observation = Observation(head=0, statuses={}, cursor=cursor)
    report.head, report.news, report.rpc_calls = observation.head, len(observation.statuses), observation.rpc_calls
    depth = ctx.registry.chain(chain).confirmations
    policy = adapter.replacement if limits.bumping else None
    decisions = decide(readable, observation, depth, limits, utcnow(), policy)
    decisions.extend(Decision(item, None) for item in unreadable)  # the confirm step holds them with the reason
    apply(ctx, decisions, depth, limits, report)
    if policy is not None and observation.head:
        report.unarmed = [item.transaction_id for item in readable if item.armed_head is None]
    if adapter.uses_account_nonce:
        report.nonce_notes, dispatches = keep_nonces_moving(ctx, chain, observation, limits)
        report.dispatches.extend(dispatches)
    return observation


def arm_bump_clocks(session: Session, transaction_ids: Sequence[str], head: int) -> int:
    """Start the bump clock of the broadcast transfers this tick read without one (sent or
    re-checked since the last tick) at the head the tick observed: one statement per CHUNK x 10.
    A clock only: no driver's write depends on it, so it needs no token."""
    armed = 0
    for start in range(0, len(transaction_ids), CHUNK * 10):
        result = session.execute(update(Transaction).where(
            Transaction.transaction_id.in_(transaction_ids[start:start + CHUNK * 10]),
            Transaction.tracked_at.is_not(None), Transaction.bump_armed_head.is_(None),
            Transaction.stage == Stage.BROADCAST.value).values(bump_armed_head=head, bump_armed_at=utcnow()))
        armed += int(getattr(result, "rowcount", 0) or 0)
    return armed


def keep_nonces_moving(ctx: StepContext, chain: str, observation: Observation,
                       limits: TrackerLimits) -> tuple[list[str], list[Dispatch]]:
    """Account-nonce chains: resync cursors with the chain, and fill every gap that later nonces
    wait behind with a NOOP transfer (`pipeline.nonces`), each in its own DB transaction."""
    notes: list[str] = []
    with ctx.db.reading() as session:
        drifted = nonces.drifted(session, chain, observation.nonces)
        gaps = nonces.find_gaps(session, chain)
    if drifted:
        with ctx.db.unit_of_work() as session:
            notes.extend(nonces.reconcile(session, chain, observation.nonces))
    dispatches = []
    native = ctx.registry.chain(chain).native.symbol
    for gap in gaps:
        with ctx.db.unit_of_work() as session:
            noop = nonces.claim_gap(session, gap, native, new_id("transaction"))
            if noop is not None:
                session.flush()
                dispatches.append(hand_off(session, noop, "lock_funds", publish_grace_s=limits.publish_grace_s))
                notes.append(f"nonce {gap.nonce} of {gap.account_id} filled by {noop.transaction_id}")
    return notes, dispatches


def _watched(followed: Sequence[Followed]) -> tuple[list[Followed], list[Watched], list[Followed]]:
    """(readable, what the adapter is asked about, unreadable): a row whose stored data cannot be
    read is not asked about (one bad row must not blind the tick to every other transfer)."""
    readable: list[Followed] = []
    watched: list[Watched] = []
    unreadable: list[Followed] = []
    for item in followed:
        try:
            watched.extend(item.watched())
            readable.append(item)
        except ValueError:
            unreadable.append(item)
    return readable, watched, unreadable
