"""Balance operations: lock, release, settle, credit. No overdraft, ever.

Callers run these inside one unit of work. Assets are loaded with `SELECT ... FOR UPDATE` in a
fixed order (by asset id) so two workers locking the same pair cannot deadlock; on SQLite the
whole transaction already holds the write lock (BEGIN IMMEDIATE). The check and the update happen
under that lock, so `balance - locked_balance >= amount` cannot be raced past.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.models import Asset, LedgerEntry


class Shortfall(Exception):
    """Not enough available balance on `asset_id` (a domain outcome, not a crash)."""

    def __init__(self, asset_id: str, needed: int, available: int) -> None:
        super().__init__(f"asset {asset_id} needs {needed} base units, {available} available")
        self.asset_id = asset_id
        self.needed = needed
        self.available = available


def _refuse_negative(amounts: Iterable[int]) -> None:
    if any(amount < 0 for amount in amounts):
        raise ValueError("ledger amounts are never negative")


def load_for_update(session: Session, asset_ids: Iterable[str]) -> dict[str, Asset]:
    """Lock the assets' rows in id order and return them by id."""
    ids = sorted(set(asset_ids))
    rows = session.scalars(select(Asset).where(Asset.asset_id.in_(ids)).order_by(Asset.asset_id).with_for_update()
                           .execution_options(populate_existing=True))
    assets = {asset.asset_id: asset for asset in rows}
    missing = set(ids) - set(assets)
    if missing:
        raise LookupError(f"assets not found: {sorted(missing)}")
    return assets


def lock(session: Session, amounts: Mapping[str, int]) -> None:
    """Lock every (asset_id -> amount) or none; raises Shortfall naming the first short asset."""
    _refuse_negative(amounts.values())
    assets = load_for_update(session, amounts)
    for asset_id in sorted(amounts):
        asset, amount = assets[asset_id], amounts[asset_id]
        if asset.available < amount:
            raise Shortfall(asset_id, amount, asset.available)
    for asset_id, amount in amounts.items():
        assets[asset_id].locked_balance += amount


def release(session: Session, amounts: Mapping[str, int]) -> None:
    """Give locked amounts back to available (a transfer failed before moving value)."""
    _refuse_negative(amounts.values())
    assets = load_for_update(session, amounts)
    for asset_id, amount in amounts.items():
        asset = assets[asset_id]
        if asset.locked_balance < amount:
            raise AssertionError(f"release of {amount} exceeds locked {asset.locked_balance} on {asset_id}")
        asset.locked_balance -= amount


def settle(
    session: Session,
    transaction_id: str,
    locked: Mapping[str, int],
    debits: Iterable[tuple[str, str, int]],
) -> None:
    """Release `locked` and debit `(asset_id, kind, amount)` entries, writing ledger rows.

    Used on confirmation (value + fee leave the account) and on a revert (only the fee leaves).
    """
    debit_list = list(debits)
    _refuse_negative([*locked.values(), *(amount for _, _, amount in debit_list)])
    assets = load_for_update(session, [*locked, *(asset_id for asset_id, _, _ in debit_list)])
    for asset_id, amount in locked.items():
        asset = assets[asset_id]
        if asset.locked_balance < amount:
            raise AssertionError(f"settle of {amount} exceeds locked {asset.locked_balance} on {asset_id}")
        asset.locked_balance -= amount
    for asset_id, kind, amount in debit_list:
        if amount == 0:
            continue
        assets[asset_id].balance -= amount
        session.add(LedgerEntry(asset_id=asset_id, transaction_id=transaction_id, kind=kind, amount=-amount))


def credit(session: Session, asset_id: str, amount: int, kind: str = "DEPOSIT", reference: str | None = None) -> None:
    """Add incoming value (a deposit seen on chain) to an asset's balance."""
    if amount <= 0:
        raise ValueError("credit amount must be positive")
    asset = load_for_update(session, [asset_id])[asset_id]
    asset.balance += amount
    session.add(LedgerEntry(asset_id=asset_id, kind=kind, amount=amount, reference=reference))
