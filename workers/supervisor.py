"""`paratro worker` as its Celery worker's supervisor: the worker runs in a child process that is
started again whenever it stops without being asked to.

Why: Celery 5.7 with kombu 5.7 on Redis exits on a broker restart when the worker holds unacked
messages (an ETA retry or a prefetched task): the consumer closes the lost connection after
`collect()` has detached its transport, kombu's channel close then restores the unacked messages
through a client whose connection info is gone, and `AttributeError: 'NoneType' object has no
attribute 'hostname'` (raised in `restore_unacked_once`) escapes as an "Unrecoverable error"; the
worker stops - with exit code 0, through `worker_main`. No release of either is free of it and no
transport option avoids it, so the fix lives here, where it also covers any other fatal error:
the supervisor restarts the child with a capped backoff and gives up (non-zero exit, for the
container's restart policy) only on a crash loop of children that never got going.

Signals: SIGTERM, SIGINT and SIGQUIT stop the supervisor and are passed on (SIGINT as SIGTERM, a
warm shutdown); SIGHUP is passed on (Celery restarts itself in place). The child dies with the
supervisor (PR_SET_PDEATHSIG on Linux), so a killed supervisor leaves no orphan worker behind.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import structlog

log = structlog.get_logger("paratro.supervisor")

HEALTHY_AFTER_S = 60.0  # a child that ran this long was healthy: the next failure starts the backoff again
MAX_DELAY_S = 30.0
MAX_QUICK_FAILURES = 8  # that many children in a row dying before HEALTHY_AFTER_S: a crash loop, give up


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except Exception:  # noqa: BLE001 - losing a safety net, not the worker
            pass


class Supervisor:
    """Runs `argv` until asked to stop, restarting it when it exits on its own."""

    def __init__(self, argv: Sequence[str], *, healthy_after_s: float = HEALTHY_AFTER_S,
                 max_quick_failures: int = MAX_QUICK_FAILURES, max_delay_s: float = MAX_DELAY_S) -> None:
        self.argv = list(argv)
        self.healthy_after_s = healthy_after_s
        self.max_quick_failures = max_quick_failures
        self.max_delay_s = max_delay_s
        self.stopping = False
        self.restarts = 0
        self.child: subprocess.Popen[bytes] | None = None

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum != signal.SIGHUP:
            self.stopping = True
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM if signum == signal.SIGINT else signum)

    def run(self) -> int:
        """The child's exit code once stopped by a signal or by itself with 0; non-zero on a crash loop."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        quick_failures = 0
        while True:
            started = time.monotonic()
            self.child = subprocess.Popen(self.argv, preexec_fn=_die_with_parent)
            code = self.child.wait()
            code = code if code >= 0 else 128 - code  # killed by signal N: the shell's 128 + N
            if self.stopping or code == 0:
                return code
            lived = time.monotonic() - started
            quick_failures = quick_failures + 1 if lived < self.healthy_after_s else 1
            if quick_failures > self.max_quick_failures:
                log.error("worker.crash_loop", exit_code=code, failures=quick_failures - 1)
                return code
            delay = min(self.max_delay_s, 2.0 ** (quick_failures - 1))
            log.warning("worker.restarting", exit_code=code, ran_s=round(lived, 1), delay_s=delay)
            deadline = time.monotonic() + delay
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.stopping:
                return code
            self.restarts += 1


def supervise(argv: Sequence[str]) -> int:
    return Supervisor(argv).run()
