"""Resources as the API returns them, and as webhook events carry them in `data`.

One rendering for both, so a webhook's `data` is exactly what `GET` would have answered at the
moment of the change. Amounts are decimal strings in token units, timestamps ISO-8601 UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pipeline.amounts import format_amount
from pipeline.models import Account, Asset, Transaction, Wallet


def iso(moment: datetime | None) -> str | None:
    """Naive-UTC column value -> `2026-11-30T21:28:38.696Z`."""
    return None if moment is None else moment.isoformat(timespec="milliseconds") + "Z"


def transaction_view(tx: Transaction) -> dict[str, Any]:
    amount = format_amount(tx.amount, tx.decimals) if tx.decimals is not None else None
    return {
        "transaction_id": tx.transaction_id,
        "status": tx.status,
        "sub_status": tx.stage,
        "stuck_reason": tx.stuck_reason,
        "kind": tx.kind or "TRANSFER",
        "failure_reason": tx.failure_reason,
        "from_address": tx.from_address,
        "to_address": tx.to_address,
        "chain": tx.chain,
        "network": tx.network,
        "token_symbol": tx.token_symbol,
        "amount": amount,
        "tx_hash": tx.tx_hash,
        "confirmations": tx.confirmations or 0,
        "created_at": iso(tx.created_at),
        "updated_at": iso(max(tx.updated_at or tx.created_at, tx.stage_changed_at or tx.created_at)),
    }


def wallet_view(wallet: Wallet) -> dict[str, Any]:
    return {
        "wallet_id": wallet.wallet_id,
        "wallet_name": wallet.wallet_name,
        "status": wallet.status,
        "key_status": wallet.key_status,
        "failure_reason": wallet.failure_reason,
        "created_at": iso(wallet.created_at),
        "updated_at": iso(wallet.updated_at or wallet.created_at),
    }


def account_view(account: Account) -> dict[str, Any]:
    return {
        "account_id": account.account_id,
        "wallet_id": account.wallet_id,
        "chain": account.chain,
        "address": account.address,
        "network": account.network,
        "status": account.status,
        "created_at": iso(account.created_at),
    }


def asset_view(asset: Asset) -> dict[str, Any]:
    return {
        "asset_id": asset.asset_id,
        "account_id": asset.account_id,
        "chain": asset.chain,
        "symbol": asset.symbol,
        "asset_type": asset.asset_type,
        "contract_address": asset.contract_address,
        "decimals": asset.decimals,
        "balance": format_amount(asset.balance, asset.decimals),
        "locked_balance": format_amount(asset.locked_balance, asset.decimals),
    }
