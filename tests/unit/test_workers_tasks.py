"""How a delivered step message is concluded: hand off, poll later, retry, park, hold, or drop.

The runner is exercised with the real pipeline steps on SQLite and steps swapped for ones that
return or raise; the Celery task is exercised with publishing captured instead of sent.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from chains.errors import ChainMismatch, ChainRpcError
from pipeline.driving import Dispatch
from pipeline.errors import UnprovenRejection
from pipeline.models import OutboxMessage
from pipeline.steps import Outcome, OutcomeKind
from pipeline.steps import runner
from pipeline.stages import Stage
from tests.unit.fakes import World
from workers import routing, tasks

ETH = 10**18


@pytest.fixture
def published(world: World, monkeypatch: pytest.MonkeyPatch) -> list[Dispatch]:
    """The task layer wired to the test world, with what it publishes captured."""
    sent: list[Dispatch] = []
    monkeypatch.setattr(tasks.runtime, "context", world.ctx)
    monkeypatch.setattr(routing, "publish", sent.append)
    return sent


def sweep_now(world: World, park_s: float) -> list[str]:
    from pipeline.recovery import claim_stalled

    with world.db.unit_of_work() as s:
        return [r.transaction_id for r in claim_stalled(s, park_s)]


def swap_step(monkeypatch: pytest.MonkeyPatch, name: str, body: Any) -> None:
    monkeypatch.setitem(runner.STEP_FUNCTIONS, name, body)


def raising(exc: Exception) -> Any:
    def step(ctx: Any, run: Any) -> Outcome:
        raise exc
    return step


def test_an_advanced_step_hands_the_transfer_to_the_next_step_with_a_new_token(world: World, published: list[Dispatch]) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    tasks.run_step("resolve_source", tx_id, 1, 0)
    tx = world.tx(tx_id)
    assert tx.stage == "SOURCE_RESOLVED" and tx.lease_until is None
    assert published == [Dispatch(tx_id, "validate_destination", tx.driver_seq)]
    with world.db.unit_of_work() as s:
        assert [(r.step, r.seq) for r in s.scalars(select(OutboxMessage))] == [("validate_destination", tx.driver_seq)]


def test_a_message_delivered_twice_runs_once_and_the_copy_passes_nothing_on(world: World, published: list[Dispatch]) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    tasks.run_step("resolve_source", tx_id, 1, 0)
    events = len(world.events(tx_id))
    tasks.run_step("resolve_source", tx_id, 1, 0)  # Redis redelivers the same message
    assert len(world.events(tx_id)) == events and len(published) == 1


def test_a_message_from_a_superseded_driver_is_dropped(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    assert world.deliver("resolve_source", tx_id, seq=0).result == "dropped"
    assert world.deliver("resolve_source", tx_id, seq=7).result == "dropped"  # a forged future token too
    assert world.tx(tx_id).stage == "RECEIVED"


def test_a_waiting_step_polls_itself_again_after_its_countdown(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    swap_step(monkeypatch, "resolve_source", lambda ctx, run: Outcome(OutcomeKind.WAIT, Stage.RECEIVED, 5.0))
    report = world.deliver("resolve_source", tx_id)
    assert report.result == "wait" and report.dispatch is not None
    assert (report.dispatch.step, report.dispatch.countdown_s) == ("resolve_source", 5.0)


def test_a_transient_error_retries_the_same_step_with_backoff_and_counts_it(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    swap_step(monkeypatch, "resolve_source", raising(ChainRpcError("connection reset")))
    report = world.deliver("resolve_source", tx_id, errors=2)
    assert report.result == "retry" and report.dispatch is not None
    assert (report.dispatch.step, report.dispatch.errors) == ("resolve_source", 3)
    assert 0 <= report.dispatch.countdown_s <= min(runner.RETRY_BUDGETS["resolve_source"].cap_s, 0.5 * 2**2)


def test_exhausted_retries_park_the_transfer_for_the_sweeper_with_the_reason(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    swap_step(monkeypatch, "resolve_source", raising(ChainRpcError("connection reset")))
    report = world.deliver("resolve_source", tx_id, errors=runner.RETRY_BUDGETS["resolve_source"].max_retries)
    tx = world.tx(tx_id)
    assert report.result == "exhausted" and report.dispatch is None
    assert tx.lease_until is None and tx.held_at is None and "retries exhausted" in tx.last_error
    assert sweep_now(world, park_s=0) == [tx_id]  # parked: no lease, no message; the sweeper takes it


@pytest.mark.parametrize("exc", [ChainMismatch("node serves chain 1"), KeyError("bug")], ids=["config", "bug"])
def test_an_error_no_retry_can_cure_holds_the_transfer(world: World, monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    swap_step(monkeypatch, "resolve_source", raising(exc))
    assert world.deliver("resolve_source", tx_id).result == "held"
    tx = world.tx(tx_id)
    assert tx.held_at is not None and tx.stage == "RECEIVED" and tx.status == "PENDING"


def test_an_unproven_refusal_is_retried_then_held_never_parked(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    swap_step(monkeypatch, "resolve_source", raising(UnprovenRejection("refused without proof")))
    assert world.deliver("resolve_source", tx_id).result == "retry"
    last = world.deliver("resolve_source", tx_id, errors=runner.RETRY_BUDGETS["resolve_source"].max_retries)
    assert last.result == "held" and world.tx(tx_id).held_at is not None


def test_a_restart_hands_off_to_the_named_step(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    restart = Outcome(OutcomeKind.RESTART, Stage.FUNDS_LOCKED, step="request_signature")
    swap_step(monkeypatch, "resolve_source", lambda ctx, run: restart)
    report = world.deliver("resolve_source", tx_id)
    assert report.dispatch is not None and report.dispatch.step == "request_signature"


def test_a_final_outcome_publishes_nothing_and_clears_the_lease(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1", from_address="0x" + "99" * 20)  # no such account: FAILED
    report = world.deliver("resolve_source", tx_id)
    assert (report.result, report.dispatch) == ("final", None)
    assert world.tx(tx_id).lease_until is None


def test_when_the_broker_is_down_the_dispatch_waits_in_the_outbox_due_now(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.services import submit_transfer

    def down(dispatch: Dispatch) -> None:
        raise ConnectionRefusedError("Error 111 connecting to 127.0.0.1:6399")

    monkeypatch.setattr(routing, "publish", down)
    alice = world.onboard(balances={"ETH": ETH})
    first = submit_transfer(world.ctx(), world.request(alice, "0.1", key="inv-7"))
    again = submit_transfer(world.ctx(), world.request(alice, "0.1", key="inv-7"))
    assert (first.published, first.created) == (False, True)
    assert (again.transaction_id, again.created) == (first.transaction_id, False)
    from pipeline.recovery import due_messages
    with world.db.unit_of_work() as s:
        assert due_messages(s, 120) == [Dispatch(first.transaction_id, "resolve_source", 1)]


def test_a_lost_acknowledgement_of_a_final_commit_leaves_no_message_behind(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a step whose FAILED commit landed, then the database connection dropped (a transient error)
    from pipeline.errors import DatabaseUnavailable
    from pipeline.steps.prepare import resolve_source

    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1", from_address="0x" + "99" * 20)

    def commits_then_loses_the_ack(ctx: Any, run: Any) -> Outcome:
        resolve_source(ctx, run)
        raise DatabaseUnavailable("database connection lost")

    swap_step(monkeypatch, "resolve_source", commits_then_loses_the_ack)
    report = world.deliver("resolve_source", tx_id)
    # Then no retry is handed out for a final transfer, and nothing waits in the outbox
    assert (report.result, report.dispatch) == ("final", None)
    with world.db.unit_of_work() as s:
        assert s.scalars(select(OutboxMessage)).all() == []


def test_a_worker_runs_the_next_steps_it_consumes_inline_and_publishes_the_first_it_does_not(
        world: World, published: list[Dispatch], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARATRO_WORKER_QUEUES", "paratro.resolve_source,paratro.validate_destination,paratro.lock_funds")
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    tasks.run_step("resolve_source", tx_id, 1, 0)
    tx = world.tx(tx_id)
    assert tx.stage == "FUNDS_LOCKED"  # three steps in this one task
    assert published == [Dispatch(tx_id, "request_signature", tx.driver_seq)]  # another queue's: published
    with world.db.unit_of_work() as s:  # only the published message's row is left: each inline take took its own
        assert [(r.step, r.seq) for r in s.scalars(select(OutboxMessage))] == [("request_signature", tx.driver_seq)]
    stages = [to for _, to in world.stage_changes(tx_id)]
    assert stages == ["RECEIVED", "SOURCE_RESOLVED", "DESTINATION_VALID", "FUNDS_LOCKED"]


def test_a_retry_or_a_poll_is_never_run_inline(world: World, published: list[Dispatch],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARATRO_WORKER_QUEUES", "paratro.resolve_source")
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    calls: list[int] = []

    def flaky(ctx: Any, run: Any) -> Outcome:
        calls.append(run.errors)
        raise ChainRpcError("connection reset")

    swap_step(monkeypatch, "resolve_source", flaky)
    monkeypatch.setattr(runner, "backoff", lambda *args: 0.0)  # even a zero backoff goes through the broker
    tasks.run_step("resolve_source", tx_id, 1, 0)
    assert calls == [0] and [(d.step, d.errors) for d in published] == [("resolve_source", 1)]


def test_an_inline_run_that_never_happens_leaves_a_lease_the_sweeper_takes_over(world: World) -> None:
    from datetime import timedelta

    from pipeline.models import utcnow

    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    report = runner.run_message(world.ctx(), "resolve_source", tx_id, 1, 0, frozenset({"validate_destination"}))
    assert report.next_run is not None and report.dispatch is None  # taken in the conclusion's commit
    tx = world.tx(tx_id)
    assert (tx.driver_seq, tx.stage) == (report.next_run.seq, "SOURCE_RESOLVED") and tx.lease_until is not None
    assert sweep_now(world, 120) == []  # the lease is live: nobody else drives it
    world.edit(tx_id, lambda t: setattr(t, "lease_until", utcnow() - timedelta(seconds=1)))  # the process died
    assert sweep_now(world, 120) == [tx_id]
    assert runner.run_taken(world.ctx(), report.next_run).result == "dropped"  # the dead run's token is stale


def test_a_step_concludes_in_its_own_last_transaction(world: World) -> None:
    """The stage it reached, its event and the hand-over commit together: a delivered message costs
    the take and the step's own transactions, and no separate conclusion."""
    from sqlalchemy import event

    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    commits: list[int] = []
    listener = lambda _conn: commits.append(1)  # noqa: E731
    event.listen(world.db.engine, "commit", listener)
    try:
        report = runner.run_message(world.ctx(), "resolve_source", tx_id, 1, 0)
    finally:
        event.remove(world.db.engine, "commit", listener)
    tx = world.tx(tx_id)
    assert report.dispatch == Dispatch(tx_id, "validate_destination", tx.driver_seq)
    assert len(commits) == 2  # take; resolve + hand-over
