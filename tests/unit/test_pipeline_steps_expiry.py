"""Expiry replacement: a signed transaction the chain proves dead (TRON expiration passed, Solana
blockhash no longer valid, and not on chain) goes back to FUNDS_LOCKED as one recorded event,
keeping its locks and nonce, and is signed again under a new request id. Nothing else re-signs.
"""

from __future__ import annotations

import pytest

from sqlalchemy import func, select

from chains.errors import TransactionRejected
from pipeline.errors import UnprovenRejection
from pipeline.models import ReleasedNonce
from pipeline.steps import OutcomeKind
from pipeline.stages import Stage
from signer.local import SignatureRequest
from tests.unit.fakes import DEFAULT_FEE, DEFAULT_FEE_PAID, EXPIRED, NOT_FOUND, PENDING, Party, World, included

ETH = 10**18
RESERVE = DEFAULT_FEE.max_fee
PAID = DEFAULT_FEE_PAID
HELD = (ETH, ETH // 10 + RESERVE)  # Alice's ETH while the transfer is in flight


def in_flight(world: World, last_step: str) -> tuple[Party, str]:
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    assert world.run_until(tx_id, last_step)[-1].kind is OutcomeKind.ADVANCED
    return alice, tx_id


def signature_requests(world: World) -> list[str]:
    with world.db.unit_of_work() as s:
        return list(s.scalars(select(SignatureRequest.request_id).order_by(SignatureRequest.request_id)))


def released_nonces(world: World) -> int:
    with world.db.unit_of_work() as s:
        return s.scalar(select(func.count()).select_from(ReleasedNonce)) or 0


def assert_replaced(world: World, alice: Party, tx_id: str, old, from_stage: str, outcome) -> None:
    """The recorded replacement: RESTART from request_signature, FUNDS_LOCKED, locks and nonce kept."""
    assert (outcome.kind, outcome.stage, outcome.step) == (OutcomeKind.RESTART, Stage.FUNDS_LOCKED, "request_signature")
    tx = world.tx(tx_id)
    assert (tx.stage, tx.status, tx.failure_reason) == ("FUNDS_LOCKED", "PENDING", None)
    assert tx.replacement_count == 1
    assert (tx.signed_payload, tx.tx_hash, tx.unsigned_payload, tx.signing_payloads, tx.build_context) == (
        None, None, None, None, None)
    assert (tx.block_number, tx.block_hash, tx.confirmations) == (None, None, 0)
    # the locks, the nonce and the fixed fee quote are what they were
    assert (tx.nonce, tx.fee_params, tx.fee_reserved) == (old.nonce, old.fee_params, old.fee_reserved)
    assert world.balances(alice, "ETH") == HELD
    assert world.ledger_entries(tx_id) == []
    assert released_nonces(world) == 0
    last = world.events(tx_id)[-1]
    assert (last.from_stage, last.to_stage, last.reason) == (from_stage, "FUNDS_LOCKED", "expired")
    assert old.tx_hash in last.detail


def assert_resigned(world: World, alice: Party, tx_id: str, old) -> None:
    """request_signature again: a new request id, a new build, SIGNED with other bytes."""
    adapter = world.adapter()
    outcome = world.step("request_signature", tx_id)
    assert (outcome.kind, outcome.stage) == (OutcomeKind.ADVANCED, Stage.SIGNED)
    tx = world.tx(tx_id)
    assert tx.signature_request_id == f"{tx_id}.1"
    assert signature_requests(world) == [f"{tx_id}.0", f"{tx_id}.1"]
    assert tx.unsigned_payload != old.unsigned_payload and tx.signed_payload != old.signed_payload
    assert tx.signing_payloads != old.signing_payloads and tx.tx_hash not in (None, old.tx_hash)
    assert tx.build_context != old.build_context  # fresh chain data for the new build
    assert len(adapter.built) == 2 and adapter.built[1][2] == old.nonce  # same nonce, no new one
    assert adapter.nonce_calls == [alice.address]
    assert world.balances(alice, "ETH") == HELD
    assert world.stage_changes(tx_id)[-2:] == [("FUNDS_LOCKED", "SIGNATURE_REQUESTED"), ("SIGNATURE_REQUESTED", "SIGNED")]


def test_given_the_chain_says_expired_then_a_recorded_replacement_and_a_new_signature(world: World) -> None:
    # Given a broadcast transfer that the chain now reports as expired
    alice, tx_id = in_flight(world, "broadcast")
    old = world.tx(tx_id)
    adapter = world.adapter()
    adapter.statuses = [EXPIRED]

    outcome = world.step("confirm", tx_id)

    assert_replaced(world, alice, tx_id, old, "BROADCAST", outcome)
    # a redelivered confirm or broadcast for the old transaction now stands down
    assert world.step("confirm", tx_id).kind is OutcomeKind.NOOP
    assert world.step("broadcast", tx_id).kind is OutcomeKind.NOOP
    assert adapter.status_calls == [old.tx_hash]

    assert_resigned(world, alice, tx_id, old)

    # and the replacement goes out and confirms, settling once
    adapter.statuses = [included(3)]
    assert world.step("broadcast", tx_id).stage is Stage.BROADCAST
    assert world.step("confirm", tx_id).stage is Stage.CONFIRMED
    tx = world.tx(tx_id)
    assert [b.raw for b in adapter.broadcasts] == [old.signed_payload, tx.signed_payload]
    assert adapter.status_calls[-1] == tx.tx_hash
    assert world.balances(alice, "ETH") == (ETH - ETH // 10 - PAID, 0)
    eth = alice.assets["ETH"]
    assert world.ledger_entries(tx_id) == [(eth, "DEBIT", -ETH // 10), (eth, "FEE", -PAID)]


def test_given_the_node_refuses_the_bytes_as_expired_then_the_same_replacement(world: World) -> None:
    alice, tx_id = in_flight(world, "request_signature")
    old = world.tx(tx_id)
    adapter = world.adapter()
    adapter.broadcast_errors = [TransactionRejected("expired", "TRANSACTION_EXPIRATION_ERROR")]
    adapter.statuses = [EXPIRED]  # the chain's proof, asked after the refusal

    outcome = world.step("broadcast", tx_id)

    assert_replaced(world, alice, tx_id, old, "SIGNED", outcome)
    assert "TRANSACTION_EXPIRATION_ERROR" in world.events(tx_id)[-1].detail
    assert (world.tx(tx_id).broadcast_count, world.tx(tx_id).broadcast_at) == (0, None)
    assert_resigned(world, alice, tx_id, old)
    assert world.step("broadcast", tx_id).stage is Stage.BROADCAST
    assert [b.raw for b in adapter.broadcasts] == [old.signed_payload, world.tx(tx_id).signed_payload]


def test_a_refusal_as_expired_without_proof_is_never_a_replacement(world: World) -> None:
    # Given a node that refuses the bytes as expired while the chain does not prove it (a lagging
    # backend: it has not seen the blockhash, or its head is behind)
    alice, tx_id = in_flight(world, "request_signature")
    adapter = world.adapter()
    adapter.broadcast_errors = [TransactionRejected("expired", "Blockhash not found")]
    adapter.statuses = [NOT_FOUND]
    # Then the send is retried, never re-signed
    with pytest.raises(UnprovenRejection):
        world.step("broadcast", tx_id)
    tx = world.tx(tx_id)
    assert (tx.stage, tx.replacement_count, tx.send_attempts) == ("SIGNED", 0, 1)


def test_an_expired_transaction_seen_while_confirming_records_the_reorg_then_the_replacement(world: World) -> None:
    alice, tx_id = in_flight(world, "broadcast")
    adapter = world.adapter()
    adapter.statuses = [included(1), EXPIRED]
    assert world.step("confirm", tx_id).stage is Stage.CONFIRMING
    old = world.tx(tx_id)

    outcome = world.step("confirm", tx_id)

    assert_replaced(world, alice, tx_id, old, "BROADCAST", outcome)
    assert world.stage_changes(tx_id)[-2:] == [("CONFIRMING", "BROADCAST"), ("BROADCAST", "FUNDS_LOCKED")]


def test_each_expiry_is_one_more_replacement_with_its_own_request_id(world: World) -> None:
    alice, tx_id = in_flight(world, "broadcast")
    adapter = world.adapter()
    hashes = [world.tx(tx_id).tx_hash]
    for n in (1, 2):
        adapter.statuses = [EXPIRED]
        assert world.step("confirm", tx_id).kind is OutcomeKind.RESTART
        assert world.tx(tx_id).replacement_count == n
        world.step("request_signature", tx_id)
        world.step("broadcast", tx_id)
        tx = world.tx(tx_id)
        assert (tx.signature_request_id, tx.stage) == (f"{tx_id}.{n}", "BROADCAST")
        hashes.append(tx.tx_hash)
    assert len(set(hashes)) == 3
    assert signature_requests(world) == [f"{tx_id}.0", f"{tx_id}.1", f"{tx_id}.2"]
    assert [e.reason for e in world.events(tx_id) if e.to_stage == "FUNDS_LOCKED"] == [None, "expired", "expired"]
    assert world.balances(alice, "ETH") == HELD


def test_a_pending_or_unknown_transaction_is_never_replaced(world: World) -> None:
    alice, tx_id = in_flight(world, "broadcast")
    for status in (PENDING, NOT_FOUND):
        world.adapter().statuses = [status]
        assert world.step("confirm", tx_id).kind is OutcomeKind.WAIT
    tx = world.tx(tx_id)
    assert (tx.stage, tx.replacement_count, tx.signature_request_id) == ("BROADCAST", 0, f"{tx_id}.0")
    assert len(world.adapter().built) == 1


def test_expiry_after_expiry_is_held_for_ops_after_the_replacement_limit(world: World) -> None:
    # Given a transfer whose every signed transaction expires unsent (refused each time)
    from pipeline.steps.settlement import MAX_REPLACEMENTS

    alice, tx_id = in_flight(world, "request_signature")
    world.edit(tx_id, lambda tx: setattr(tx, "replacement_count", MAX_REPLACEMENTS))
    adapter = world.adapter()
    adapter.broadcast_errors = [TransactionRejected("expired", "TRANSACTION_EXPIRATION_ERROR")]
    adapter.statuses = [EXPIRED]
    # When it expires once more
    report = world.deliver("broadcast", tx_id)
    # Then it is held with its locks, not signed again
    tx = world.tx(tx_id)
    assert report.result == "held" and "ReplacementLimit" in tx.last_error
    assert (tx.stage, tx.replacement_count, tx.status) == ("SIGNED", MAX_REPLACEMENTS, "PENDING")
