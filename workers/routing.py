"""Turning a transfer id into the Celery chain of its remaining steps."""

from __future__ import annotations

from celery import chain
from celery.canvas import Signature

from pipeline.stages import STEPS
from workers.app import app, task_name


def remaining_chain(transaction_id: str, from_step: str = STEPS[0]) -> Signature:
    """The steps from `from_step` to `confirm`, each an immutable signature carrying only the id."""
    start = STEPS.index(from_step)
    return chain(*(app.signature(task_name(step), args=(transaction_id,), immutable=True) for step in STEPS[start:]))


def enqueue(transaction_id: str, from_step: str = STEPS[0]) -> None:
    """Nudge the queue; if this fails the transfer is still in the DB and the sweeper finds it."""
    remaining_chain(transaction_id, from_step).apply_async()
