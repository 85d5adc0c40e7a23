"""The step tasks: thin. Load nothing, decide nothing; call the pipeline step, map its outcome.

ADVANCED/NOOP pass the chain on (a redelivered task whose work is done still nudges the next
step, which is how a message lost between two steps is recovered). FINAL/STALLED end the chain.
WAIT re-runs the step after a countdown (never a sleep in the worker). Transient errors retry
with exponential backoff and full jitter, up to the step's budget; then the transfer keeps its
durable stage, records why, and waits for the sweeper or `paratro replay`. An error no retry can
cure (wrong node, signer bug) holds the transfer: the sweeper skips it until ops replays it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import structlog
from celery import Task
from sqlalchemy.orm import Session

from pipeline.errors import NotFound, PipelineError
from pipeline.lifecycle import record_note
from pipeline.models import Transaction
from pipeline.recovery import claim_stalled, hold
from pipeline.settings import get_settings
from pipeline.stages import STEPS
from pipeline.steps import STEP_FUNCTIONS, OutcomeKind
from pipeline.steps.context import load_tx, touch
from chains.errors import ChainError
from signer.base import SignerError
from workers import runtime
from workers.app import app, task_name
from workers.routing import enqueue

log = structlog.get_logger("paratro.worker")


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


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, (PipelineError, ChainError, SignerError)) and exc.transient


def run_step(task: Task, step: str, transaction_id: str, errors: int) -> str:
    settings = get_settings()
    budget = RETRY_BUDGETS[step]
    bound = log.bind(step=step, tx=transaction_id)
    try:
        outcome = STEP_FUNCTIONS[step](runtime.context(), transaction_id)
    except NotFound:
        bound.error("step.unknown_transaction")
        task.request.chain = None
        return transaction_id
    except Exception as exc:
        if not _is_transient(exc):
            bound.exception("step.held", error=f"{type(exc).__name__}: {str(exc)[:300]}")
            reason = f"{step}: {type(exc).__name__}: {exc}"
            _record(transaction_id, lambda session, tx: hold(session, tx, reason))
            task.request.chain = None
            return transaction_id
        if errors >= budget.max_retries:
            reason = f"{step}: retries exhausted: {exc}"
            _record(transaction_id, lambda session, tx: _exhausted(session, tx, reason))
            bound.error("step.retries_exhausted", errors=errors, error=str(exc)[:300])
            task.request.chain = None
            return transaction_id
        _record(transaction_id, lambda session, tx: touch(tx), quiet=True)  # alive: the sweeper waits
        countdown = backoff(budget, errors, settings.max_countdown_s)
        bound.warning("step.retry", errors=errors + 1, countdown=round(countdown, 2), error=str(exc)[:300])
        raise task.retry(args=(transaction_id,), kwargs={"errors": errors + 1}, countdown=countdown,
                         max_retries=None) from exc
    bound.info("step.done", outcome=outcome.kind.value, stage=outcome.stage.value)
    if outcome.kind is OutcomeKind.WAIT:
        raise task.retry(args=(transaction_id,), kwargs={"errors": errors}, max_retries=None,
                         countdown=min(outcome.countdown, settings.max_countdown_s))
    if outcome.kind is OutcomeKind.RESTART and outcome.step:
        task.request.chain = None
        enqueue(transaction_id, outcome.step)
    if outcome.kind in (OutcomeKind.FINAL, OutcomeKind.STALLED):
        task.request.chain = None
    return transaction_id


def _exhausted(session: Session, tx: Transaction, error: str) -> None:
    """Leave the reason on the transfer; its stage stays durable and the sweeper retries later."""
    tx.last_error = error[:1000]
    record_note(session, tx, "retries_exhausted", tx.last_error)


def _record(transaction_id: str, write: Callable[[Session, Transaction], None], quiet: bool = False) -> None:
    """Best effort: if even the database is down, the log line above is what remains."""
    try:
        with runtime.context().db.unit_of_work() as session:
            write(session, load_tx(session, transaction_id))
    except PipelineError as exc:
        if not quiet:
            log.error("step.record_failed", tx=transaction_id, error=f"{type(exc).__name__}: {str(exc)[:200]}")


def _register(step: str) -> Any:
    def step_task(self: Task, transaction_id: str, errors: int = 0) -> str:
        return run_step(self, step, transaction_id, errors)

    step_task.__name__ = step
    step_task.__doc__ = f"Pipeline step {step!r} for one transaction id."
    return app.task(bind=True, name=task_name(step), acks_late=True, max_retries=None)(step_task)


STEP_TASKS = {step: _register(step) for step in STEPS}


@app.task(name=task_name("sweep"), acks_late=True, ignore_result=True)
def sweep() -> int:
    """Re-drive every pending transfer whose heartbeat is older than `stall_after_s`."""
    settings = get_settings()
    with runtime.context().db.unit_of_work() as session:
        claimed = claim_stalled(session, settings.stall_after_s)
    for redrive in claimed:
        enqueue(redrive.transaction_id, redrive.step)
        log.warning("sweeper.redrive", tx=redrive.transaction_id, stage=redrive.stage.value, step=redrive.step)
    return len(claimed)
