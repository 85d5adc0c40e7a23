"""Accepting a transfer: every caller mistake is a typed error that writes nothing; keys are idempotent."""

from __future__ import annotations

from dataclasses import replace

import pytest

from chains.registry import Registry
from pipeline.db import Database
from pipeline.errors import (
    IdempotencyConflict,
    InvalidAmount,
    InvalidId,
    InvalidInput,
    NotFound,
    UnknownChainError,
    UnknownSymbol,
)
from pipeline.models import Transaction, TransactionEvent
from pipeline.transfers import TransferRequest, create_transfer, get_transfer
from tests.unit.fakes import OTHER_ADDRESS, Party, World


@pytest.fixture
def alice(world: World) -> Party:
    return world.onboard(balances={"ETH": 10**18, "USDT": 10**6})


def request(party: Party, **changes: object) -> TransferRequest:
    base = TransferRequest(client_id=party.client_id, from_address=party.address, to_address=OTHER_ADDRESS,
                           chain="ethereum", token_symbol="USDT", amount="1.5", idempotency_key="order-42")
    return replace(base, **changes)  # type: ignore[arg-type]


def submit(db: Database, registry: Registry, req: TransferRequest) -> tuple[Transaction, bool]:
    with db.unit_of_work() as s:
        return create_transfer(s, registry, req)


def rows(world: World) -> tuple[int, int]:
    return world.count(Transaction), world.count(TransactionEvent)


# -- the happy path --------------------------------------------------------------------------------

def test_given_a_valid_request_when_created_then_one_pending_row_and_its_first_event(world: World, alice: Party) -> None:
    tx, created = submit(world.db, world.registry, request(alice))
    assert created is True
    stored = world.tx(tx.transaction_id)
    assert stored.transaction_id.startswith("tx_")
    assert (stored.status, stored.stage, stored.failure_reason) == ("PENDING", "RECEIVED", None)
    assert (stored.chain, stored.network, stored.token_symbol) == ("ethereum", "devnet", "USDT")
    assert stored.amount == 1_500_000  # USDT has 6 decimals on devnet ethereum
    assert (stored.from_address, stored.to_address, stored.idempotency_key) == (alice.address, OTHER_ADDRESS, "order-42")
    events = world.events(tx.transaction_id)
    assert [(e.from_stage, e.to_stage, e.reason) for e in events] == [(None, "RECEIVED", "created")]
    assert rows(world) == (1, 1)


def test_a_native_amount_uses_the_native_decimals(world: World, alice: Party) -> None:
    tx, _ = submit(world.db, world.registry, request(alice, token_symbol="ETH", amount="0.000000000000000001"))
    assert world.tx(tx.transaction_id).amount == 1


# -- idempotency -----------------------------------------------------------------------------------

def test_given_the_same_key_and_fields_when_resubmitted_then_the_same_transfer_comes_back(world: World, alice: Party) -> None:
    first, created_first = submit(world.db, world.registry, request(alice))
    # "1.50" is the same amount as "1.5": the fingerprint is over base units, not the text
    again, created_again = submit(world.db, world.registry, request(alice, amount="1.50"))
    assert (created_first, created_again) == (True, False)
    assert again.transaction_id == first.transaction_id
    assert rows(world) == (1, 1)


@pytest.mark.parametrize(
    "change",
    [{"amount": "2"}, {"to_address": "0x" + "cd" * 20}, {"token_symbol": "ETH"}, {"chain": "polygon"}],
    ids=["amount", "to_address", "token", "chain"],
)
def test_given_the_same_key_with_different_fields_when_resubmitted_then_idempotency_conflict(
    world: World, alice: Party, change: dict[str, str]
) -> None:
    first, _ = submit(world.db, world.registry, request(alice))
    with pytest.raises(IdempotencyConflict, match=first.transaction_id):
        submit(world.db, world.registry, request(alice, **change))
    assert rows(world) == (1, 1)


def test_the_same_key_under_two_clients_makes_two_transfers(world: World, alice: Party) -> None:
    bob = world.onboard(balances={"ETH": 1})
    a, _ = submit(world.db, world.registry, request(alice))
    b, created = submit(world.db, world.registry, request(bob, from_address=bob.address))
    assert created is True and a.transaction_id != b.transaction_id
    assert rows(world) == (2, 2)


# -- refusals: typed, and nothing written -----------------------------------------------------------

INVALID = [
    ("client id garbage", {"client_id": "nope"}, InvalidId),
    ("client id wrong prefix", {"client_id": "w_01JAAAAAAAAAAAAAAAAAAAAAAA"}, InvalidId),
    ("client id not a string", {"client_id": 42}, InvalidId),
    ("unknown chain", {"chain": "dogechain"}, UnknownChainError),
    ("chain not a string", {"chain": None}, UnknownChainError),
    ("symbol not on chain", {"token_symbol": "USDC"}, UnknownSymbol),
    ("symbol of another chain", {"token_symbol": "BNB"}, UnknownSymbol),
    ("exponent amount", {"amount": "1e3"}, InvalidAmount),
    ("float amount", {"amount": 1.5}, InvalidAmount),
    ("zero amount", {"amount": "0"}, InvalidAmount),
    ("negative amount", {"amount": "-1"}, InvalidAmount),
    ("too precise for 6-decimal USDT", {"amount": "0.0000001"}, InvalidAmount),
    ("empty key", {"idempotency_key": ""}, InvalidInput),
    ("key with a leading space", {"idempotency_key": " order-42"}, InvalidInput),
    ("key with a control character", {"idempotency_key": "order\n42"}, InvalidInput),
    ("key with non-ASCII", {"idempotency_key": "order-\u00e9"}, InvalidInput),
    ("key too long", {"idempotency_key": "k" * 129}, InvalidInput),
    ("key not a string", {"idempotency_key": None}, InvalidInput),
    ("empty from", {"from_address": ""}, InvalidInput),
    ("empty to", {"to_address": ""}, InvalidInput),
    ("to not a string", {"to_address": None}, InvalidInput),
    ("from not a string", {"from_address": 0x1234}, InvalidInput),
    ("to with a space", {"to_address": "0x12 34"}, InvalidInput),
    ("to too long", {"to_address": "a" * 257}, InvalidInput),
    ("unknown client", {"client_id": "cli_01JAAAAAAAAAAAAAAAAAAAAAAA"}, NotFound),
]


@pytest.mark.parametrize(("change", "error"), [(c, e) for _, c, e in INVALID], ids=[n for n, _, _ in INVALID])
def test_given_invalid_input_when_created_then_typed_error_and_nothing_written(
    world: World, alice: Party, change: dict[str, object], error: type[Exception]
) -> None:
    # The error is caught inside the unit of work, which then commits: the function itself must
    # have written nothing (not merely been rolled back by the caller).
    with world.db.unit_of_work() as s:
        with pytest.raises(error):
            create_transfer(s, world.registry, request(alice, **change))
    assert rows(world) == (0, 0)


def test_the_128_char_key_is_the_longest_accepted(world: World, alice: Party) -> None:
    tx, created = submit(world.db, world.registry, request(alice, idempotency_key="k" * 128))
    assert created


def test_an_accepted_from_address_fits_its_column(world: World, alice: Party) -> None:
    long_from = "T" * 200
    try:
        tx, _ = submit(world.db, world.registry, request(alice, from_address=long_from))
    except InvalidInput:
        return  # refusing it up front is also correct
    assert len(tx.from_address) <= Transaction.__table__.c.from_address.type.length


# -- reading back ----------------------------------------------------------------------------------

def test_get_transfer_is_scoped_to_its_client(world: World, alice: Party) -> None:
    bob = world.onboard()
    tx, _ = submit(world.db, world.registry, request(alice))
    with world.db.unit_of_work() as s:
        assert get_transfer(s, tx.transaction_id, alice.client_id).transaction_id == tx.transaction_id
        assert get_transfer(s, tx.transaction_id).transaction_id == tx.transaction_id
        with pytest.raises(NotFound):
            get_transfer(s, tx.transaction_id, bob.client_id)
        with pytest.raises(NotFound):
            get_transfer(s, "tx_01JAAAAAAAAAAAAAAAAAAAAAAA")
        with pytest.raises(InvalidId):
            get_transfer(s, "tx_nope")


@pytest.mark.parametrize(
    ("field", "error"),
    [("idempotency_key", InvalidInput), ("to_address", InvalidInput), ("from_address", InvalidInput), ("client_id", InvalidId)],
)
def test_given_a_field_with_a_trailing_newline_then_refused_and_nothing_written(
    world: World, alice: Party, field: str, error: type[Exception]
) -> None:
    value = getattr(request(alice), field) + "\n"
    with world.db.unit_of_work() as s:
        with pytest.raises(error):
            create_transfer(s, world.registry, request(alice, **{field: value}))
    assert rows(world) == (0, 0)
