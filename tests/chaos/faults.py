"""When each fault happens, and the tally of every fault injected (the K of the last line).

The schedule, relative to the start of the fault phase (the first submission):
- SIGKILL a random worker process every 2-4 s (cluster.kill_random_worker: a whole worker, then a
  replacement starts; the Celery worker under its supervisor; or one prefork pool process): the
  task it ran is lost or redelivered;
- restart redis-server twice (every queued message is lost: only the sweeper can recover);
- terminate every PostgreSQL backend of the pipeline's database every 5-9 s (SQLite: none);
- a driver storm: for `storm_s` seconds, beat runs the sweeper every second, and every second
  `paratro replay` is offered every pending transfer (it takes the ones no live driver holds) and
  `paratro replay --force` a random 5% of them (a second driver racing a live one);
- all the while, the fault proxies delay, drop, time out and (Solana, TRON) lag RPC calls.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from tests.chaos.cluster import ChaosCluster


@dataclass
class Schedule:
    start: float
    storm_s: float
    redis_restarts: list[float] = field(default_factory=list)
    storm_start: float = 0.0
    storm_end: float = 0.0
    next_kill: float = 0.0
    next_pg: float = 0.0

    @classmethod
    def plan(cls, start: float, rng: random.Random, storm_s: float) -> "Schedule":
        schedule = cls(start=start, storm_s=storm_s)
        schedule.storm_start = start + 8.0
        schedule.storm_end = schedule.storm_start + storm_s
        schedule.redis_restarts = [start + rng.uniform(4.0, 7.0), schedule.storm_end + rng.uniform(3.0, 6.0)]
        schedule.next_kill = start + rng.uniform(2.0, 4.0)
        schedule.next_pg = start + rng.uniform(3.0, 6.0)
        return schedule

    @property
    def scheduled_end(self) -> float:
        """Every one-off fault (both redis restarts, the whole storm) is behind us after this."""
        return max(self.redis_restarts + [self.storm_end]) + 1.0


class Chaos:
    """Applies the schedule, one `tick()` at a time, from the main thread (it starts processes)."""

    def __init__(self, cluster: ChaosCluster, ctx: Any, rng: random.Random, schedule: Schedule,
                 pending_ids: Callable[[], list[str]], say: Callable[[str], None]) -> None:
        self.cluster = cluster
        self.ctx = ctx
        self.rng = rng
        self.schedule = schedule
        self.pending_ids = pending_ids
        self.say = say
        self.tally: Counter[str] = Counter()
        self.backends_terminated = 0
        self.storm_redrives = 0
        self.storm_errors = 0
        self._storm: StormThread | None = None
        self._storm_stopped = False

    def tick(self, now: float) -> None:
        s = self.schedule
        if now >= s.next_kill:
            killed = self.cluster.kill_random_worker()
            if killed is not None:
                self.tally[killed[0]] += 1
            s.next_kill = now + self.rng.uniform(2.0, 4.0)
        if s.redis_restarts and now >= s.redis_restarts[0]:
            s.redis_restarts.pop(0)
            took = self.cluster.restart_redis()
            self.tally["redis-restart"] += 1
            self.say(f"fault: restarted redis-server ({took:.1f} s; every queued message is gone)")
        if self.cluster.postgres is not None and now >= s.next_pg:
            s.next_pg = now + self.rng.uniform(5.0, 9.0)
            try:
                killed = self.cluster.terminate_backends()
            except Exception as exc:  # noqa: BLE001 - the fault itself may fail; the run goes on
                self.say(f"fault: pg_terminate_backend failed: {exc}")
            else:
                self.tally["pg-terminate"] += 1
                self.backends_terminated += killed
        if self._storm is None and not self._storm_stopped and now >= s.storm_start:
            self.cluster.start_beat(1.0)
            self._storm = StormThread(self.ctx, self.pending_ids, self.tally)
            self._storm.start()
            self.say(f"fault: driver storm for {s.storm_s:.0f} s (sweeper every 1 s; every 1 s, replay of every "
                     "pending transfer and replay --force of 5%)")
        if self._storm is not None and now >= s.storm_end:
            self.stop_storm()

    def stop_storm(self) -> None:
        if self._storm is not None:
            self._storm.stop_event.set()
            self._storm.join(timeout=30)
            self.storm_redrives += self._storm.redrives
            self.storm_errors += self._storm.errors
            self._storm = None
            self.cluster.start_beat(None)
            self.say(f"driver storm over: {self.storm_redrives} re-drives by replay")
        self._storm_stopped = True

    def done(self, now: float) -> bool:
        return now >= self.schedule.scheduled_end and self._storm is None


class StormThread(threading.Thread):
    """Every second: `paratro replay` of every pending transfer (workers.services.replay), and
    `replay --force` of 5% of them, in batches run four at a time."""

    def __init__(self, ctx: Any, pending_ids: Callable[[], list[str]], tally: Counter[str]) -> None:
        super().__init__(name="driver-storm", daemon=True)
        self.ctx = ctx
        self.pending_ids = pending_ids
        self.tally = tally
        self.stop_event = threading.Event()
        self.redrives = 0
        self.errors = 0

    def run(self) -> None:
        import inspect

        from workers.services import replay

        # `force` supersedes a live driver; a pipeline without it (older) re-drives every transfer anyway
        self.force = {"force": True} if "force" in inspect.signature(replay).parameters else {}
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="storm")
        try:
            self._passes(replay)
        finally:
            self.pool.shutdown(wait=True)

    def _passes(self, replay: Callable[..., list[dict[str, str]]]) -> None:
        while not self.stop_event.is_set():
            began = time.monotonic()
            try:
                ids = self.pending_ids()
                # Every pending transfer is offered to replay (only undriven ones are taken), and a
                # random 5% are taken over by force: a second driver racing a live one.
                forced = set(random.sample(ids, max(1, len(ids) // 20))) if ids else set()

                def one_batch(batch: list[str]) -> int:
                    if self.stop_event.is_set():
                        return 0
                    report = replay(self.ctx, [i for i in batch if i not in forced])
                    report += replay(self.ctx, [i for i in batch if i in forced], **self.force)
                    return sum(1 for row in report if row.get("action", "").startswith("re-driven"))

                # Several at once, as several operators (or scripts) would: a pass over a thousand
                # pending transfers one by one would take far longer than its second.
                batches = [ids[start:start + 25] for start in range(0, len(ids), 25)]
                self.redrives += sum(self.pool.map(one_batch, batches))
                self.tally["storm-replay-pass"] += 1
            except Exception:  # noqa: BLE001 - broker or database down mid-pass: next second
                self.errors += 1
            self.stop_event.wait(max(0.0, 1.0 - (time.monotonic() - began)))
