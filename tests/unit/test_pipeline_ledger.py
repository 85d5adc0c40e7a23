"""The ledger on a real SQLite file built by the Alembic migrations: lock, release, settle, credit.

No overdraft, ever: a Shortfall changes nothing, and many concurrent units of work locking the same
asset can never lock more than its balance.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import StatementError

from chains.registry import Registry
from pipeline import credentials, ledger, onboarding
from pipeline.sealing import SecretBox, new_secrets_key
from pipeline.db import Database, make_engine
from pipeline.migrate import upgrade
from pipeline.models import Asset, Base, LedgerEntry

ADDRESS = "0x" + "11" * 20


def seed_assets(db: Database, registry: Registry, balances: dict[str, int]) -> dict[str, str]:
    """One client/wallet/account on ethereum with the given assets credited; symbol -> asset id."""
    with db.unit_of_work() as s:
        client, _ = credentials.create_client(s, SecretBox(new_secrets_key()), "Ledger Co")
        wallet = onboarding.create_wallet(s, client.client_id, "w")
        account = onboarding.create_account(s, registry, wallet.wallet_id, "ethereum", ADDRESS)
        ids = {}
        for symbol, amount in balances.items():
            ids[symbol] = onboarding.add_asset(s, registry, account.account_id, symbol).asset_id
            if amount:
                ledger.credit(s, ids[symbol], amount)
    return ids


def read(db: Database, asset_id: str) -> tuple[int, int]:
    with db.unit_of_work() as s:
        asset = s.get(Asset, asset_id)
        return asset.balance, asset.locked_balance


def entries(db: Database, asset_id: str) -> list[tuple[str, int, str | None]]:
    with db.unit_of_work() as s:
        rows = s.scalars(select(LedgerEntry).where(LedgerEntry.asset_id == asset_id).order_by(LedgerEntry.id))
        return [(r.kind, r.amount, r.transaction_id) for r in rows]


# -- migrations ---------------------------------------------------------------------------------

def test_given_an_empty_file_when_migrated_twice_then_the_schema_matches_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(url)
    upgrade(url)  # idempotent
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert set(Base.metadata.tables) <= set(inspect(conn).get_table_names())
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0005"
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
    finally:
        engine.dispose()


# -- credit ----------------------------------------------------------------------------------------

def test_given_an_asset_when_credited_then_balance_grows_and_a_deposit_entry_is_written(db: Database, registry: Registry) -> None:
    ids = seed_assets(db, registry, {"ETH": 0})
    with db.unit_of_work() as s:
        ledger.credit(s, ids["ETH"], 5, reference="0xdeposit")
        ledger.credit(s, ids["ETH"], 7)
    assert read(db, ids["ETH"]) == (12, 0)
    assert entries(db, ids["ETH"]) == [("DEPOSIT", 5, None), ("DEPOSIT", 7, None)]


@pytest.mark.parametrize("amount", [0, -1])
def test_given_a_non_positive_credit_then_value_error_and_nothing_changes(db: Database, registry: Registry, amount: int) -> None:
    ids = seed_assets(db, registry, {"ETH": 10})
    with pytest.raises(ValueError), db.unit_of_work() as s:
        ledger.credit(s, ids["ETH"], amount)
    assert read(db, ids["ETH"]) == (10, 0)


def test_given_an_unknown_asset_id_when_credited_then_lookup_error(db: Database) -> None:
    with pytest.raises(LookupError), db.unit_of_work() as s:
        ledger.credit(s, "ast_01JAAAAAAAAAAAAAAAAAAAAAAA", 1)


# -- lock / release --------------------------------------------------------------------------------

def test_given_enough_available_when_locked_then_locked_grows_and_balance_does_not(db: Database, registry: Registry) -> None:
    ids = seed_assets(db, registry, {"ETH": 100, "USDT": 50})
    with db.unit_of_work() as s:
        ledger.lock(s, {ids["ETH"]: 30, ids["USDT"]: 50})  # exactly all USDT is fine
    assert read(db, ids["ETH"]) == (100, 30)
    assert read(db, ids["USDT"]) == (50, 50)
    with db.unit_of_work() as s:
        assert s.get(Asset, ids["ETH"]).available == 70


def test_given_a_shortfall_on_one_asset_when_locking_two_then_nothing_is_locked(db: Database, registry: Registry) -> None:
    ids = seed_assets(db, registry, {"ETH": 100, "USDT": 10})
    with db.unit_of_work() as s:
        ledger.lock(s, {ids["USDT"]: 4})
    with pytest.raises(ledger.Shortfall) as info, db.unit_of_work() as s:
        ledger.lock(s, {ids["ETH"]: 1, ids["USDT"]: 7})
    assert (info.value.asset_id, info.value.needed, info.value.available) == (ids["USDT"], 7, 6)
    assert read(db, ids["ETH"]) == (100, 0)
    assert read(db, ids["USDT"]) == (10, 4)


def test_given_a_shortfall_caught_inside_the_unit_of_work_then_no_partial_lock_is_committed(
    db: Database, registry: Registry
) -> None:
    # The step code catches Shortfall and commits a FAILED stage in the same transaction: the lock
    # must have changed nothing before raising, or the commit would keep a partial lock.
    ids = seed_assets(db, registry, {"ETH": 100, "USDT": 10})
    with db.unit_of_work() as s:
        with pytest.raises(ledger.Shortfall):
            ledger.lock(s, {ids["ETH"]: 1, ids["USDT"]: 11})
    assert read(db, ids["ETH"]) == (100, 0)
    assert read(db, ids["USDT"]) == (10, 0)


def test_a_negative_lock_is_refused(db: Database, registry: Registry) -> None:
    ids = seed_assets(db, registry, {"ETH": 100})
    with db.unit_of_work() as s:
        with pytest.raises(ValueError):
            ledger.lock(s, {ids["ETH"]: -1})
    assert read(db, ids["ETH"]) == (100, 0)


def test_given_locked_funds_when_released_then_available_again(db: Database, registry: Registry) -> None:
    ids = seed_assets(db, registry, {"ETH": 100})
    with db.unit_of_work() as s:
        ledger.lock(s, {ids["ETH"]: 60})
    with db.unit_of_work() as s:
        ledger.release(s, {ids["ETH"]: 25})
    assert read(db, ids["ETH"]) == (100, 35)
    assert entries(db, ids["ETH"]) == [("DEPOSIT", 100, None)]  # locks are not balance changes


def test_releasing_more_than_is_locked_is_refused_and_changes_nothing(db: Database, registry: Registry) -> None:
    ids = seed_assets(db, registry, {"ETH": 100})
    with db.unit_of_work() as s:
        ledger.lock(s, {ids["ETH"]: 10})
    with pytest.raises(AssertionError), db.unit_of_work() as s:
        ledger.release(s, {ids["ETH"]: 11})
    assert read(db, ids["ETH"]) == (100, 10)


def test_a_negative_release_is_refused(db: Database, registry: Registry) -> None:
    ids = seed_assets(db, registry, {"ETH": 100})
    with db.unit_of_work() as s:
        with pytest.raises(ValueError):
            ledger.release(s, {ids["ETH"]: -5})
    assert read(db, ids["ETH"]) == (100, 0)


# -- settle ----------------------------------------------------------------------------------------

def test_given_a_confirmed_transfer_when_settled_then_locks_go_and_value_plus_fee_are_debited(
    db: Database, registry: Registry
) -> None:
    ids = seed_assets(db, registry, {"ETH": 1_000, "USDT": 500})
    with db.unit_of_work() as s:
        ledger.lock(s, {ids["USDT"]: 200, ids["ETH"]: 30})
    with db.unit_of_work() as s:
        ledger.settle(s, "tx_X", {ids["USDT"]: 200, ids["ETH"]: 30},
                      [(ids["USDT"], "DEBIT", 200), (ids["ETH"], "FEE", 21), (ids["ETH"], "FEE", 0)])
    assert read(db, ids["USDT"]) == (300, 0)
    assert read(db, ids["ETH"]) == (979, 0)  # only the fee actually paid leaves, not the reserve
    assert entries(db, ids["USDT"])[-1] == ("DEBIT", -200, "tx_X")
    assert entries(db, ids["ETH"])[1:] == [("FEE", -21, "tx_X")]  # a zero debit writes no row


def test_settling_more_than_is_locked_is_refused_and_changes_nothing(db: Database, registry: Registry) -> None:
    ids = seed_assets(db, registry, {"ETH": 100})
    with db.unit_of_work() as s:
        ledger.lock(s, {ids["ETH"]: 10})
    with pytest.raises(AssertionError), db.unit_of_work() as s:
        ledger.settle(s, "tx_X", {ids["ETH"]: 11}, [(ids["ETH"], "DEBIT", 11)])
    assert read(db, ids["ETH"]) == (100, 10)
    assert entries(db, ids["ETH"]) == [("DEPOSIT", 100, None)]


# -- BaseUnits: exact integers up to uint256, never floats ------------------------------------------

@pytest.mark.parametrize("amount", [2**63 - 1, 2**63, 2**64 + 1, 10**30 + 7, 2**255 + 3, 2**256 - 1])
def test_given_a_huge_balance_when_stored_and_reloaded_then_it_is_exact(
    db: Database, registry: Registry, amount: int
) -> None:
    ids = seed_assets(db, registry, {"ETH": 0})
    with db.unit_of_work() as s:
        ledger.credit(s, ids["ETH"], amount)
    with db.unit_of_work() as s:
        ledger.lock(s, {ids["ETH"]: amount - 1})
    fresh = Database(db.url)  # a new engine: nothing cached in any identity map
    try:
        balance, locked = read(fresh, ids["ETH"])
        assert (balance, locked) == (amount, amount - 1)
        assert type(balance) is int
        with fresh.engine.connect() as conn:  # stored as exact decimal text on SQLite
            raw = conn.execute(text("SELECT balance FROM assets WHERE asset_id = :a"), {"a": ids["ETH"]}).scalar()
        assert raw == str(amount)
    finally:
        fresh.dispose()


@pytest.mark.parametrize("bad", [1.5, 99.0, 1e30, True, "100", None])
def test_given_a_non_integer_amount_when_flushed_then_the_column_type_refuses_it(
    db: Database, registry: Registry, bad: object
) -> None:
    ids = seed_assets(db, registry, {"ETH": 100})
    with pytest.raises((StatementError, TypeError)) as info, db.unit_of_work() as s:
        s.get(Asset, ids["ETH"]).balance = bad  # type: ignore[assignment]
        s.flush()
    if bad is not None:  # None is refused by NOT NULL instead
        assert "integers in base units" in str(info.value)
    assert read(db, ids["ETH"]) == (100, 0)


# -- concurrency -----------------------------------------------------------------------------------

def test_given_many_workers_locking_one_unit_each_then_exactly_the_balance_is_locked(
    db_url: str, db: Database, registry: Registry
) -> None:
    # Given an asset with balance 100, and 16 workers (each its own engine, like separate
    # processes) each trying 25 locks of 1 unit in separate units of work
    asset_id = seed_assets(db, registry, {"ETH": 100})["ETH"]
    successes: list[int] = []
    shortfalls: list[int] = []
    errors: list[BaseException] = []
    overdrawn: list[tuple[int, int]] = []
    start = threading.Barrier(16)

    def worker() -> None:
        database = Database(db_url)
        try:
            start.wait()
            for _ in range(25):
                try:
                    with database.unit_of_work() as s:
                        ledger.lock(s, {asset_id: 1})
                        asset = s.get(Asset, asset_id)
                        if asset.locked_balance > asset.balance:
                            overdrawn.append((asset.balance, asset.locked_balance))
                    successes.append(1)
                except ledger.Shortfall:
                    shortfalls.append(1)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            database.dispose()

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    # Then exactly 100 locks succeeded, the rest hit Shortfall, and nothing ever overdrew
    assert errors == []
    assert (len(successes), len(shortfalls)) == (100, 300)
    assert overdrawn == []
    assert read(db, asset_id) == (100, 100)


def _insert(conn: Any, table: str, **values: Any) -> None:
    """A row in a table of an older schema: given values, and a filler for every other NOT NULL
    column without a server default (the ORM models describe the newest schema only)."""
    columns = inspect(conn).get_columns(table)
    row = dict(values)
    for column in columns:
        if column["name"] in row or column["nullable"] or column.get("default") is not None:
            continue
        python_type = column["type"].python_type
        row[column["name"]] = {int: 0, str: "x", bytes: b"x"}.get(python_type, datetime(2026, 1, 1))
    names = ", ".join(row)
    conn.execute(text(f"INSERT INTO {table} ({names}) VALUES ({', '.join(':' + n for n in row)})"), row)


def test_given_rows_at_0002_when_upgraded_then_every_row_survives_and_amounts_get_their_decimals(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0002")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _insert(conn, "clients", client_id="cli_1", api_key_id="ak_1", api_secret_hash="scrypt$aa$bb")
            _insert(conn, "wallets", wallet_id="w_1", client_id="cli_1", status="ACTIVE", key_status="ACTIVE")
            _insert(conn, "accounts", account_id="acc_1", wallet_id="w_1", client_id="cli_1", chain="ethereum",
                    address="0xabc")
            _insert(conn, "assets", asset_id="ast_1", account_id="acc_1", client_id="cli_1", chain="ethereum",
                    symbol="USDT", decimals=6, balance="0", locked_balance="0")
            _insert(conn, "transactions", transaction_id="tx_1", client_id="cli_1", idempotency_key="k1",
                    asset_id="ast_1", amount="1500000", stage="FUNDS_LOCKED")
            _insert(conn, "transactions", transaction_id="tx_2", client_id="cli_1", idempotency_key="k2",
                    amount="1", stage="RECEIVED")
    finally:
        engine.dispose()
    upgrade(url)  # rebuilds `clients` (a column made nullable), which wallets and accounts reference
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0005"
            assert conn.execute(text("SELECT count(*) FROM wallets")).scalar() == 1
            assert conn.execute(text("SELECT api_secret_hash, webhook_events FROM clients")).one() == ("scrypt$aa$bb", "[]")
            decimals = dict(conn.execute(text("SELECT transaction_id, decimals FROM transactions")).all())
            assert decimals == {"tx_1": 6, "tx_2": None}  # tx_2 gets them from the registry in resolve_source
            assert conn.execute(text("PRAGMA foreign_key_check")).fetchall() == []
    finally:
        engine.dispose()
