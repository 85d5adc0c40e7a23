"""A Redis restart under a busy worker: the worker serves again afterwards.

Celery 5.7 / kombu 5.7 crash on it when the worker holds unacked messages (here ETA tasks, as a
step waiting for confirmations holds them): `AttributeError: 'NoneType' object has no attribute
'hostname'` in `restore_unacked_once` while the lost connection is closed, an "Unrecoverable
error", and the Celery worker exits. `paratro worker` runs Celery in a child it restarts; the
embedded stack restarts a `paratro worker` process that died."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from workers.stack import EmbeddedStack, StackOptions, activate

pytestmark = pytest.mark.integration


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:  # noqa: BLE001 - the broker or the worker is still coming back
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[EmbeddedStack]:
    """A stack of its own (redis, SQLite, one worker, no chains); this process's settings are put back after."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("PARATRO_")}
    try:
        with EmbeddedStack(StackOptions(workdir=tmp_path, chains=(), beat=False, concurrency=2)) as running:
            yield running
    finally:
        for key in [k for k in os.environ if k.startswith("PARATRO_")]:
            del os.environ[key]
        activate(saved)


def answers(name: str = "w1") -> bool:
    from workers.app import app

    return any(name in "".join(reply) for reply in app.control.ping(timeout=0.5))


def runs_a_task(stack: EmbeddedStack) -> bool:
    """A sweep sent now is received and succeeds (the worker consumes, not just answers pings)."""
    from workers.app import app, task_name

    task_id = app.send_task(task_name("sweep")).id
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if f"[{task_id}] succeeded" in log(stack):
            return True
        time.sleep(0.25)
    return False


def log(stack: EmbeddedStack) -> str:
    return (stack.options.workdir / "worker-w1.log").read_text(errors="replace")


def test_given_a_busy_worker_when_redis_restarts_then_the_worker_serves_again(stack: EmbeddedStack) -> None:
    from workers.app import app, task_name

    # Given a worker holding unacked messages (ETA tasks it keeps until their time)
    held = [app.send_task(task_name("sweep"), countdown=120).id for _ in range(4)]
    wait_for(lambda: all(f"[{task_id}] received" in log(stack) for task_id in held), 20, "the worker to hold the tasks")
    assert runs_a_task(stack)

    # When redis-server stops and comes back on the same port (empty: no persistence)
    stack.redis.restart(down_s=2.0)  # type: ignore[union-attr]

    # Then the worker serves again: it answers and runs a new task
    wait_for(answers, 90, "the worker to answer again")
    wait_for(lambda: runs_a_task(stack), 60, "the worker to run a task again")
    text = log(stack)
    if "Unrecoverable error" in text:  # the kombu crash happened: the supervisor restarted Celery
        assert "worker.restarting" in text
    assert stack.workers["w1"].is_running()


def test_given_a_dead_worker_process_then_the_stack_starts_it_again(stack: EmbeddedStack) -> None:
    first = stack.workers["w1"]
    os.killpg(first.pid, signal.SIGKILL)  # type: ignore[arg-type]  # the whole `paratro worker` tree, at once
    wait_for(lambda: stack.restarts["w1"] == 1 and stack.workers["w1"] is not first, 90, "the stack to restart w1")
    wait_for(answers, 30, "the restarted worker to answer")
    assert runs_a_task(stack)

    # and a worker stopped on purpose stays stopped
    stack.stop_worker("w1")
    time.sleep(1.5)
    assert "w1" not in stack.workers and stack.restarts["w1"] == 1
