"""Steps 1-3 (resolve_source, validate_destination, lock_funds): the ways a transfer is refused
before anything is signed, each ending FAILED with its reason code and no funds held."""

from __future__ import annotations

import pytest

from chains.errors import ChainRpcError, TransactionRejected
from pipeline.steps import OutcomeKind
from pipeline.stages import Stage
from tests.unit.fakes import DEFAULT_FEE, World

ETH = 10**18
USDT = 10**6
RESERVE = DEFAULT_FEE.max_fee
USDT_CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def assert_failed(world: World, tx_id: str, reason: str, from_stage: str) -> None:
    tx = world.tx(tx_id)
    assert (tx.status, tx.stage, tx.failure_reason) == ("FAILED", "FAILED", reason)
    assert tx.failure_detail and tx.finalized_at is not None
    last = world.events(tx_id)[-1]
    assert (last.from_stage, last.to_stage, last.reason) == (from_stage, "FAILED", reason)
    assert world.ledger_entries(tx_id) == []  # nothing ever left the account


# -- resolve_source --------------------------------------------------------------------------------

def test_given_a_known_source_when_resolved_then_wallet_account_asset_and_fee_asset_are_recorded(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH, "USDT": USDT})
    tx_id = world.transfer(alice, "1", symbol="USDT", from_address=alice.address.upper().replace("0X", "0x"))
    outcome = world.step("resolve_source", tx_id)
    assert (outcome.kind, outcome.stage) == (OutcomeKind.ADVANCED, Stage.SOURCE_RESOLVED)
    tx = world.tx(tx_id)
    assert (tx.wallet_id, tx.account_id, tx.asset_id, tx.fee_asset_id) == (
        alice.wallet_id, alice.account_id, alice.assets["USDT"], alice.assets["ETH"])
    assert tx.from_address == alice.address  # normalized by the adapter


@pytest.mark.parametrize("from_address", ["0x" + "99" * 20, "not-an-address", "0x1234"], ids=["unknown", "garbage", "short"])
def test_given_a_source_address_with_no_account_then_failed_source_not_found(world: World, from_address: str) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "1", from_address=from_address)
    outcome = world.step("resolve_source", tx_id)
    assert (outcome.kind, outcome.stage) == (OutcomeKind.FINAL, Stage.FAILED)
    assert_failed(world, tx_id, "source_not_found", "RECEIVED")


def test_given_another_clients_address_then_failed_source_not_found_and_their_funds_untouched(world: World) -> None:
    # Given Alice's funded account, and Mallory (another client) naming Alice's address as source
    alice = world.onboard(balances={"ETH": ETH})
    mallory = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(mallory, "0.5", from_address=alice.address)

    outcome = world.step("resolve_source", tx_id)

    # Then it is reported exactly like a missing account (no tenant probing)
    assert outcome.kind is OutcomeKind.FINAL
    assert_failed(world, tx_id, "source_not_found", "RECEIVED")
    assert alice.address in world.tx(tx_id).failure_detail
    assert "another" not in world.tx(tx_id).failure_detail.lower()
    assert world.balances(alice, "ETH") == (ETH, 0)
    assert world.tx(tx_id).account_id is None


def test_given_an_account_on_another_chain_then_source_not_found(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})  # an ethereum account only
    tx_id = world.transfer(alice, "1", chain="polygon", symbol="MATIC")
    world.step("resolve_source", tx_id)
    assert_failed(world, tx_id, "source_not_found", "RECEIVED")


def test_given_an_account_without_that_token_then_source_not_found(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})  # no USDT asset
    tx_id = world.transfer(alice, "1", symbol="USDT")
    world.step("resolve_source", tx_id)
    assert_failed(world, tx_id, "source_not_found", "RECEIVED")


def test_given_a_wallet_still_generating_its_key_then_failed_wallet_not_active(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH}, active=False)
    tx_id = world.transfer(alice, "1")
    outcome = world.step("resolve_source", tx_id)
    assert outcome.kind is OutcomeKind.FINAL
    assert_failed(world, tx_id, "wallet_not_active", "RECEIVED")


# -- validate_destination --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("to", "symbol"),
    [("0x" + "00" * 20, "ETH"), ("bc1qnotevm", "ETH"), ("0x" + "zz" * 20, "ETH"), (USDT_CONTRACT, "USDT")],
    ids=["zero address", "other family", "non-hex", "token's own contract"],
)
def test_given_an_invalid_destination_then_failed_invalid_destination(world: World, to: str, symbol: str) -> None:
    alice = world.onboard(balances={"ETH": ETH, "USDT": USDT})
    tx_id = world.transfer(alice, "0.1", symbol=symbol, to=to)
    world.step("resolve_source", tx_id)
    outcome = world.step("validate_destination", tx_id)
    assert (outcome.kind, outcome.stage) == (OutcomeKind.FINAL, Stage.FAILED)
    assert_failed(world, tx_id, "invalid_destination", "SOURCE_RESOLVED")
    assert world.tx(tx_id).normalized_to_address is None
    # the later steps stand down
    assert world.step("lock_funds", tx_id).kind is OutcomeKind.NOOP
    assert world.balances(alice, "ETH") == (ETH, 0)


def test_given_the_source_as_destination_then_failed_invalid_destination(world: World) -> None:
    # The chain would only charge the fee while the ledger debited the amount: refused up front
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1", to=alice.address.lower())
    world.step("resolve_source", tx_id)
    assert world.step("validate_destination", tx_id).stage is Stage.FAILED
    assert_failed(world, tx_id, "invalid_destination", "SOURCE_RESOLVED")
    assert "source address" in world.tx(tx_id).failure_detail


# -- lock_funds ------------------------------------------------------------------------------------

def test_given_less_than_the_amount_then_failed_insufficient_funds_and_nothing_locked(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "2")
    world.run_until(tx_id, "validate_destination")
    outcome = world.step("lock_funds", tx_id)
    assert (outcome.kind, outcome.stage) == (OutcomeKind.FINAL, Stage.FAILED)
    assert_failed(world, tx_id, "insufficient_funds", "DESTINATION_VALID")
    assert world.balances(alice, "ETH") == (ETH, 0)
    assert world.tx(tx_id).fee_reserved is None


def test_given_funds_already_locked_by_another_transfer_then_the_next_one_is_short(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    first, second = world.transfer(alice, "0.6"), world.transfer(alice, "0.6")
    world.run_until(first, "lock_funds")
    world.run_until(second, "lock_funds")
    assert world.tx(first).stage == "FUNDS_LOCKED"
    assert_failed(world, second, "insufficient_funds", "DESTINATION_VALID")
    assert world.balances(alice, "ETH") == (ETH, 6 * ETH // 10 + RESERVE)


def test_given_exactly_the_amount_in_native_but_nothing_for_the_fee_then_insufficient_funds_for_fee(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "1")
    world.run_until(tx_id, "lock_funds")
    assert_failed(world, tx_id, "insufficient_funds_for_fee", "DESTINATION_VALID")
    assert world.balances(alice, "ETH") == (ETH, 0)


def test_given_a_token_transfer_with_zero_native_balance_then_insufficient_funds_for_fee_and_no_lock(world: World) -> None:
    alice = world.onboard(balances={"ETH": 0, "USDT": 10 * USDT})
    tx_id = world.transfer(alice, "5", symbol="USDT")
    outcomes = world.run_until(tx_id, "lock_funds")
    assert outcomes[-1].kind is OutcomeKind.FINAL
    assert_failed(world, tx_id, "insufficient_funds_for_fee", "DESTINATION_VALID")
    assert world.balances(alice, "USDT") == (10 * USDT, 0)
    assert world.balances(alice, "ETH") == (0, 0)


def test_given_a_token_account_with_no_native_asset_at_all_then_insufficient_funds_for_fee(world: World) -> None:
    alice = world.onboard(balances={"USDT": 10 * USDT})
    tx_id = world.transfer(alice, "5", symbol="USDT")
    world.run_until(tx_id, "lock_funds")
    assert world.tx(tx_id).fee_asset_id is None
    assert_failed(world, tx_id, "insufficient_funds_for_fee", "DESTINATION_VALID")
    assert world.balances(alice, "USDT") == (10 * USDT, 0)


def test_given_the_node_refuses_to_price_the_transfer_then_failed_with_its_reason(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    world.adapter().quote_error = TransactionRejected("insufficient_funds", "node says the sender cannot cover it")
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "lock_funds")
    assert_failed(world, tx_id, "insufficient_funds", "DESTINATION_VALID")
    assert world.balances(alice, "ETH") == (ETH, 0)


def test_given_an_unknown_rejection_code_then_rejected_by_node(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    world.adapter().quote_error = TransactionRejected("execution_reverted", "would revert")
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "lock_funds")
    assert_failed(world, tx_id, "rejected_by_node", "DESTINATION_VALID")


def test_given_the_node_is_down_while_pricing_then_the_error_is_transient_and_the_stage_unchanged(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    adapter = world.adapter()
    adapter.quote_error = ChainRpcError("connection refused")
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "validate_destination")
    events = len(world.events(tx_id))

    with pytest.raises(ChainRpcError) as info:
        world.step("lock_funds", tx_id)

    assert info.value.transient is True
    assert world.tx(tx_id).stage == "DESTINATION_VALID"
    assert len(world.events(tx_id)) == events
    assert world.balances(alice, "ETH") == (ETH, 0)
    adapter.quote_error = None  # the retry succeeds
    assert world.step("lock_funds", tx_id).kind is OutcomeKind.ADVANCED


def test_the_fee_quote_is_fixed_on_the_transfer_at_lock_time(world: World) -> None:
    alice = world.onboard(balances={"ETH": ETH})
    tx_id = world.transfer(alice, "0.1")
    world.run_until(tx_id, "lock_funds")
    tx = world.tx(tx_id)
    assert tx.fee_reserved == RESERVE
    assert tx.fee_params == '{"inputs": [], "max_fee": 21000000000000, "params": {"gas": 21000, "gasPrice": 1000000000}}'
    world.step("request_signature", tx_id)
    assert world.adapter().built[0][1] == DEFAULT_FEE  # built with exactly the stored quote
