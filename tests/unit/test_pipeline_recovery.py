"""The sweeper's claim: a pending transfer whose heartbeat is old is re-driven once; final ones never."""

from __future__ import annotations

from datetime import timedelta

from pipeline.models import Transaction, utcnow
from pipeline.recovery import Redrive, claim_for_replay, claim_stalled, hold
from pipeline.stages import Stage
from tests.unit.fakes import World, included

ETH = 10**18


def age(world: World, tx_id: str, seconds: float) -> None:
    def change(tx: Transaction) -> None:
        tx.heartbeat_at = utcnow() - timedelta(seconds=seconds)
    world.edit(tx_id, change)


def sweep(world: World, older_than_s: float = 120, limit: int = 500) -> list[Redrive]:
    with world.db.unit_of_work() as s:
        return claim_stalled(s, older_than_s, limit)


def test_given_a_pending_transfer_with_an_old_heartbeat_then_it_is_claimed_exactly_once(world: World) -> None:
    # Given a transfer whose message was lost 10 minutes ago
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    age(world, tx_id, 600)

    # When the sweeper runs twice in a row
    first = sweep(world)
    second = sweep(world)

    # Then the first run claims it, from the stage it is in, and the second finds nothing
    assert first == [Redrive(tx_id, Stage.RECEIVED, "resolve_source")]
    assert second == []
    assert utcnow() - world.tx(tx_id).heartbeat_at < timedelta(seconds=5)  # touched
    last = world.events(tx_id)[-1]
    assert (last.from_stage, last.to_stage, last.reason) == ("RECEIVED", "RECEIVED", "redriven_by_sweeper")
    assert world.tx(tx_id).stage == "RECEIVED"  # claiming does not move the transfer


def test_a_fresh_transfer_is_not_claimed(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    world.transfer(alice, "0.1")
    assert sweep(world) == []


def test_the_redrive_names_the_step_for_the_stage_and_carries_the_last_error(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    world.adapter().statuses = [included(1)]
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "confirm")
    assert world.tx(tx_id).stage == "CONFIRMING"

    def stale(tx: Transaction) -> None:
        tx.heartbeat_at = utcnow() - timedelta(seconds=600)
        tx.last_error = "rpc timed out"
    world.edit(tx_id, stale)

    assert sweep(world) == [Redrive(tx_id, Stage.CONFIRMING, "confirm")]
    assert world.events(tx_id)[-1].detail == "rpc timed out"


def test_final_transfers_are_never_claimed(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    world.adapter().statuses = [included(3)]
    confirmed, failed = world.transfer(alice, "0.1"), world.transfer(alice, "0.1", from_address="0x" + "99" * 20)
    world.run_until(confirmed, "confirm")
    world.step("resolve_source", failed)
    assert (world.tx(confirmed).status, world.tx(failed).status) == ("CONFIRMED", "FAILED")
    events = {t: len(world.events(t)) for t in (confirmed, failed)}
    for tx_id in (confirmed, failed):
        age(world, tx_id, 86_400)

    assert sweep(world, older_than_s=0) == []
    assert {t: len(world.events(t)) for t in (confirmed, failed)} == events


def test_the_oldest_are_claimed_first_up_to_the_limit(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    tx_ids = [world.transfer(alice, "0.1") for _ in range(3)]
    for tx_id, seconds in zip(tx_ids, (300, 900, 600), strict=True):
        age(world, tx_id, seconds)
    assert [r.transaction_id for r in sweep(world, limit=2)] == [tx_ids[1], tx_ids[2]]
    assert [r.transaction_id for r in sweep(world, limit=2)] == [tx_ids[0]]


def test_replay_claims_a_pending_transfer_and_refuses_a_final_one(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    pending, failed = world.transfer(alice, "0.1"), world.transfer(alice, "5")
    world.run_until(failed, "lock_funds")  # insufficient funds
    with world.db.unit_of_work() as s:
        assert claim_for_replay(s, s.get(Transaction, pending)) == Redrive(pending, Stage.RECEIVED, "resolve_source")
        assert claim_for_replay(s, s.get(Transaction, failed)) is None
    assert world.events(pending)[-1].reason == "replayed"
    assert world.events(failed)[-1].to_stage == "FAILED"


def test_a_held_transfer_is_left_to_ops_until_replayed(world: World) -> None:
    # Given a transfer held after an error no retry can cure, long without progress
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    with world.db.unit_of_work() as s:
        hold(s, s.get(Transaction, tx_id), "request_signature: ChainMismatch: node serves chain 1")
    age(world, tx_id, 600)
    # Then the sweeper never claims it
    assert sweep(world) == []
    assert world.tx(tx_id).last_error.startswith("request_signature: ChainMismatch")
    # When ops replays it, it is released from hold and re-driven from its stage
    with world.db.unit_of_work() as s:
        redrive = claim_for_replay(s, s.get(Transaction, tx_id))
    assert redrive == Redrive(tx_id, Stage.RECEIVED, "resolve_source")
    assert world.tx(tx_id).held_at is None
    assert [e.reason for e in world.events(tx_id)][-2:] == ["held", "replayed"]
