"""The floor's Celery app: six no-op tasks on six queues, with the pipeline's Celery settings.

Why a separate app: the floor is what Celery itself costs on this machine (broker round trips,
serialization, acknowledgement) for a 6-task chain, with nothing of the pipeline in it. It uses
the same settings as `workers.app` (json, acks_late, reject on worker lost, prefetch 1, results
ignored, the Redis visibility timeout) and one queue per task, as the pipeline has one per step.
The last task counts finished chains in Redis (one INCR), which is how the benchmark sees them.

Run by `bench.floor` as `celery -A bench.floor_app worker`; the broker comes from BENCH_FLOOR_BROKER_URL.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from workers.delivery import delivery_settings

BROKER_ENV = "BENCH_FLOOR_BROKER_URL"
DONE_KEY = "bench:floor:done"
STEPS = 6
QUEUES = [f"bench.floor.{i}" for i in range(STEPS)]
VISIBILITY_TIMEOUT_S = 3600  # workers.app's default

app = Celery("bench-floor", broker=os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/0"))
app.conf.update(**delivery_settings(VISIBILITY_TIMEOUT_S), task_default_queue=QUEUES[0])

_redis: Any = None


@app.task(name="bench.floor.noop", acks_late=True)
def noop(step: int) -> None:
    """Nothing: the cost measured is Celery's. The last step of a chain counts it as done."""
    global _redis
    if step == STEPS - 1:
        if _redis is None:
            import redis

            _redis = redis.Redis.from_url(app.conf.broker_url)
        _redis.incr(DONE_KEY)


def chain_signature() -> Any:
    """One bare 6-task chain, each task on its own queue (immutable signatures: no results passed)."""
    from celery import chain

    return chain(*(noop.si(i).set(queue=QUEUES[i]) for i in range(STEPS)))
