"""Readiness probes that a public, unauthenticated URL can afford.

`GET /ready` needs no signature, so anyone can call it as often as they like, and every chain
probe is a real RPC call (paid quota on a hosted node, a thread stuck on a slow one). So each
probe here is:

- cached: a result is reused for `ttl_s` (chains CHAIN_TTL_S, database and Redis LOCAL_TTL_S);
- single-flight: at most one probe per component runs at a time. A request that finds a probe of
  another request running answers at once with the last result ("pending" before the very first
  one), or `down`/`timeout` once that probe has run longer than `timeout_s`; it never starts a
  second probe. A probe that never returns is abandoned after `abandon_after_s` (its late result
  is ignored) so that one hung call cannot freeze a component's status forever;
- on its own daemon thread: there is no shared pool, so the database and Redis probes never
  queue behind chain probes, and since at most one probe per component runs, the number of
  threads is bounded by the number of components (plus abandoned ones, one per component per
  `abandon_after_s`). A thread cannot be cancelled; daemon threads at least never block exit.

The request that starts a probe waits for it, but never past its own deadline (`timeout_s` from
the start of the request); a probe still running then is reported `down` with error `timeout`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

READY_TIMEOUT_S = 3.0  # the longest a /ready answer takes
CHAIN_TTL_S = 10.0  # a chain node is asked at most once per this, whatever the traffic on /ready
LOCAL_TTL_S = 1.0  # the database and Redis: cheap, but still not once per request
ABANDON_AFTER_S = 60.0

Result = dict[str, Any]


@dataclass
class _Slot:
    """One component's probe state (guarded by Readiness._lock)."""

    result: Result | None = None
    finished_at: float = float("-inf")
    running: Future[Result] | None = None
    started_at: float = 0.0
    generation: int = 0
    probes: int = 0  # how many probes were started (for tests and diagnostics)


@dataclass
class Readiness:
    """The probe cache of one API app (`app.state.readiness`), shared by /ready and /api/v1/ready."""

    timeout_s: float = READY_TIMEOUT_S
    chain_ttl_s: float = CHAIN_TTL_S
    local_ttl_s: float = LOCAL_TTL_S
    abandon_after_s: float = ABANDON_AFTER_S
    clock: Callable[[], float] = time.monotonic
    _slots: dict[str, _Slot] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def begin(self, name: str, check: Callable[[], None], ttl_s: float) -> Future[Result] | None:
        """Start a probe of `name` unless its last result is younger than `ttl_s` or a probe of it
        is already running; returns the started probe's future (for this request to wait on) or None."""
        now = self.clock()
        with self._lock:
            slot = self._slots.setdefault(name, _Slot())
            if slot.running is not None:
                if now - slot.started_at < self.abandon_after_s:
                    return None
            elif now - slot.finished_at < ttl_s:
                return None
            slot.generation += 1
            slot.probes += 1
            slot.running, slot.started_at = Future(), now
            generation, future = slot.generation, slot.running
        thread = threading.Thread(target=self._run, args=(name, check, generation, future),
                                  name=f"ready-probe-{name}", daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # no thread to be had: that is the answer, not a crash
            self._finish(name, generation, future, {"status": "down", "error": type(exc).__name__})
        return future

    def report(self, name: str, started: Future[Result] | None = None) -> Result:
        """What to answer for `name` now. `started`: the probe this request started (and waited on)."""
        if started is not None and started.done():
            return dict(started.result())
        now = self.clock()
        with self._lock:
            slot = self._slots.get(name) or _Slot()
            running_for = now - slot.started_at if slot.running is not None else None
            last = slot.result
        if running_for is not None and (started is not None or running_for >= self.timeout_s):
            return {"status": "down", "error": "timeout", "latency_ms": int(running_for * 1000)}
        if last is not None:
            return dict(last)
        return {"status": "pending"}

    def probes_started(self, name: str) -> int:
        """How many probes of `name` this app has started."""
        with self._lock:
            slot = self._slots.get(name)
            return slot.probes if slot else 0

    def _run(self, name: str, check: Callable[[], None], generation: int, future: Future[Result]) -> None:
        started = time.monotonic()
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - any failure is a `down`, named by its kind only
            result: Result = {"status": "down", "error": type(exc).__name__}
        else:
            result = {"status": "ok", "latency_ms": int((time.monotonic() - started) * 1000)}
        self._finish(name, generation, future, result)

    def _finish(self, name: str, generation: int, future: Future[Result], result: Result) -> None:
        with self._lock:
            slot = self._slots[name]
            if slot.generation == generation:  # an abandoned probe's late answer is not kept
                slot.result, slot.finished_at, slot.running = result, self.clock(), None
        future.set_result(result)
