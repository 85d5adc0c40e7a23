"""Running one step message: pick it up, do the step, decide who drives the transfer next.

This is the whole protocol between the queue and the steps, kept out of the Celery layer so that
unit tests drive it with in-memory fakes and the task stays a two-liner:

    take()  -- the message's token must be the transfer's; else it was superseded: drop it
    step    -- the work, every write fenced by the run's token and the attempt it read
    conclude-- in one DB transaction: hand off to the next step (new token + outbox row; once
               broadcast, to the chain's confirmation tracker instead), retry
               the same step later (transient error, backoff with full jitter), park it for the
               sweeper (retries exhausted, deadline), hold it for ops (an error no retry cures,
               a refused send without proof), or release it (final)

The returned `StepReport.dispatch` is the message to publish after the commit; publishing is the
caller's job (the only part that needs the broker).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sqlalchemy.orm import Session

from chains.errors import ChainError
from pipeline.driving import (
    Dispatch,
    Run,
    hand_off,
    hand_to_stage,
    hand_to_tracker,
    load_held,
    next_step,
    park,
    release,
    take,
    take_here,
)
from pipeline.errors import NotFound, PipelineError, Superseded, UnprovenRejection
from pipeline.lifecycle import is_final, record_note
from pipeline.models import Transaction
from pipeline.recovery import hold
from pipeline.stages import TRACKED_STAGES, Stage
from pipeline.steps import STEP_FUNCTIONS
from pipeline.steps.context import Outcome, OutcomeKind, StepContext
from signer.base import SignerError


@dataclass(frozen=True)
class RetryBudget:
    """How often and how patiently a step retries transient trouble."""

    max_retries: int
    base_s: float
    cap_s: float


RETRY_BUDGETS: dict[str, RetryBudget] = {
    "resolve_source": RetryBudget(6, 0.5, 30),
    "validate_destination": RetryBudget(6, 0.5, 30),
    "lock_funds": RetryBudget(8, 1.0, 60),
    "request_signature": RetryBudget(8, 1.0, 60),
    "broadcast": RetryBudget(10, 1.0, 60),
    "confirm": RetryBudget(20, 2.0, 60),
}


def backoff(budget: RetryBudget, attempt: int, cap: float) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)] (AWS architecture blog's advice)."""
    return random.uniform(0, min(budget.cap_s, cap, budget.base_s * 2**attempt))


@dataclass(frozen=True)
class StepReport:
    """What happened, for the log line, and the message to publish after the commit (if any)."""

    result: str  # an OutcomeKind value, or "dropped", "retry", "exhausted", "held", "unknown"
    dispatch: Dispatch | None = None
    stage: str | None = None
    error: str | None = None
    next_run: Run | None = None  # already taken by this process: run it now (`run_taken`)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, (PipelineError, ChainError, SignerError)) and exc.transient


def run_message(ctx: StepContext, step: str, transaction_id: str, seq: int | None, errors: int = 0,
                inline: frozenset[str] = frozenset()) -> StepReport:
    """Run one delivered step message to its conclusion (see the module docstring). A next step
    named in `inline` is taken in the conclusion's own commit and returned as `next_run`."""
    try:
        with ctx.db.unit_of_work() as session:
            run = take(session, transaction_id, seq, step, ctx.step_lease_s, errors)
    except NotFound:
        return StepReport("unknown")
    if run is None:
        return StepReport("dropped")
    return run_taken(ctx, run, inline)


def run_taken(ctx: StepContext, run: Run, inline: frozenset[str] = frozenset()) -> StepReport:
    """The step and its conclusion, for a run that holds the transfer's token."""
    try:
        outcome = STEP_FUNCTIONS[run.step](ctx, run)
    except Superseded as exc:
        return StepReport("dropped", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - every error ends in a recorded decision
        return _after_error(ctx, run, exc)
    return _conclude(ctx, run, outcome, inline)


def _conclude(ctx: StepContext, run: Run, outcome: Outcome, inline: frozenset[str] = frozenset()) -> StepReport:
    grace = ctx.stall_after_s
    try:
        with ctx.db.unit_of_work() as session:
            tx = load_held(session, run)
            dispatch: Dispatch | None = None
            following = next_step(tx) if outcome.kind in (OutcomeKind.ADVANCED, OutcomeKind.NOOP) else None
            if following in inline and following != run.step:
                # This process runs it next: taken in this commit (no message, no outbox row).
                nxt = take_here(tx, following, ctx.step_lease_s)
                return StepReport(outcome.kind.value, None, tx.stage, next_run=nxt)
            if outcome.kind in (OutcomeKind.ADVANCED, OutcomeKind.NOOP):
                dispatch = hand_to_stage(session, tx, grace)
            elif outcome.kind is OutcomeKind.WAIT and Stage(tx.stage) in TRACKED_STAGES:
                hand_to_tracker(tx)  # broadcast and waiting: the chain's tracker follows it from here
            elif outcome.kind is OutcomeKind.WAIT:
                countdown = min(outcome.countdown, ctx.max_countdown_s)  # a poll that worked: errors start over
                dispatch = hand_off(session, tx, run.step, countdown, 0, grace)
            elif outcome.kind is OutcomeKind.RESTART and outcome.step:
                dispatch = hand_off(session, tx, outcome.step, publish_grace_s=grace)
            elif outcome.kind is OutcomeKind.STALLED:
                park(tx)
            else:
                release(tx)
            return StepReport(outcome.kind.value, dispatch, tx.stage)
    except Superseded as exc:
        return StepReport("dropped", error=str(exc))


def _after_error(ctx: StepContext, run: Run, exc: Exception) -> StepReport:
    """Retry later, park, or hold; written only if the run still holds the transfer."""
    error = f"{type(exc).__name__}: {str(exc)[:300]}"
    budget = RETRY_BUDGETS[run.step]
    try:
        with ctx.db.unit_of_work() as session:
            tx = load_held(session, run)
            if is_final(tx):  # the step's final commit landed though its acknowledgement was lost
                release(tx)
                return StepReport("final", stage=tx.stage, error=error)
            if not is_transient(exc) or (isinstance(exc, UnprovenRejection) and run.errors >= budget.max_retries):
                hold(session, tx, f"{run.step}: {error}")
                return StepReport("held", stage=tx.stage, error=error)
            if run.errors >= budget.max_retries:
                _exhausted(session, tx, f"{run.step}: retries exhausted: {error}")
                park(tx)
                return StepReport("exhausted", stage=tx.stage, error=error)
            countdown = backoff(budget, run.errors, ctx.max_countdown_s)
            dispatch = hand_off(session, tx, run.step, countdown, run.errors + 1, ctx.stall_after_s)
            return StepReport("retry", dispatch, tx.stage, error)
    except Superseded:
        return StepReport("dropped", error=error)
    except PipelineError as db_exc:
        # Even the database is down: the lease expires and the sweeper re-drives the transfer.
        return StepReport("unrecorded", error=f"{error}; then {type(db_exc).__name__}: {str(db_exc)[:200]}")


def _exhausted(session: Session, tx: Transaction, error: str) -> None:
    """Leave the reason on the transfer; its stage stays durable and the sweeper retries later."""
    tx.last_error = error[:1000]
    record_note(session, tx, "retries_exhausted", tx.last_error)
