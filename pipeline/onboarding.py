"""Creating the resource hierarchy: clients, wallets, accounts and assets.

Key generation and address derivation belong to the signer and the chain adapters; these
functions record their results. Asset configuration (type, contract, decimals) always comes from
the chain registry, never from the caller.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from chains.errors import UnknownChain, UnknownToken
from chains.registry import Registry
from pipeline.errors import InvalidInput, LimitExceeded, NotFound, UnknownChainError, UnknownSymbol
from pipeline.ids import check_id, new_id
from pipeline.models import Account, Asset, Client, Wallet

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_secret(secret: str, stored: str) -> bool:
    _, salt_hex, digest_hex = stored.split("$")
    digest = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt_hex), **_SCRYPT)
    return hmac.compare_digest(digest.hex(), digest_hex)


def create_client(session: Session, name: str, max_wallets: int = 100, webhook_url: str | None = None) -> tuple[Client, str]:
    """A new client and its API secret; the secret is returned once and only its hash is kept."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("client name must be a non-empty string")
    if not isinstance(max_wallets, int) or max_wallets < 1:
        raise InvalidInput("max_wallets must be a positive integer")
    secret = secrets.token_urlsafe(32)
    client = Client(client_id=new_id("client"), name=name.strip(), api_key_id="ak_" + secrets.token_hex(12),
                    api_secret_hash=hash_secret(secret), max_wallets=max_wallets, webhook_url=webhook_url)
    session.add(client)
    session.flush()
    return client, secret


def create_wallet(session: Session, client_id: str, wallet_name: str) -> Wallet:
    """A wallet waiting for its key (PROGRESSING / GENERATING); raises LimitExceeded."""
    check_id("client", client_id)
    client = session.get(Client, client_id, with_for_update=True)
    if client is None:
        raise NotFound(f"client {client_id} not found")
    count = session.scalar(select(func.count()).select_from(Wallet).where(Wallet.client_id == client_id)) or 0
    if count >= client.max_wallets:
        raise LimitExceeded(f"client {client_id} already has {count} wallets (max_wallets={client.max_wallets})")
    wallet = Wallet(wallet_id=new_id("wallet"), client_id=client_id, wallet_name=wallet_name,
                    status="PROGRESSING", key_status="GENERATING")
    session.add(wallet)
    session.flush()
    return wallet


def activate_wallet(session: Session, wallet_id: str) -> Wallet:
    """Key generation finished: the wallet can sign."""
    wallet = _wallet(session, wallet_id)
    wallet.key_status = "ACTIVE"
    wallet.status = "ACTIVE"
    return wallet


def create_account(session: Session, registry: Registry, wallet_id: str, chain: str, address: str) -> Account:
    """Record the wallet's address on `chain` (idempotent per wallet and chain)."""
    wallet = _wallet(session, wallet_id)
    try:
        spec = registry.chain(chain)
    except UnknownChain as exc:
        raise UnknownChainError(str(exc)) from None
    existing = session.scalar(select(Account).where(Account.wallet_id == wallet_id, Account.chain == spec.name))
    if existing is not None:
        if existing.address != address:
            raise InvalidInput(f"wallet {wallet_id} already has {existing.address} on {spec.name}, not {address}")
        return existing
    account = Account(account_id=new_id("account"), wallet_id=wallet_id, client_id=wallet.client_id,
                      chain=spec.name, network=spec.network, address=address, status="ACTIVE")
    session.add(account)
    session.flush()
    return account


def add_asset(session: Session, registry: Registry, account_id: str, symbol: str) -> Asset:
    """Add a token to an account, configured from the registry (idempotent per account and symbol)."""
    check_id("account", account_id)
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound(f"account {account_id} not found")
    try:
        token = registry.chain(account.chain).token(symbol)
    except UnknownToken as exc:
        raise UnknownSymbol(str(exc)) from None
    existing = session.scalar(select(Asset).where(Asset.account_id == account_id, Asset.symbol == token.symbol))
    if existing is not None:
        return existing
    asset = Asset(asset_id=new_id("asset"), account_id=account_id, client_id=account.client_id, chain=account.chain,
                  symbol=token.symbol, asset_type=token.asset_type, contract_address=token.contract,
                  decimals=token.decimals, balance=0, locked_balance=0)
    session.add(asset)
    session.flush()
    return asset


def _wallet(session: Session, wallet_id: str) -> Wallet:
    check_id("wallet", wallet_id)
    wallet = session.get(Wallet, wallet_id)
    if wallet is None:
        raise NotFound(f"wallet {wallet_id} not found")
    return wallet
