"""How a step task maps outcomes and errors to Celery: pass on, poll later, retry, give up, hold.

The task body is exercised with a stand-in for Celery's bound task (its `request.chain` and
`retry`), the real pipeline steps on SQLite, and steps swapped for ones that raise.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from celery.exceptions import Retry

from chains.errors import ChainMismatch, ChainRpcError, TransactionRejected
from pipeline.steps import Outcome, OutcomeKind
from pipeline.stages import Stage
from tests.unit.fakes import EXPIRED, World
from workers import tasks

ETH = 10**18


class StandInTask:
    """Just what run_step touches on a bound Celery task."""

    def __init__(self) -> None:
        self.request = SimpleNamespace(chain=[{"task": "paratro.next"}])
        self.retried: list[dict[str, Any]] = []

    def retry(self, **options: Any) -> Retry:
        self.retried.append(options)
        return Retry("retry")


@pytest.fixture
def wired(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setattr(tasks.runtime, "context", world.ctx)
    return world


def step_returning(outcome: Outcome) -> Any:
    return lambda ctx, tx_id: outcome


def step_raising(exc: Exception) -> Any:
    def step(ctx: Any, tx_id: str) -> Outcome:
        raise exc
    return step


def test_an_advanced_step_passes_the_chain_on(wired: World) -> None:
    alice = wired.onboard(balances={"ETH": ETH})
    tx_id = wired.transfer(alice, "0.1")
    task = StandInTask()
    assert tasks.run_step(task, "resolve_source", tx_id, 0) == tx_id
    assert wired.tx(tx_id).stage == "SOURCE_RESOLVED"
    assert task.request.chain and not task.retried


def test_a_final_outcome_ends_the_chain(wired: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(tasks.STEP_FUNCTIONS, "lock_funds", step_returning(Outcome(OutcomeKind.FINAL, Stage.FAILED)))
    task = StandInTask()
    tasks.run_step(task, "lock_funds", "tx_01JAAAAAAAAAAAAAAAAAAAAAAA", 0)
    assert task.request.chain is None


def test_wait_polls_again_after_the_countdown_without_counting_an_error(wired: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(tasks.STEP_FUNCTIONS, "confirm", step_returning(Outcome(OutcomeKind.WAIT, Stage.CONFIRMING, 2.5)))
    task = StandInTask()
    with pytest.raises(Retry):
        tasks.run_step(task, "confirm", "tx_01JAAAAAAAAAAAAAAAAAAAAAAA", 3)
    assert task.retried[0]["countdown"] == 2.5
    assert task.retried[0]["kwargs"] == {"errors": 3}


def test_a_transient_error_retries_with_jittered_backoff_and_counts(wired: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(tasks.STEP_FUNCTIONS, "broadcast", step_raising(ChainRpcError("connection refused")))
    task = StandInTask()
    with pytest.raises(Retry):
        tasks.run_step(task, "broadcast", "tx_01JAAAAAAAAAAAAAAAAAAAAAAA", 2)
    budget = tasks.RETRY_BUDGETS["broadcast"]
    assert task.retried[0]["kwargs"] == {"errors": 3}
    assert 0 <= task.retried[0]["countdown"] <= budget.base_s * 2**2


def test_exhausted_retries_leave_the_stage_and_the_reason_for_the_sweeper(wired: World, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = wired.onboard(balances={"ETH": ETH})
    tx_id = wired.transfer(alice, "0.1")
    monkeypatch.setitem(tasks.STEP_FUNCTIONS, "resolve_source", step_raising(ChainRpcError("node timed out")))
    task = StandInTask()
    budget = tasks.RETRY_BUDGETS["resolve_source"]
    assert tasks.run_step(task, "resolve_source", tx_id, budget.max_retries) == tx_id
    tx = wired.tx(tx_id)
    assert (tx.stage, tx.status, tx.held_at) == ("RECEIVED", "PENDING", None)
    assert "retries exhausted" in tx.last_error and "node timed out" in tx.last_error
    assert wired.events(tx_id)[-1].reason == "retries_exhausted"
    assert task.request.chain is None and not task.retried


def test_an_incurable_error_holds_the_transfer_for_ops(wired: World, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = wired.onboard(balances={"ETH": ETH})
    tx_id = wired.transfer(alice, "0.1")
    monkeypatch.setitem(tasks.STEP_FUNCTIONS, "resolve_source", step_raising(ChainMismatch("node serves chain 1")))
    task = StandInTask()
    tasks.run_step(task, "resolve_source", tx_id, 0)
    tx = wired.tx(tx_id)
    assert tx.held_at is not None and tx.status == "PENDING"
    assert tx.last_error == "resolve_source: ChainMismatch: node serves chain 1"
    assert task.request.chain is None and not task.retried


@pytest.mark.parametrize("attempt", range(12))
def test_backoff_never_exceeds_the_step_cap_or_the_global_cap(attempt: int) -> None:
    budget = tasks.RETRY_BUDGETS["confirm"]
    for _ in range(50):
        assert 0 <= tasks.backoff(budget, attempt, cap=30) <= min(30, budget.cap_s)


# -- RESTART: an expired transaction is re-signed from request_signature ---------------------------

@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record what run_step hands to the queue instead of sending it."""
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(tasks, "enqueue", lambda transaction_id, from_step="resolve_source": calls.append(
        (transaction_id, from_step)))
    return calls


def test_a_restart_ends_the_current_chain_and_enqueues_a_new_one_from_its_step(
    wired: World, monkeypatch: pytest.MonkeyPatch, enqueued: list[tuple[str, str]]
) -> None:
    restart = Outcome(OutcomeKind.RESTART, Stage.FUNDS_LOCKED, step="request_signature")
    monkeypatch.setitem(tasks.STEP_FUNCTIONS, "confirm", step_returning(restart))
    task = StandInTask()
    tx_id = "tx_01JAAAAAAAAAAAAAAAAAAAAAAA"
    assert tasks.run_step(task, "confirm", tx_id, 2) == tx_id
    assert task.request.chain is None and not task.retried
    assert enqueued == [(tx_id, "request_signature")]


@pytest.mark.parametrize(
    "outcome",
    [Outcome(OutcomeKind.ADVANCED, Stage.SIGNED), Outcome(OutcomeKind.NOOP, Stage.SIGNED),
     Outcome(OutcomeKind.FINAL, Stage.FAILED), Outcome(OutcomeKind.STALLED, Stage.BROADCAST)],
    ids=lambda o: o.kind.value,
)
def test_no_other_outcome_enqueues_anything(
    wired: World, monkeypatch: pytest.MonkeyPatch, enqueued: list[tuple[str, str]], outcome: Outcome
) -> None:
    monkeypatch.setitem(tasks.STEP_FUNCTIONS, "broadcast", step_returning(outcome))
    task = StandInTask()
    tasks.run_step(task, "broadcast", "tx_01JAAAAAAAAAAAAAAAAAAAAAAA", 0)
    assert enqueued == []
    assert (task.request.chain is None) is (outcome.kind in (OutcomeKind.FINAL, OutcomeKind.STALLED))


def test_an_expired_transaction_found_by_confirm_is_re_driven_from_request_signature(
    wired: World, enqueued: list[tuple[str, str]]
) -> None:
    alice = wired.onboard(balances={"ETH": ETH})
    tx_id = wired.transfer(alice, "0.1")
    wired.run_until(tx_id, "broadcast")
    wired.adapter().statuses = [EXPIRED]
    task = StandInTask()

    assert tasks.run_step(task, "confirm", tx_id, 0) == tx_id

    assert (wired.tx(tx_id).stage, wired.tx(tx_id).replacement_count) == ("FUNDS_LOCKED", 1)
    assert task.request.chain is None and not task.retried
    assert enqueued == [(tx_id, "request_signature")]


def test_a_broadcast_refused_as_expired_is_re_driven_from_request_signature(
    wired: World, enqueued: list[tuple[str, str]]
) -> None:
    alice = wired.onboard(balances={"ETH": ETH})
    tx_id = wired.transfer(alice, "0.1")
    wired.run_until(tx_id, "request_signature")
    wired.adapter().broadcast_errors = [TransactionRejected("expired", "blockhash not found")]
    task = StandInTask()

    tasks.run_step(task, "broadcast", tx_id, 0)

    assert wired.tx(tx_id).stage == "FUNDS_LOCKED"
    assert task.request.chain is None and enqueued == [(tx_id, "request_signature")]
