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
from pipeline.driving import Run, hand_off, load_held, park, release, take
from pipeline.errors import NotFound, PipelineError, Superseded, UnprovenRejection
from pipeline.lifecycle import is_final, record_note
from pipeline.models import Transaction
from pipeline.recovery import hold
from pipeline.steps import STEP_FUNCTIONS
from pipeline.steps.context import Outcome, StepContext
from pipeline.steps.handover import StepReport, conclude
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
    "bump_fee": RetryBudget(8, 1.0, 60),
}


def backoff(budget: RetryBudget, attempt: int, cap: float) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)] (AWS architecture blog's advice)."""
    return random.uniform(0, min(budget.cap_s, cap, budget.base_s * 2**attempt))


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, (PipelineError, ChainError, SignerError)) and exc.transient


def run_message(ctx: StepContext, step: str, transaction_id: str, seq: int | None, errors: int = 0,
                inline: frozenset[str] = frozenset()) -> StepReport:
    """Run one delivered step message to its conclusion (see the module docstring). A next step
    named in `inline` is taken in the conclusion's own commit and returned as `next_run`."""
    try:
        with ctx.db.unit_of_work() as session:
            run = take(session, transaction_id, seq, step, ctx.step_lease_s, errors, inline)
    except NotFound:
        return StepReport("unknown")
    if run is None:
        return StepReport("dropped")
    return run_taken(ctx, run)


def run_taken(ctx: StepContext, run: Run) -> StepReport:
    """The step and its conclusion, for a run that holds the transfer's token (a next step in
    `run.inline` comes back as `next_run`, already taken)."""
    try:
        outcome = STEP_FUNCTIONS[run.step](ctx, run)
    except Superseded as exc:
        return StepReport("dropped", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - every error ends in a recorded decision
        return _after_error(ctx, run, exc)
    return _conclude(ctx, run, outcome)


def _conclude(ctx: StepContext, run: Run, outcome: Outcome) -> StepReport:
    if outcome.report is not None:  # the step concluded in its own last unit of work
        return outcome.report
    try:
        with ctx.db.unit_of_work() as session:
            return conclude(ctx, session, run, load_held(session, run), outcome)
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
