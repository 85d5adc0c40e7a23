"""Several drivers on one transfer: whatever the interleaving, only the current one writes.

Each scenario reproduces a race found in review (issue 7): a driver reads, another takes over
(the sweeper after a lease expiry, or `paratro replay`) and moves the transfer on, then the first
one's late conclusion arrives. It must write nothing and pass nothing on.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from pipeline.driving import load_tx
from pipeline.errors import Superseded
from pipeline.models import TransactionEvent
from pipeline.recovery import claim_for_replay
from pipeline.stages import Stage
from pipeline.steps import STEP_FUNCTIONS
from tests.unit.fakes import DEFAULT_FEE, EXPIRED, NOT_FOUND, World

ETH = 10**18
RESERVE = DEFAULT_FEE.max_fee


def take_over(world: World, tx_id: str) -> None:
    """A second driver (ops' forced replay, or the sweeper after the first one's lease expired)."""
    with world.db.unit_of_work() as s:
        assert claim_for_replay(s, load_tx(s, tx_id), 120, force=True) is not None


def test_a_late_expired_verdict_never_throws_away_a_live_replacement(world: World) -> None:
    # Given a broadcast transfer followed by driver A, which asked the node about hash H0
    alice = world.onboard(balances={"ETH": ETH})
    adapter = world.adapter()
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "broadcast")
    h0 = world.tx(tx_id).tx_hash
    slow = world.take("confirm", tx_id)
    # and driver B, which took over, proved H0 expired, re-signed H1 and broadcast it
    take_over(world, tx_id)
    adapter.statuses = [EXPIRED]
    world.step("confirm", tx_id)
    world.step("request_signature", tx_id)
    world.step("broadcast", tx_id)
    h1 = world.tx(tx_id).tx_hash
    assert h1 != h0 and world.tx(tx_id).stage == "BROADCAST"

    # When A's answer "H0 expired" finally arrives
    with pytest.raises(Superseded):
        STEP_FUNCTIONS["confirm"](world.ctx(), slow)

    # Then H1 stays the one transaction followed: no second replacement, no H2
    tx = world.tx(tx_id)
    assert (tx.tx_hash, tx.replacement_count, tx.stage) == (h1, 1, "BROADCAST")
    assert world.balances(alice, "ETH") == (ETH, ETH // 10 + RESERVE)


def test_a_stale_rejection_never_fails_a_transfer_another_driver_moved_on(world: World) -> None:
    # Given driver A about to broadcast, and driver B that took over and broadcast the same bytes
    alice = world.onboard(balances={"ETH": ETH})
    adapter = world.adapter()
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "request_signature")
    slow = world.take("broadcast", tx_id)
    take_over(world, tx_id)
    world.step("broadcast", tx_id)
    # When A's send is refused and the chain even "proves" it unlandable from A's stale view
    from chains.errors import TransactionRejected

    adapter.broadcast_errors = [TransactionRejected("rejected_by_node", "already known")]
    adapter.statuses, adapter.unlandable = [NOT_FOUND], True
    with pytest.raises(Superseded):
        STEP_FUNCTIONS["broadcast"](world.ctx(), slow)
    # Then the transfer is untouched: still followed, locks held
    assert world.tx(tx_id).stage == "BROADCAST"
    assert world.balances(alice, "ETH") == (ETH, ETH // 10 + RESERVE)


def test_a_stale_lock_funds_run_never_writes_failed_over_funds_locked(world: World) -> None:
    # Given driver A that read DESTINATION_VALID and went to price the fee
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "validate_destination")
    slow = world.take("lock_funds", tx_id)
    # and driver B that took over and locked the funds
    take_over(world, tx_id)
    world.step("lock_funds", tx_id)
    # When A concludes (whatever it decided)
    with pytest.raises(Superseded):
        STEP_FUNCTIONS["lock_funds"](world.ctx(), slow)
    # Then one lock, one stage change out of DESTINATION_VALID
    assert world.tx(tx_id).stage == "FUNDS_LOCKED"
    assert world.balances(alice, "ETH") == (ETH, ETH // 10 + RESERVE)
    with world.db.unit_of_work() as s:
        moves = s.scalars(select(TransactionEvent.to_stage).where(
            TransactionEvent.transaction_id == tx_id, TransactionEvent.from_stage == "DESTINATION_VALID",
            TransactionEvent.to_stage != "DESTINATION_VALID")).all()
    assert moves == ["FUNDS_LOCKED"]


def test_load_tx_rereads_a_row_the_session_already_holds(world: World) -> None:
    # The PostgreSQL lock_funds bug: a second load in the same session returned the identity-map
    # copy with the stage read before the lock. Here another writer's change is made behind the
    # session's back (raw SQL); the locked re-load must see it.
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    with world.db.unit_of_work() as s:
        assert load_tx(s, tx_id, for_update=False).stage == Stage.RECEIVED.value
        s.connection().exec_driver_sql(
            "UPDATE transactions SET stage = 'SOURCE_RESOLVED' WHERE transaction_id = ?", (tx_id,))
        assert load_tx(s, tx_id).stage == Stage.SOURCE_RESOLVED.value
