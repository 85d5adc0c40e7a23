"""A small managed-subprocess helper for local services (redis-server, postgres, anvil).

Why it exists: tests and the demo start real services and must never leave them behind.
Each process is started in its own session (so its own process group), its output goes to a
log file (a pipe nobody reads would eventually block it), readiness is a probe that is polled
every ~50 ms instead of a fixed sleep, a start that fails or times out raises an error carrying
the tail of the log, and stopping sends SIGTERM to the whole group, then SIGKILL after a grace
period, and always reaps the child.

Extra safety nets: every live process is stopped at interpreter exit (``atexit``), and on Linux
the child gets ``PR_SET_PDEATHSIG=SIGKILL`` so it dies if the parent is killed outright. Note the
Linux rule: the death signal fires when the *thread* that started the child exits, so start
services from a long-lived thread (the main thread, as pytest fixtures and the demo do), or pass
``die_with_parent=False``.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import pwd
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

POLL_INTERVAL = 0.05

ReadyProbe = Callable[[], bool]


class ProcessStartError(RuntimeError):
    """A managed process exited early or did not become ready in time."""


_live: "set[ManagedProcess]" = set()  # strong refs: a dropped handle must still be stopped
_live_lock = threading.Lock()


def _stop_all_at_exit() -> None:
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        try:
            proc.stop(grace=2.0)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(_stop_all_at_exit)


def _pdeathsig_preexec() -> None:  # pragma: no cover - runs in the child
    """Ask the kernel to SIGKILL the child when the parent (thread) dies. Linux only."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except Exception:  # noqa: BLE001 - a missing prctl only loses a safety net
        pass


def read_tail(path: Path, lines: int = 40, max_bytes: int = 16_384) -> str:
    """The last ``lines`` lines of a (possibly large, possibly missing) log file."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """One long-running service process.

    ``ready`` is a probe returning True once the service answers; an exception from the probe
    counts as "not yet". Use as a context manager, or call ``start()`` / ``stop()``.

    Without ``log_path`` the output goes to a temp file that is deleted on stop (unless
    ``keep_log``); start errors carry its tail either way. ``on_stop`` runs once after the process is reaped (also when stopped at interpreter exit):
    use it to remove the service's temporary files.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str | None = None,
        ready: ReadyProbe | None = None,
        log_path: Path | None = None,
        timeout: float = 30.0,
        grace: float = 5.0,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        die_with_parent: bool = True,
        user: str | None = None,
        on_stop: Callable[[], None] | None = None,
        keep_log: bool = False,
        term_leader_only: bool = False,
    ) -> None:
        if not argv:
            raise ValueError("argv must not be empty")
        self.argv = [str(a) for a in argv]
        self.name = name or Path(self.argv[0]).name
        self.ready = ready
        self.timeout = timeout
        self.grace = grace
        # SIGTERM only the leader (it stops its children itself, e.g. a Celery worker's warm
        # shutdown lets its pool finish the running tasks); the group gets SIGKILL after `grace`
        self.term_leader_only = term_leader_only
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.die_with_parent = die_with_parent and sys.platform.startswith("linux")
        self.user = user
        self._on_stop = on_stop  # e.g. remove the service's temp dir; runs once, after reaping
        self._own_log = log_path is None and not keep_log
        self.log_path = Path(log_path) if log_path is not None else self._temp_log()
        self._proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    def _credentials(self) -> dict[str, Any]:
        """Popen arguments that drop to ``self.user`` (root only).

        Dropping privileges in the child itself (rather than through ``runuser``) keeps the
        service the direct child: signals reach it, and the parent-death signal, which CPython
        sets in ``preexec_fn`` after the uid change, survives.
        """
        if self.user is None:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _temp_log(self) -> Path:
        fd, path = tempfile.mkstemp(prefix=f"paratro-{self.name}-", suffix=".log")
        os.close(fd)
        return Path(path)

    # -- state -------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return read_tail(self.log_path, lines)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "ManagedProcess":
        """Spawn the process and block until ``ready`` passes (or raise ProcessStartError)."""
        if self._proc is not None:
            raise RuntimeError(f"{self.name} already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            try:
                self._proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,  # own session => own process group
                    preexec_fn=_pdeathsig_preexec if self.die_with_parent else None,
                    close_fds=True,
                    **self._credentials(),
                )
            except OSError as exc:
                raise ProcessStartError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from exc
        with _live_lock:
            _live.add(self)
        try:
            self.wait_ready(self.timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll the readiness probe every ~50 ms until it passes, the process dies, or timeout."""
        assert self._proc is not None, "not started"
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        last_error: BaseException | None = None
        while True:
            code = self._proc.poll()
            if code is not None:
                raise ProcessStartError(
                    f"{self.name} exited with code {code} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if self.ready is None:
                return
            try:
                if self.ready():
                    return
                last_error = None
            except Exception as exc:  # noqa: BLE001 - the probe failing means "not yet"
                last_error = exc
            if time.monotonic() >= deadline:
                why = f" (last probe error: {last_error!r})" if last_error else ""
                waited = self.timeout if timeout is None else timeout
                raise ProcessStartError(
                    f"{self.name} was not ready within {waited:.1f}s{why}; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(POLL_INTERVAL)

    def _signal_group(self, sig: int) -> None:
        assert self._proc is not None
        try:
            # The child called setsid(), so its pgid equals its pid; the group survives the
            # leader's exit, so signal it even after the leader is gone (strays get caught).
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace: float | None = None) -> int | None:
        """SIGTERM the process group (or its leader), SIGKILL the group after ``grace`` seconds, reap. Idempotent."""
        proc = self._proc
        if proc is None:
            return None
        grace = self.grace if grace is None else grace
        if proc.poll() is None:
            if self.term_leader_only:
                proc.send_signal(signal.SIGTERM)
            else:
                self._signal_group(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # Kill whatever is left in the group (the leader, or children it left behind).
        self._signal_group(signal.SIGKILL)
        code = proc.wait()
        with _live_lock:
            _live.discard(self)
        if self._own_log:
            self.log_path.unlink(missing_ok=True)
        on_stop, self._on_stop = self._on_stop, None
        if on_stop is not None:
            on_stop()
        return code

    def __enter__(self) -> "ManagedProcess":
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
