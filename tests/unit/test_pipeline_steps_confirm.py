"""Step 6 (confirm): follow the broadcast bytes to the registry's depth, reorg-aware, polling
without sleeping; FAILED only when the chain says reverted, STALLED when we stop polling."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chains.errors import TransactionRejected
from sqlalchemy import select

from pipeline.errors import UnprovenRejection
from pipeline.steps.runner import RETRY_BUDGETS
from pipeline.models import ReleasedNonce, Transaction, utcnow
from pipeline.steps import OutcomeKind
from pipeline.stages import Stage
from tests.unit.fakes import DEFAULT_FEE, DEFAULT_FEE_PAID, NOT_FOUND, PENDING, Party, World, included, reverted

ETH = 10**18
USDT = 10**6
RESERVE = DEFAULT_FEE.max_fee
PAID = DEFAULT_FEE_PAID


def broadcast_transfer(world: World, symbol: str = "ETH", amount: str = "0.1") -> tuple[Party, str]:
    """Given a transfer of Alice's that has just been broadcast."""
    alice = world.onboard(balances={"ETH": ETH, "USDT": 10 * USDT})
    tx_id = world.transfer(alice, amount, symbol=symbol)
    outcomes = world.run_until(tx_id, "broadcast")
    assert outcomes[-1].stage is Stage.BROADCAST
    return alice, tx_id


def long_ago(seconds: float, *fields: str):
    def change(tx: Transaction) -> None:
        for name in fields:
            setattr(tx, name, utcnow() - timedelta(seconds=seconds))
    return change


def notes(world: World, tx_id: str) -> list[str | None]:
    return [e.reason for e in world.events(tx_id) if e.from_stage == e.to_stage]


def test_given_a_pending_transaction_then_wait_at_the_chains_poll_interval(world: World) -> None:
    alice, tx_id = broadcast_transfer(world)
    world.adapter().statuses = [PENDING]
    outcome = world.step("confirm", tx_id)
    assert (outcome.kind, outcome.stage, outcome.countdown) == (OutcomeKind.WAIT, Stage.BROADCAST, 0.25)
    assert world.tx(tx_id).stage == "BROADCAST"
    assert world.adapter().status_calls == [world.tx(tx_id).tx_hash]
    assert len(world.adapter().broadcasts) == 1  # a pending tx is not re-sent


def test_the_poll_countdown_is_capped_by_max_countdown(world: World) -> None:
    alice, tx_id = broadcast_transfer(world)
    world.adapter().statuses = [PENDING]
    assert world.step("confirm", tx_id, world.ctx(max_countdown_s=0.1)).countdown == 0.1


def test_given_fewer_confirmations_than_required_then_confirming_and_wait(world: World) -> None:
    alice, tx_id = broadcast_transfer(world)
    world.adapter().statuses = [included(1), included(2)]
    first, second = world.step("confirm", tx_id), world.step("confirm", tx_id)
    assert (first.kind, first.stage) == (OutcomeKind.WAIT, Stage.CONFIRMING)
    assert (second.kind, second.stage) == (OutcomeKind.WAIT, Stage.CONFIRMING)
    tx = world.tx(tx_id)
    assert (tx.block_number, tx.block_hash, tx.confirmations, tx.status) == (100, "0xb100", 2, "PENDING")
    assert world.stage_changes(tx_id)[-1] == ("BROADCAST", "CONFIRMING")  # one event, not one per poll
    assert world.balances(alice, "ETH") == (ETH, ETH // 10 + RESERVE)


@pytest.mark.parametrize("after", [NOT_FOUND, PENDING], ids=["dropped", "back in mempool"])
def test_given_an_included_tx_whose_block_leaves_the_chain_then_back_to_broadcast_with_a_reorg_event(
    world: World, after
) -> None:
    alice, tx_id = broadcast_transfer(world)
    adapter = world.adapter()
    adapter.statuses = [included(1), after]
    world.step("confirm", tx_id)

    outcome = world.step("confirm", tx_id)

    assert (outcome.kind, outcome.stage) == (OutcomeKind.WAIT, Stage.BROADCAST)
    tx = world.tx(tx_id)
    assert (tx.stage, tx.block_number, tx.block_hash, tx.confirmations) == ("BROADCAST", None, None, 0)
    last = world.events(tx_id)[-1]
    assert (last.from_stage, last.to_stage, last.reason) == ("CONFIRMING", "BROADCAST", "reorg")
    assert "0xb100" in last.detail
    assert world.balances(alice, "ETH") == (ETH, ETH // 10 + RESERVE)  # still held
    assert len(adapter.built) == 1  # nothing re-signed

    # and when it is mined again (in another block) it confirms normally
    adapter.statuses = [included(3, block=101, block_hash="0xb101")]
    final = world.step("confirm", tx_id)
    assert (final.kind, final.stage) == (OutcomeKind.FINAL, Stage.CONFIRMED)
    assert (world.tx(tx_id).block_number, world.tx(tx_id).block_hash) == (101, "0xb101")
    assert world.balances(alice, "ETH") == (ETH - ETH // 10 - PAID, 0)


def test_a_reorg_stage_event_shows_the_transfer_after_the_reorg(world: World) -> None:
    import json

    from pipeline.models import Client, WebhookEvent

    alice, tx_id = broadcast_transfer(world)
    with world.db.unit_of_work() as s:
        client = s.get(Client, alice.client_id)
        client.webhook_url, client.webhook_events = "http://127.0.0.1:9/hook", '["transaction.stage"]'
    world.adapter().statuses = [included(2), NOT_FOUND]
    world.step("confirm", tx_id)
    world.step("confirm", tx_id)  # the block left the chain: CONFIRMING -> BROADCAST

    with world.db.unit_of_work() as s:
        bodies = [json.loads(e.payload) for e in s.scalars(
            select(WebhookEvent).where(WebhookEvent.resource_id == tx_id).order_by(WebhookEvent.sequence))]
    assert [(b["data"]["sub_status"], b["data"]["confirmations"]) for b in bodies] == [("CONFIRMING", 2), ("BROADCAST", 0)]
    assert [b["sequence"] for b in bodies] == [1, 2]


def test_given_the_tx_moves_to_another_block_while_confirming_then_a_reorg_note_and_the_new_block(world: World) -> None:
    alice, tx_id = broadcast_transfer(world)
    world.adapter().statuses = [included(1), included(1, block=101, block_hash="0xb101")]
    world.step("confirm", tx_id)
    outcome = world.step("confirm", tx_id)
    assert outcome.stage is Stage.CONFIRMING
    assert notes(world, tx_id) == ["reorg"]
    assert (world.tx(tx_id).block_number, world.tx(tx_id).block_hash) == (101, "0xb101")


def test_given_the_node_forgot_the_tx_for_long_enough_then_the_same_bytes_are_rebroadcast(world: World) -> None:
    alice, tx_id = broadcast_transfer(world)
    adapter = world.adapter()
    adapter.statuses = [NOT_FOUND]
    # Not yet: right after the broadcast, an unknown tx is just propagation delay
    assert world.step("confirm", tx_id).kind is OutcomeKind.WAIT
    assert len(adapter.broadcasts) == 1

    world.edit(tx_id, long_ago(10, "last_broadcast_at"))
    outcome = world.step("confirm", tx_id)

    assert (outcome.kind, outcome.stage) == (OutcomeKind.WAIT, Stage.BROADCAST)
    tx = world.tx(tx_id)
    assert [b.raw for b in adapter.broadcasts] == [tx.signed_payload, tx.signed_payload]
    assert [b.tx_hash for b in adapter.broadcasts] == [tx.tx_hash, tx.tx_hash]
    assert tx.broadcast_count == 2
    assert utcnow() - tx.last_broadcast_at < timedelta(seconds=5)
    assert notes(world, tx_id) == ["rebroadcast"]
    assert len(adapter.built) == 1


def test_given_a_refused_rebroadcast_of_a_transaction_the_chain_still_has_then_polling_continues(world: World) -> None:
    alice, tx_id = broadcast_transfer(world)
    adapter = world.adapter()
    adapter.statuses = [NOT_FOUND, PENDING]  # dropped by this node, but another backend has it
    adapter.broadcast_errors = [TransactionRejected("rejected_by_node", "nonce too low")]
    world.edit(tx_id, long_ago(10, "last_broadcast_at"))
    outcome = world.step("confirm", tx_id)
    assert (outcome.kind, outcome.stage) == (OutcomeKind.WAIT, Stage.BROADCAST)
    assert world.tx(tx_id).status == "PENDING"


def test_given_a_refused_rebroadcast_without_proof_then_it_is_retried_never_ignored(world: World) -> None:
    # Given a dropped transaction that the node now refuses, and no proof it cannot land
    alice, tx_id = broadcast_transfer(world)
    adapter = world.adapter()
    adapter.statuses = [NOT_FOUND]
    adapter.broadcast_errors = [TransactionRejected("rejected_by_node", "replacement transaction underpriced")]
    world.edit(tx_id, long_ago(10, "last_broadcast_at"))
    # Then the step raises a retryable error (the runner retries, then holds): nothing is released
    with pytest.raises(UnprovenRejection):
        world.step("confirm", tx_id)
    assert world.tx(tx_id).stage == "BROADCAST"
    assert world.balances(alice, "ETH") == (ETH, ETH // 10 + RESERVE)


def test_given_a_refused_rebroadcast_then_not_landed_yet_is_no_proof_and_nothing_is_released(world: World) -> None:
    # Given a broadcast transaction evicted from this node's mempool during a fee spike: other
    # mempools may still hold it, so "hash unknown, nonce still ours" proves nothing any more
    alice, tx_id = broadcast_transfer(world)
    adapter = world.adapter()
    adapter.statuses = [NOT_FOUND]
    adapter.unlandable = True
    adapter.broadcast_errors = [TransactionRejected("rejected_by_node", "max fee per gas less than block base fee")]
    world.edit(tx_id, long_ago(10, "last_broadcast_at"))
    # When it is sent again and refused, then the retries run out
    report = world.deliver("confirm", tx_id, errors=RETRY_BUDGETS["confirm"].max_retries)
    # Then it is held with its locks and nonce: never FAILED
    tx = world.tx(tx_id)
    assert report.result == "held" and (tx.status, tx.stage) == ("PENDING", "BROADCAST")
    assert world.balances(alice, "ETH") == (ETH, ETH // 10 + RESERVE)
    with world.db.unit_of_work() as s:
        assert s.scalar(select(ReleasedNonce.nonce)) is None


def test_given_a_reverted_tx_at_depth_then_failed_reverted_with_only_the_fee_debited(world: World) -> None:
    alice, tx_id = broadcast_transfer(world, symbol="USDT", amount="3")
    world.adapter().statuses = [reverted(1), reverted(3, detail="OUT_OF_ENERGY")]
    assert world.step("confirm", tx_id).stage is Stage.CONFIRMING  # not final until deep enough

    outcome = world.step("confirm", tx_id)

    assert (outcome.kind, outcome.stage) == (OutcomeKind.FINAL, Stage.FAILED)
    tx = world.tx(tx_id)
    assert (tx.status, tx.failure_reason, tx.fee_paid) == ("FAILED", "reverted", PAID)
    assert "OUT_OF_ENERGY" in tx.failure_detail  # the chain's own reason is kept for ops
    assert world.events(tx_id)[-1].reason == "reverted"
    assert world.balances(alice, "USDT") == (10 * USDT, 0)  # the value never moved
    assert world.balances(alice, "ETH") == (ETH - PAID, 0)  # but the fee was paid
    assert world.ledger_entries(tx_id) == [(alice.assets["ETH"], "FEE", -PAID)]


def test_given_no_confirmation_within_the_timeout_then_stalled_with_last_error(world: World) -> None:
    alice, tx_id = broadcast_transfer(world)
    world.adapter().statuses = [PENDING]
    world.edit(tx_id, long_ago(3600, "broadcast_at", "last_broadcast_at"))

    outcome = world.step("confirm", tx_id)

    assert (outcome.kind, outcome.stage) == (OutcomeKind.STALLED, Stage.BROADCAST)
    tx = world.tx(tx_id)
    assert (tx.status, tx.stage) == ("PENDING", "BROADCAST")  # replayable, not failed
    assert tx.last_error == "not confirmed within 1800 s of broadcast"
    assert notes(world, tx_id) == ["confirmation_timeout"]
    assert world.balances(alice, "ETH") == (ETH, ETH // 10 + RESERVE)


def test_given_a_forgotten_tx_past_the_timeout_then_a_recorded_rebroadcast_is_really_sent(world: World) -> None:
    alice, tx_id = broadcast_transfer(world)
    adapter = world.adapter()
    adapter.statuses = [NOT_FOUND]
    world.edit(tx_id, long_ago(3600, "broadcast_at", "last_broadcast_at"))

    outcome = world.step("confirm", tx_id)

    assert outcome.kind is OutcomeKind.STALLED
    recorded = world.tx(tx_id).broadcast_count - 1  # rebroadcasts the DB says happened
    assert len(adapter.broadcasts) - 1 == recorded == notes(world, tx_id).count("rebroadcast")


def test_given_a_dropped_tx_past_the_timeout_then_every_redrive_still_sends_the_same_bytes(world: World) -> None:
    # Given a transaction the mempool dropped long after its broadcast (the timeout has passed)
    alice, tx_id = broadcast_transfer(world)
    adapter = world.adapter()
    adapter.statuses = [NOT_FOUND]
    original = adapter.broadcasts[-1]
    # When the sweeper (or ops) re-drives confirm twice, a rebroadcast interval apart
    for _ in range(2):
        world.edit(tx_id, long_ago(3600, "broadcast_at", "last_broadcast_at"))
        assert world.step("confirm", tx_id).kind is OutcomeKind.STALLED
    # Then the same bytes went out again each time, recorded, and the transfer stays replayable
    assert adapter.broadcasts[-2:] == [original, original]
    assert notes(world, tx_id).count("rebroadcast") == 2
    tx = world.tx(tx_id)
    assert (tx.status, tx.stage) == ("PENDING", "BROADCAST") and "not confirmed within" in tx.last_error


def test_an_inclusion_at_depth_without_a_fee_is_an_adapter_bug_and_settles_nothing(world: World) -> None:
    alice, tx_id = broadcast_transfer(world)
    world.adapter().statuses = [included(3, fee_paid=None)]
    with pytest.raises(RuntimeError, match="without the fee"):
        world.step("confirm", tx_id)
    assert world.tx(tx_id).stage == "BROADCAST"
    assert world.balances(alice, "ETH") == (ETH, ETH // 10 + RESERVE)


def test_confirm_before_broadcast_is_a_noop(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "request_signature")
    outcome = world.step("confirm", tx_id)
    assert (outcome.kind, outcome.stage) == (OutcomeKind.NOOP, Stage.SIGNED)
    assert world.adapter().status_calls == []
