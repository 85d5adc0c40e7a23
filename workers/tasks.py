"""The Celery tasks: thin. A step task hands its message to `pipeline.steps.runner` and publishes
the message that the run's conclusion wrote to the outbox; the beat tasks sweep and relay.

No Celery chain links the steps: each step's conclusion is committed with the next message's
outbox row (its new fencing token), and published after the commit. A task delivered twice, or
from a superseded driver, is dropped by the runner and passes nothing on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import structlog

from pipeline.recovery import claim_stalled, due_messages
from pipeline.stages import STEPS
from pipeline.steps import StepContext
from pipeline.steps.runner import StepReport, run_message, run_taken
from workers import metrics, runtime
from workers.app import WORKER_QUEUES_ENV, app, task_name
from workers.routing import backlogged_steps, publish_after_commit

log = structlog.get_logger("paratro.worker")

_QUIET = frozenset({"dropped"})


def run_step(step: str, transaction_id: str, seq: int | None, errors: int) -> str:
    """Run the delivered step, then each next step this worker consumes, in this process
    (`inline_steps`); publish the message of the first step that is due later or belongs to
    another queue."""
    ctx = runtime.context()
    inline = inline_steps()
    report = _run_and_log(ctx, step, transaction_id, seq, lambda: run_message(ctx, step, transaction_id, seq,
                                                                               errors, inline))
    while report.next_run is not None:
        run = report.next_run
        report = _run_and_log(ctx, run.step, transaction_id, run.seq, lambda: run_taken(ctx, run))
    publish_after_commit(ctx, report.dispatch)
    return transaction_id


def inline_steps() -> frozenset[str]:
    """Steps whose queue this worker consumes (`WORKER_QUEUES_ENV`, set by `paratro worker`): a
    transfer moving on to one of them is taken in the same commit and run here at once
    (`runner.run_taken`) instead of through the broker: no round trip, no queue wait, no task and
    no take per step. A retry or a poll (a countdown) always goes through the broker."""
    queues = frozenset(filter(None, os.environ.get(WORKER_QUEUES_ENV, "").split(",")))
    return frozenset(step for step in STEPS if task_name(step) in queues)


def _run_and_log(ctx: StepContext, step: str, transaction_id: str, seq: int | None,
                 body: Callable[[], StepReport]) -> StepReport:
    started = time.monotonic()
    report = body()
    metrics.observe_step(ctx, step, transaction_id, report, time.monotonic() - started)
    bound = log.bind(step=step, tx=transaction_id, seq=seq)
    if report.result == "dropped":
        bound.info("step.dropped", reason=report.error or "superseded message")
    elif report.result in ("held", "unrecorded", "unknown"):
        bound.error(f"step.{report.result}", stage=report.stage, error=report.error)
    elif report.result in ("retry", "exhausted"):
        bound.warning(f"step.{report.result}", errors=report.dispatch.errors if report.dispatch else None,
                      stage=report.stage, error=report.error,
                      countdown=round(report.dispatch.countdown_s, 2) if report.dispatch else None)
    else:
        bound.info("step.done", outcome=report.result, stage=report.stage)
    return report


def _register(step: str) -> Any:
    def step_task(transaction_id: str, seq: int | None = None, errors: int = 0) -> str:
        return run_step(step, transaction_id, seq, errors)

    step_task.__name__ = step
    step_task.__doc__ = f"Pipeline step {step!r} for one transaction id and driver token."
    return app.task(name=task_name(step), acks_late=True)(step_task)


STEP_TASKS = {step: _register(step) for step in STEPS}


@app.task(name=task_name("sweep"), acks_late=True, ignore_result=True)
def sweep() -> int:
    """Hand every pending transfer that nobody drives (lease expired, park time up) to a new driver."""
    ctx = runtime.context()
    with ctx.db.unit_of_work() as session:
        claimed = claim_stalled(session, ctx.stall_after_s)
    for redrive in claimed:
        publish_after_commit(ctx, redrive.dispatch)
        log.warning("sweeper.redrive", tx=redrive.transaction_id, stage=redrive.stage.value, step=redrive.step)
    return len(claimed)


@app.task(name=task_name("relay"), acks_late=True, ignore_result=True)
def relay() -> int:
    """Publish outbox messages that should exist by now but were not picked up (same token)."""
    ctx = runtime.context()
    backlogged = backlogged_steps()
    with ctx.db.unit_of_work() as session:
        dispatches = due_messages(session, ctx.stall_after_s, backlogged)
    for dispatch in dispatches:
        publish_after_commit(ctx, dispatch)
        log.info("relay.published", tx=dispatch.transaction_id, step=dispatch.step, seq=dispatch.seq)
    return len(dispatches)
