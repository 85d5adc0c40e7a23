"""Onboarding records the hierarchy; stage changes always come with their event row."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from chains.registry import Registry
from pipeline import credentials, onboarding
from pipeline.db import Database, get_database
from pipeline.errors import InvalidId, InvalidInput, InvalidTransition, LimitExceeded, NotFound, UnknownChainError, UnknownSymbol
from pipeline.lifecycle import advance, is_final, record_note
from pipeline.models import Client, Transaction, TransactionEvent
from pipeline.sealing import SealedSecretMismatch, SecretBox, new_secrets_key
from pipeline.stages import Stage
from tests.unit.fakes import World

ADDRESS = "0x" + "22" * 20


BOX = SecretBox(new_secrets_key())


def test_given_a_new_client_then_its_secret_is_kept_only_sealed(db: Database) -> None:
    with db.unit_of_work() as s:
        client, secret = credentials.create_client(s, BOX, "  Acme  ", max_wallets=3)
        client_id = client.client_id
    with db.unit_of_work() as s:
        stored = s.get(Client, client_id)
        assert stored.name == "Acme" and stored.client_id.startswith("cli_")
        assert secret.encode() not in stored.api_secret_sealed and stored.api_secret_hash is None
        assert credentials.api_secret(BOX, stored) == secret
        with pytest.raises(SealedSecretMismatch):
            credentials.api_secret(SecretBox(new_secrets_key()), stored)
        moved = Client(client_id="cli_01JAAAAAAAAAAAAAAAAAAAAAAA", api_secret_sealed=stored.api_secret_sealed)
        with pytest.raises(SealedSecretMismatch):  # sealed for its own client only
            credentials.api_secret(BOX, moved)


def test_a_rotated_secret_replaces_the_old_one(db: Database) -> None:
    with db.unit_of_work() as s:
        client, old = credentials.create_client(s, BOX, "Acme")
        _, new = credentials.rotate_secret(s, BOX, client.client_id)
        assert new != old and credentials.api_secret(BOX, client) == new
        assert credentials.client_by_key(s, client.api_key_id) is client


@pytest.mark.parametrize(("name", "max_wallets"), [("", 1), ("   ", 1), (None, 1), ("ok", 0), ("ok", "5")])
def test_invalid_client_fields_are_refused(db: Database, name: object, max_wallets: object) -> None:
    with pytest.raises(InvalidInput), db.unit_of_work() as s:
        credentials.create_client(s, BOX, name, max_wallets=max_wallets)  # type: ignore[arg-type]


def test_given_max_wallets_reached_then_limit_exceeded(db: Database) -> None:
    with db.unit_of_work() as s:
        client, _ = credentials.create_client(s, BOX, "Small", max_wallets=2)
        onboarding.create_wallet(s, client.client_id, "a")
        onboarding.create_wallet(s, client.client_id, "b")
        with pytest.raises(LimitExceeded):
            onboarding.create_wallet(s, client.client_id, "c")


def test_a_new_wallet_waits_for_its_key_until_activated(db: Database) -> None:
    with db.unit_of_work() as s:
        client, _ = credentials.create_client(s, BOX, "C")
        wallet = onboarding.create_wallet(s, client.client_id, "w")
        assert (wallet.status, wallet.key_status) == ("PROGRESSING", "GENERATING")
        onboarding.activate_wallet(s, wallet.wallet_id)
        assert (wallet.status, wallet.key_status) == ("ACTIVE", "ACTIVE")


def test_unknown_or_malformed_ids_are_typed_errors(db: Database, registry: Registry) -> None:
    with db.unit_of_work() as s:
        with pytest.raises(NotFound):
            onboarding.create_wallet(s, "cli_01JAAAAAAAAAAAAAAAAAAAAAAA", "w")
        with pytest.raises(InvalidId):
            onboarding.create_wallet(s, "cli_bad", "w")
        with pytest.raises(NotFound):
            onboarding.activate_wallet(s, "w_01JAAAAAAAAAAAAAAAAAAAAAAA")
        with pytest.raises(NotFound):
            onboarding.add_asset(s, registry, "acc_01JAAAAAAAAAAAAAAAAAAAAAAA", "ETH")


def test_accounts_and_assets_are_idempotent_and_configured_from_the_registry(db: Database, registry: Registry) -> None:
    with db.unit_of_work() as s:
        client, _ = credentials.create_client(s, BOX, "C")
        wallet = onboarding.create_wallet(s, client.client_id, "w")
        account = onboarding.create_account(s, registry, wallet.wallet_id, "ethereum", ADDRESS)
        assert onboarding.create_account(s, registry, wallet.wallet_id, "ethereum", ADDRESS).account_id == account.account_id
        assert (account.network, account.client_id) == ("devnet", client.client_id)
        usdt = onboarding.add_asset(s, registry, account.account_id, "USDT")
        assert onboarding.add_asset(s, registry, account.account_id, "USDT").asset_id == usdt.asset_id
        assert (usdt.asset_type, usdt.decimals, usdt.contract_address) == ("ERC20", 6, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
        eth = onboarding.add_asset(s, registry, account.account_id, "ETH")
        assert (eth.asset_type, eth.decimals, eth.contract_address, eth.balance, eth.locked_balance) == ("NATIVE", 18, None, 0, 0)
        with pytest.raises(UnknownSymbol):
            onboarding.add_asset(s, registry, account.account_id, "BNB")
        with pytest.raises(UnknownChainError):
            onboarding.create_account(s, registry, wallet.wallet_id, "dogechain", ADDRESS)
        # A second, different address for the same wallet and chain is refused, not silently ignored
        with pytest.raises(InvalidInput):
            onboarding.create_account(s, registry, wallet.wallet_id, "ethereum", "0x" + "ab" * 20)


def test_get_database_gives_one_database_per_process_and_url(db_url: str) -> None:
    first, again = get_database(db_url), get_database(db_url)
    assert first is again and first.dialect == "sqlite"


# -- lifecycle -------------------------------------------------------------------------------------

def test_advance_writes_the_stage_status_and_one_event_together(world: World) -> None:
    alice = world.onboard(balances={"ETH": 10**18})
    tx_id = world.transfer(alice, "0.1")
    with world.db.unit_of_work() as s:
        tx = s.get(Transaction, tx_id)
        tx.last_error = "earlier trouble"
        advance(s, tx, Stage.FAILED, reason="test", detail="why")
        assert (tx.stage, tx.status, tx.last_error) == ("FAILED", "FAILED", None)
        assert tx.finalized_at is not None and is_final(tx)
    events = world.events(tx_id)
    assert [(e.from_stage, e.to_stage, e.reason, e.detail) for e in events][-1] == ("RECEIVED", "FAILED", "test", "why")


def test_an_illegal_advance_raises_and_writes_no_event(world: World) -> None:
    alice = world.onboard(balances={"ETH": 10**18})
    tx_id = world.transfer(alice, "0.1")
    with world.db.unit_of_work() as s:
        tx = s.get(Transaction, tx_id)
        with pytest.raises(InvalidTransition):
            advance(s, tx, Stage.SIGNED)
        record_note(s, tx, "looked at")
    assert world.tx(tx_id).stage == "RECEIVED"
    with world.db.unit_of_work() as s:
        rows = s.scalars(select(TransactionEvent).where(TransactionEvent.transaction_id == tx_id)).all()
        assert [(e.from_stage, e.to_stage, e.reason) for e in rows] == [(None, "RECEIVED", "created"),
                                                                        ("RECEIVED", "RECEIVED", "looked at")]


def test_an_id_with_a_trailing_newline_is_malformed() -> None:
    from pipeline.ids import check_id, new_id

    with pytest.raises(InvalidId):
        check_id("wallet", new_id("wallet") + "\n")


# -- names and onboarding checks -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a" * 201, "line\nbreak", "tab\there", "bell\x07", "nul\x00", "esc\x1b[31m", "rtl\u202e"],
                         ids=["too long", "newline", "tab", "bell", "nul", "ansi escape", "bidi override"])
def test_a_client_or_wallet_name_must_be_printable_and_at_most_200_chars(db: Database, name: str) -> None:
    with db.unit_of_work() as s:
        with pytest.raises(InvalidInput) as info:
            credentials.create_client(s, BOX, name)
        assert "\n" not in str(info.value) and name not in str(info.value)  # one line, the name not echoed
        client, _ = credentials.create_client(s, BOX, "Fine Name  ")
        assert client.name == "Fine Name"
        with pytest.raises(InvalidInput):
            onboarding.create_wallet(s, client.client_id, name)
    assert onboarding.check_name("wallet name", "  ok ünïcode €  ") == "ok ünïcode €"
    assert onboarding.check_name("wallet name", "x" * 200) == "x" * 200


def test_max_wallets_must_be_a_real_positive_integer(db: Database) -> None:
    with pytest.raises(InvalidInput), db.unit_of_work() as s:
        credentials.create_client(s, BOX, "C", max_wallets=True)  # type: ignore[arg-type]


def _onboard(world: World, client_id: str, chains: dict[str, list[str]], name: str = "hot") -> object:
    from workers.services import onboard_wallet

    return onboard_wallet(world.ctx(), client_id, name, chains)


def _client(world: World, max_wallets: int = 1) -> str:
    with world.db.unit_of_work() as s:
        return credentials.create_client(s, BOX, "C", max_wallets=max_wallets)[0].client_id


@pytest.mark.parametrize(("chains", "name", "error"), [
    ({"ethereum": ["ETH"], "dogechain": ["DOGE"]}, "hot", UnknownChainError),
    ({"ethereum": ["ETH", "NOPE"]}, "hot", UnknownSymbol),
    ({"ethereum": ["ETH"]}, "bad\nname", InvalidInput),
], ids=["unknown chain", "unknown symbol", "bad name"])
def test_given_a_bad_asset_or_name_then_onboarding_writes_nothing(world: World, chains: dict[str, list[str]], name: str,
                                                                  error: type[Exception]) -> None:
    from pipeline.models import Wallet

    client_id = _client(world)
    with pytest.raises(error):
        _onboard(world, client_id, chains, name)
    assert world.count(Wallet) == 0
    _onboard(world, client_id, {"ethereum": ["ETH", "USDT"]})  # the one wallet allowed is still free
    assert world.count(Wallet) == 1


def test_given_a_key_generation_failure_then_no_wallet_counts_against_the_limit(world: World) -> None:
    from pipeline.models import Account, Wallet
    from signer.base import SignerUnavailable

    client_id = _client(world)

    class Broken:
        def create_key(self, ref: object) -> object:
            raise SignerUnavailable("signer store busy")

    from workers.services import onboard_wallet

    with pytest.raises(SignerUnavailable):
        onboard_wallet(world.ctx(signer=Broken()), client_id, "hot", {"ethereum": ["ETH"]})
    assert (world.count(Wallet), world.count(Account)) == (0, 0)
    wallet = _onboard(world, client_id, {"ethereum": ["ETH"], "bsc": ["BNB"]})
    with world.db.unit_of_work() as s:
        stored = s.get(Wallet, wallet.wallet_id)  # type: ignore[attr-defined]
        assert (stored.status, stored.key_status) == ("ACTIVE", "ACTIVE")
    with pytest.raises(LimitExceeded):
        _onboard(world, client_id, {"ethereum": ["ETH"]})
    assert world.count(Wallet) == 1
