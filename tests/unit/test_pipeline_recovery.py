"""The sweeper, the relay and replay: who drives a transfer nobody drives, and nothing twice.

A transfer is in exactly one of: running (a step holds its lease), waiting (an outbox row: a
message is on its way), parked (a step gave up for a while), held (ops), final. The sweeper takes
only running-with-an-expired-lease and parked-and-due; the relay re-publishes waiting messages.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from pipeline.driving import Dispatch, load_tx
from pipeline.models import OutboxMessage, Transaction, utcnow
from pipeline.recovery import claim_for_replay, claim_stalled, due_messages, hold
from pipeline.stages import Stage
from tests.unit.fakes import World, included

ETH = 10**18


def sweep(world: World, park_s: float = 120, limit: int = 500) -> list[tuple[str, Stage, str]]:
    with world.db.unit_of_work() as s:
        return [(r.transaction_id, r.stage, r.step) for r in claim_stalled(s, park_s, limit)]


def outbox(world: World, tx_id: str) -> list[tuple[str, int]]:
    with world.db.unit_of_work() as s:
        return [(row.step, row.seq) for row in s.scalars(
            select(OutboxMessage).where(OutboxMessage.transaction_id == tx_id).order_by(OutboxMessage.id))]


def expire_lease(world: World, tx_id: str, seconds: float = 1) -> None:
    def change(tx: Transaction) -> None:
        tx.lease_until = utcnow() - timedelta(seconds=seconds)
    world.edit(tx_id, change)


def test_a_new_transfer_is_written_with_its_first_message_in_the_outbox(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    assert outbox(world, tx_id) == [("resolve_source", 1)]
    assert world.tx(tx_id).driver_seq == 1 and world.tx(tx_id).lease_until is None


def test_a_transfer_whose_message_waits_in_the_queue_is_never_redriven(world: World) -> None:
    # Given a transfer whose message has waited in a backed-up queue for an hour
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    world.edit(tx_id, lambda tx: setattr(tx, "heartbeat_at", utcnow() - timedelta(hours=1)))
    # Then the sweeper leaves it alone: its outbox row says a message is on its way
    assert sweep(world, park_s=0) == []
    assert world.tx(tx_id).generation == 0


def test_a_dead_drivers_expired_lease_is_redriven_once_and_supersedes_it(world: World) -> None:
    # Given a step that took the transfer and whose worker died (its lease expired)
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    dead = world.take("resolve_source", tx_id)
    assert sweep(world) == []  # lease still live
    expire_lease(world, tx_id)

    # When the sweeper runs twice
    first, second = sweep(world), sweep(world)

    # Then it is re-driven once, from its stage, with a new token and a new outbox row
    assert first == [(tx_id, Stage.RECEIVED, "resolve_source")] and second == []
    tx = world.tx(tx_id)
    assert tx.generation == 1 and tx.driver_seq == dead.seq + 1
    assert outbox(world, tx_id) == [("resolve_source", tx.driver_seq)]
    assert world.events(tx_id)[-1].reason == "redriven_by_sweeper"


def test_a_parked_transfer_is_redriven_when_its_time_is_up_and_carries_its_last_error(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    world.adapter().statuses = [included(1)]
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "confirm")

    def parked(tx: Transaction) -> None:
        tx.lease_until = utcnow() - timedelta(seconds=1)
        tx.last_error = "rpc timed out"
    world.edit(tx_id, parked)
    with world.db.unit_of_work() as s:  # the test's direct steps leave outbox rows behind
        for row in s.scalars(select(OutboxMessage)):
            s.delete(row)

    assert sweep(world) == [(tx_id, Stage.CONFIRMING, "confirm")]
    assert world.events(tx_id)[-1].detail == "rpc timed out"


def test_final_transfers_are_never_claimed(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    world.adapter().statuses = [included(3)]
    confirmed, failed = world.transfer(alice, "0.1"), world.transfer(alice, "0.1", from_address="0x" + "99" * 20)
    world.run_until(confirmed, "confirm")
    world.step("resolve_source", failed)
    for tx_id in (confirmed, failed):
        world.edit(tx_id, lambda tx: setattr(tx, "lease_until", utcnow() - timedelta(days=1)))
    events = {t: len(world.events(t)) for t in (confirmed, failed)}
    with world.db.unit_of_work() as s:
        for row in s.scalars(select(OutboxMessage)):
            s.delete(row)
    assert sweep(world, park_s=0) == []
    assert {t: len(world.events(t)) for t in (confirmed, failed)} == events


def test_the_relay_republishes_a_waiting_message_with_the_same_token_and_backs_off(world: World) -> None:
    # Given a transfer whose first message never reached the broker
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    with world.db.unit_of_work() as s:
        assert due_messages(s, 120) == []  # not due yet: the submitter publishes it
        for row in s.scalars(select(OutboxMessage)):
            row.due_at = utcnow() - timedelta(seconds=1)
    # When the relay runs twice
    with world.db.unit_of_work() as s:
        first = due_messages(s, 120)
    with world.db.unit_of_work() as s:
        second = due_messages(s, 120)
    # Then it publishes the same token once, and not again before its back-off
    assert first == [Dispatch(tx_id, "resolve_source", 1)] and second == []
    assert world.tx(tx_id).driver_seq == 1


def test_replay_leaves_a_live_driver_alone_unless_forced_and_refuses_a_final_transfer(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    pending, failed = world.transfer(alice, "0.1"), world.transfer(alice, "5")
    world.run_until(failed, "lock_funds")  # insufficient funds
    with world.db.unit_of_work() as s:  # its message is on its way: a replay would only compete
        assert claim_for_replay(s, load_tx(s, pending), 120) is None
    running = world.take("resolve_source", pending)
    with world.db.unit_of_work() as s:
        assert claim_for_replay(s, load_tx(s, pending), 120) is None  # a step holds its lease
        redrive = claim_for_replay(s, load_tx(s, pending), 120, force=True)
        assert claim_for_replay(s, load_tx(s, failed), 120, force=True) is None
    assert redrive is not None and (redrive.stage, redrive.step) == (Stage.RECEIVED, "resolve_source")
    assert redrive.dispatch.seq == running.seq + 1
    assert world.events(pending)[-1].reason == "replayed"
    assert world.events(failed)[-1].to_stage == "FAILED"


def test_a_held_transfer_is_left_to_ops_until_replayed(world: World) -> None:
    # Given a transfer held after an error no retry can cure, long without progress
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    with world.db.unit_of_work() as s:
        for row in s.scalars(select(OutboxMessage)):
            s.delete(row)
        hold(s, load_tx(s, tx_id), "request_signature: ChainMismatch: node serves chain 1")
    world.edit(tx_id, lambda tx: setattr(tx, "heartbeat_at", utcnow() - timedelta(hours=1)))
    # Then the sweeper never claims it, and a message for it is dropped
    assert sweep(world, park_s=0) == []
    assert world.take("resolve_source", tx_id) is None
    assert world.tx(tx_id).last_error.startswith("request_signature: ChainMismatch")
    # When ops replays it, it is released from hold and re-driven from its stage
    with world.db.unit_of_work() as s:
        redrive = claim_for_replay(s, load_tx(s, tx_id), 120)
    assert redrive is not None and (redrive.stage, redrive.step) == (Stage.RECEIVED, "resolve_source")
    assert world.tx(tx_id).held_at is None
    assert [e.reason for e in world.events(tx_id)][-2:] == ["held", "replayed"]


def test_the_relay_does_not_copy_a_message_whose_queue_is_backed_up_until_it_waited_too_long(world: World) -> None:
    # Given a due outbox row whose step queue still holds messages (a backlog, not a loss)
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")

    def due(created_s_ago: float) -> None:
        with world.db.unit_of_work() as s:
            for row in s.scalars(select(OutboxMessage)):
                row.due_at = utcnow() - timedelta(seconds=1)
                row.created_at = utcnow() - timedelta(seconds=created_s_ago)

    due(30)
    with world.db.unit_of_work() as s:
        assert due_messages(s, 120, frozenset({"resolve_source"})) == []
    with world.db.unit_of_work() as s:  # looked at again later, not at once
        assert due_messages(s, 120, frozenset({"resolve_source"})) == []
    # When it has waited ten times the grace, it is copied all the same
    due(1300)
    with world.db.unit_of_work() as s:
        assert due_messages(s, 120, frozenset({"resolve_source"})) == [Dispatch(tx_id, "resolve_source", 1)]
