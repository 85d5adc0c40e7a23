"""A run's conclusion: who drives the transfer next, written in one DB transaction.

Kept apart from the runner so that a step can write its conclusion in its own last unit of work
(`conclude_within`): the stage it reached, its event rows and the hand-over commit together, one
DB transaction (and, on SQLite, one hold of the write lock) fewer per step. The runner concludes
the other outcomes (and any step that returns without concluding) in a unit of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy.orm import Session

from pipeline.driving import Dispatch, Run, hand_off, hand_to_stage, hand_to_tracker, next_step, park, release, take_here
from pipeline.models import Transaction
from pipeline.stages import FINAL, TRACKED_STAGES, Stage
from pipeline.steps.context import Outcome, OutcomeKind, StepContext


@dataclass(frozen=True)
class StepReport:
    """What happened, for the log line, and the message to publish after the commit (if any)."""

    result: str  # an OutcomeKind value, or "dropped", "retry", "exhausted", "held", "unknown"
    dispatch: Dispatch | None = None
    stage: str | None = None
    error: str | None = None
    next_run: Run | None = None  # already taken by this process: run it now (`runner.run_taken`)


def conclude(ctx: StepContext, session: Session, run: Run, tx: Transaction, outcome: Outcome) -> StepReport:
    """Hand the transfer on according to `outcome`; `tx` is the run's held row in `session`."""
    grace = ctx.stall_after_s
    if outcome.kind is OutcomeKind.FINAL and Stage(tx.stage) not in FINAL:
        # a "fail" that fell back to an earlier sent attempt (pipeline.attempts): followed again
        return StepReport("fell_back", hand_to_stage(session, tx, grace), tx.stage)
    if outcome.kind in (OutcomeKind.ADVANCED, OutcomeKind.NOOP):
        following = next_step(tx)
        if following in run.inline and following != run.step:
            # This process runs it next: taken in this commit (no message, no outbox row).
            nxt = take_here(tx, following, ctx.step_lease_s, run.inline)
            return StepReport(outcome.kind.value, None, tx.stage, next_run=nxt)
        return StepReport(outcome.kind.value, hand_to_stage(session, tx, grace), tx.stage)
    dispatch: Dispatch | None = None
    if outcome.kind is OutcomeKind.WAIT and Stage(tx.stage) in TRACKED_STAGES:
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


def conclude_within(ctx: StepContext, session: Session, run: Run, tx: Transaction, kind: OutcomeKind,
                    step: str | None = None) -> Outcome:
    """The step's outcome at `tx`'s stage, concluded in the step's own unit of work (the caller
    returns it from inside that unit); `step` for a RESTART."""
    outcome = replace(Outcome.of(kind, tx), step=step)
    return replace(outcome, report=conclude(ctx, session, run, tx, outcome))
