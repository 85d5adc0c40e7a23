"""Publishing step messages: each carries only the transaction id and the driver token.

A message is published after the DB transaction that wrote its outbox row commits. Publishing
can fail (broker down): the row then becomes due at once and the relay publishes it when the
broker is back. Nothing here decides anything; a copy published twice is dropped at pick-up.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog

from pipeline.driving import Dispatch, mark_due_now
from pipeline.steps import StepContext
from pipeline.stages import STEPS
from workers.app import QUEUE_PREFIX, app, task_name

log = structlog.get_logger("paratro.routing")


def publish(dispatch: Dispatch) -> None:
    """Send one step message (raises the broker's error)."""
    app.send_task(task_name(dispatch.step), args=(dispatch.transaction_id, dispatch.seq),
                  kwargs={"errors": dispatch.errors}, countdown=dispatch.countdown_s or None)


def publish_after_commit(ctx: StepContext, dispatch: Dispatch | None) -> bool:
    """Publish; on failure leave the outbox row due now for the relay. True if published."""
    if dispatch is None:
        return True
    try:
        publish(dispatch)
        return True
    except Exception as exc:  # noqa: BLE001 - kombu/redis raise many types; the outbox keeps it
        log.warning("publish.deferred", tx=dispatch.transaction_id, step=dispatch.step,
                    error=f"{type(exc).__name__}: {str(exc)[:200]}")
    try:
        with ctx.db.unit_of_work() as session:
            mark_due_now(session, dispatch)
    except Exception as exc:  # noqa: BLE001 - the row is still there; due at its grace deadline
        log.warning("publish.mark_due_failed", tx=dispatch.transaction_id, error=f"{type(exc).__name__}")
    return False


def queue_lengths(queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each queue right now (Redis list lengths, over the app's broker
    connection); raises the broker's error."""
    with app.connection_for_write() as connection:
        client = connection.default_channel.client
        return {queue: int(client.llen(queue)) for queue in queues}


def backlogged_steps() -> frozenset[str]:
    """Steps whose queue holds messages right now: a due outbox row of such a step is probably
    still queued, so the relay does not copy it yet. Empty if Redis cannot say."""
    try:
        lengths = queue_lengths(QUEUE_PREFIX + step for step in STEPS)
    except Exception as exc:  # noqa: BLE001 - broker trouble: publishing will say so too
        log.warning("relay.queue_lengths_unknown", error=f"{type(exc).__name__}")
        return frozenset()
    return frozenset(step for step in STEPS if lengths[QUEUE_PREFIX + step] > 0)
