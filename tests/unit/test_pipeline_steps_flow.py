"""Whole transfers through the six steps, with a fake chain and the real local signer.

Happy paths end CONFIRMED with the ledger settled and one event per stage change; every step run
twice is a no-op the second time (Redis redelivers with acks_late).
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from pipeline.steps import STEP_FUNCTIONS, OutcomeKind
from pipeline.stages import Stage
from signer.local import SignatureRequest
from tests.unit.fakes import DEFAULT_FEE, DEFAULT_FEE_PAID, OTHER_ADDRESS, World, included

ETH = 10**18
USDT = 10**6
RESERVE = DEFAULT_FEE.max_fee
PAID = DEFAULT_FEE_PAID

HAPPY_STAGES = [
    (None, "RECEIVED"),
    ("RECEIVED", "SOURCE_RESOLVED"),
    ("SOURCE_RESOLVED", "DESTINATION_VALID"),
    ("DESTINATION_VALID", "FUNDS_LOCKED"),
    ("FUNDS_LOCKED", "SIGNATURE_REQUESTED"),
    ("SIGNATURE_REQUESTED", "SIGNED"),
    ("SIGNED", "BROADCAST"),
    ("BROADCAST", "CONFIRMING"),
    ("CONFIRMING", "CONFIRMED"),
]


def test_given_a_funded_native_account_when_a_transfer_runs_then_it_confirms_and_settles(world: World) -> None:
    # Given Alice with 2 ETH, and a chain that shows the transaction at 1 then 3 confirmations
    alice = world.onboard(balances={"ETH": 2 * ETH})
    adapter = world.adapter()
    adapter.statuses = [included(1), included(3)]
    tx_id = world.transfer(alice, "0.5", to=OTHER_ADDRESS.upper().replace("0X", "0x"))

    # When the steps run in order
    outcomes = world.run_until(tx_id, "broadcast")
    assert [o.kind for o in outcomes] == [OutcomeKind.ADVANCED] * 5
    assert [o.stage for o in outcomes] == [Stage.SOURCE_RESOLVED, Stage.DESTINATION_VALID, Stage.FUNDS_LOCKED,
                                           Stage.SIGNED, Stage.BROADCAST]
    # (while in flight, the amount and the whole fee reserve are locked)
    assert world.balances(alice, "ETH") == (2 * ETH, ETH // 2 + RESERVE)
    shallow = world.step("confirm", tx_id)
    deep = world.step("confirm", tx_id)

    # Then it waited once, then confirmed, and the ledger moved amount + the fee actually paid
    assert (shallow.kind, shallow.stage, shallow.countdown) == (OutcomeKind.WAIT, Stage.CONFIRMING, 0.25)
    assert (deep.kind, deep.stage) == (OutcomeKind.FINAL, Stage.CONFIRMED)
    tx = world.tx(tx_id)
    assert (tx.status, tx.stage, tx.failure_reason) == ("CONFIRMED", "CONFIRMED", None)
    assert (tx.fee_reserved, tx.fee_paid, tx.confirmations, tx.block_number) == (RESERVE, PAID, 3, 100)
    assert tx.finalized_at is not None
    assert tx.normalized_to_address == OTHER_ADDRESS
    assert world.balances(alice, "ETH") == (2 * ETH - ETH // 2 - PAID, 0)
    eth = alice.assets["ETH"]
    assert world.ledger_entries(tx_id) == [(eth, "DEBIT", -ETH // 2), (eth, "FEE", -PAID)]
    # and exactly one event per stage change
    assert world.stage_changes(tx_id) == HAPPY_STAGES
    # and the bytes that went out are the stored signed bytes, sent once
    assert [b.raw for b in adapter.broadcasts] == [tx.signed_payload]
    assert adapter.broadcasts[0].tx_hash == tx.tx_hash
    assert adapter.built[0][2] == tx.nonce == 0


def test_given_a_token_transfer_when_it_confirms_then_tokens_and_native_fee_are_debited(world: World) -> None:
    # Given Alice with 10 USDT and 1 ETH for fees; the chain reports the tx at full depth at once
    alice = world.onboard(balances={"ETH": ETH, "USDT": 10 * USDT})
    world.adapter().statuses = [included(3)]
    tx_id = world.transfer(alice, "2.5", symbol="USDT")

    world.run_until(tx_id, "lock_funds")
    assert world.balances(alice, "USDT") == (10 * USDT, 2_500_000)
    assert world.balances(alice, "ETH") == (ETH, RESERVE)

    outcomes = world.run_until(tx_id, "confirm")[3:]
    assert [o.kind for o in outcomes] == [OutcomeKind.ADVANCED, OutcomeKind.ADVANCED, OutcomeKind.FINAL]
    assert world.tx(tx_id).status == "CONFIRMED"
    assert world.balances(alice, "USDT") == (7_500_000, 0)
    assert world.balances(alice, "ETH") == (ETH - PAID, 0)
    assert world.ledger_entries(tx_id) == [(alice.assets["USDT"], "DEBIT", -2_500_000),
                                           (alice.assets["ETH"], "FEE", -PAID)]
    # the adapter was handed the registry's token, never something from the caller
    intent = world.adapter().built[0][0]
    assert intent.token.contract == "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    assert (intent.amount, intent.to_address) == (2_500_000, OTHER_ADDRESS)
    # straight from BROADCAST to CONFIRMED: no CONFIRMING event for a tx found at full depth
    assert world.stage_changes(tx_id)[-1] == ("BROADCAST", "CONFIRMED")
    assert len(world.stage_changes(tx_id)) == len(HAPPY_STAGES) - 1


def test_given_every_step_run_twice_then_the_second_run_is_a_noop(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH, "USDT": 10 * USDT})
    adapter = world.adapter()
    adapter.statuses = [included(3)]
    tx_id = world.transfer(alice, "1", symbol="USDT")

    for name in STEP_FUNCTIONS:
        if name == "bump_fee":
            continue  # not in the line: the tracker's hand-off for a transaction that waits too long
        first = world.step(name, tx_id)
        assert first.kind in (OutcomeKind.ADVANCED, OutcomeKind.FINAL), name
        snapshot = (len(world.events(tx_id)), world.balances(alice, "USDT"), world.balances(alice, "ETH"),
                    world.tx(tx_id).nonce, len(adapter.broadcasts))

        second = world.step(name, tx_id)  # the redelivered message

        assert (second.kind, second.stage) == (OutcomeKind.NOOP, first.stage), name
        assert snapshot == (len(world.events(tx_id)), world.balances(alice, "USDT"), world.balances(alice, "ETH"),
                            world.tx(tx_id).nonce, len(adapter.broadcasts)), name

    assert len(adapter.broadcasts) == 1
    assert len(adapter.built) == 1 and len(adapter.nonce_calls) == 1
    with world.db.unit_of_work() as s:
        assert s.scalar(select(func.count()).select_from(SignatureRequest)) == 1
    assert world.stage_changes(tx_id) == [c for c in HAPPY_STAGES if c[1] != "CONFIRMING"][:-1] + [("BROADCAST", "CONFIRMED")]


@pytest.mark.parametrize("name", list(STEP_FUNCTIONS))
def test_given_a_confirmed_transfer_when_any_step_is_redelivered_then_nothing_happens(world: World, name: str) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    world.adapter().statuses = [included(3)]
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "confirm")
    before = (world.events(tx_id), world.balances(alice, "ETH"))

    outcome = world.step(name, tx_id)

    assert (outcome.kind, outcome.stage) == (OutcomeKind.NOOP, Stage.CONFIRMED)
    assert [e.id for e in world.events(tx_id)] == [e.id for e in before[0]]
    assert world.balances(alice, "ETH") == before[1]


def test_given_sequential_transfers_then_nonces_are_consecutive_from_the_chains_next_nonce(world: World) -> None:
    # Given the chain says the account's next nonce is 7
    alice = world.onboard(balances={"ETH": 10 * ETH})
    adapter = world.adapter()
    adapter.chain_nonce = 7
    tx_ids = [world.transfer(alice, "0.1") for _ in range(3)]

    for tx_id in tx_ids:
        world.run_until(tx_id, "request_signature")

    # Then they get 7, 8, 9; the chain was asked once, after which the DB cursor drives
    assert [world.tx(t).nonce for t in tx_ids] == [7, 8, 9]
    assert [b[2] for b in adapter.built] == [7, 8, 9]
    assert adapter.nonce_calls == [alice.address]
    assert [world.events(t)[-2].detail for t in tx_ids] == ["nonce=7", "nonce=8", "nonce=9"]


def test_nonces_are_per_account(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    bob = world.onboard(balances={"ETH": ETH})
    a, b = world.transfer(alice, "0.1"), world.transfer(bob, "0.1")
    world.run_until(a, "request_signature")
    world.run_until(b, "request_signature")
    assert (world.tx(a).nonce, world.tx(b).nonce) == (0, 0)


def test_every_step_touches_the_heartbeat(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    world.adapter().statuses = [included(1)]
    tx_id = world.transfer(alice, "0.1")
    for name in STEP_FUNCTIONS:
        before = world.tx(tx_id).heartbeat_at
        world.step(name, tx_id)
        assert world.tx(tx_id).heartbeat_at >= before
    assert world.tx(tx_id).heartbeat_at > world.tx(tx_id).created_at
