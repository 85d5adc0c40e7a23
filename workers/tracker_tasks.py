"""The confirmation tracker's Celery tasks: beat fans out one tick per chain with tracked transfers.

`paratro.track` (beat, every `tracker_interval_s`) asks, per registry chain, whether any transfer
waits for that chain's tracker (an index seek) and sends `paratro.track_chain` for those only, with
an expiry, so ticks never pile up behind a slow one. The tick itself is `pipeline.tracking.tick`;
this module publishes the confirm-step messages its commits wrote and logs what it did.
"""

from __future__ import annotations

import time

import structlog
from prometheus_client import Histogram

from pipeline.tracking import TrackerLimits, forget_idle_cursors, has_cursor, has_tracked, tick
from pipeline.settings import get_settings
from workers import runtime
from workers.app import app, task_name
from workers.routing import publish_after_commit

log = structlog.get_logger("paratro.tracker")

TICK_SECONDS = Histogram("paratro_tracker_tick_seconds", "Wall time of one confirmation tracker tick",
                         ["chain"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))


def limits() -> TrackerLimits:
    settings = get_settings()
    return TrackerLimits(recheck_s=settings.tracker_recheck_s, confirm_timeout_s=settings.confirm_timeout_s,
                         bumping=settings.fee_bumping,
                         publish_grace_s=settings.stall_after_s)


@app.task(name=task_name("track"), acks_late=True, ignore_result=True)
def track() -> int:
    """Send a tick for every chain whose tracker has transfers to follow."""
    ctx = runtime.context()
    expires = get_settings().tracker_interval_s * 5
    with ctx.db.reading() as session:
        busy = {chain: has_tracked(session, chain) for chain in ctx.registry.names()}
        idle = [chain for chain, tracked in busy.items() if not tracked]
        stale = idle and has_cursor(session, idle)
    if stale:
        with ctx.db.unit_of_work() as session:
            forget_idle_cursors(session, idle)
    chains = [chain for chain, tracked in busy.items() if tracked]
    for chain in chains:
        app.send_task(task_name("track_chain"), args=(chain,), expires=expires)
    return len(chains)


@app.task(name=task_name("track_chain"), acks_late=True, ignore_result=True)
def track_chain(chain: str) -> int:
    """One tick of one chain's tracker; chain trouble is logged and the next tick tries again."""
    ctx = runtime.context()
    started = time.monotonic()
    report = tick(ctx, chain, limits())
    TICK_SECONDS.labels(chain=chain).observe(time.monotonic() - started)
    for dispatch in report.dispatches:
        publish_after_commit(ctx, dispatch)
    if report.error:
        log.warning("tracker.tick_failed", chain=chain, error=report.error, tracked=report.tracked,
                    rpc_calls=report.rpc_calls)
    elif report.ran:
        log.info("tracker.tick", chain=chain, tracked=report.tracked, head=report.head, news=report.news,
                 confirming=report.confirming, confirmed=report.confirmed, failed=report.failed,
                 handed=report.handed, superseded=report.superseded, errors=report.errors,
                 rpc_calls=report.rpc_calls,
                 ms=round((time.monotonic() - started) * 1000, 1))
    return report.confirmed + report.failed
