"""Creating the resource hierarchy below a client: wallets, accounts and assets (clients and their
API credentials: pipeline.credentials).

Key generation and address derivation belong to the signer and the chain adapters; these
functions record their results. Asset configuration (type, contract, decimals) always comes from
the chain registry, never from the caller.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from chains.errors import UnknownChain, UnknownToken
from chains.registry import Registry
from pipeline.errors import InvalidInput, LimitExceeded, NotFound, UnknownChainError, UnknownSymbol
from pipeline.ids import check_id, new_id
from pipeline.models import Account, Asset, Client, Wallet

NAME_MAX_CHARS = 200  # the column width of clients.name and wallets.wallet_name


def check_name(kind: str, name: object) -> str:
    """The name with outer spaces removed; InvalidInput unless it is 1..NAME_MAX_CHARS printable
    characters (no newline, tab or other control character). The name is never echoed back."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"{kind} must be a non-empty string")
    name = name.strip()
    if len(name) > NAME_MAX_CHARS:
        raise InvalidInput(f"{kind} is {len(name)} characters long; at most {NAME_MAX_CHARS} are allowed")
    bad = next((i for i, char in enumerate(name) if not char.isprintable()), None)
    if bad is not None:
        raise InvalidInput(f"{kind} must be printable text: character {bad + 1} is a control or unprintable character")
    return name


def check_assets(registry: Registry, chains: dict[str, list[str]]) -> dict[str, list[str]]:
    """Every chain in the registry and every symbol configured on its chain, before anything is
    written; returns the assets keyed by the registry's chain names with symbols as configured."""
    checked: dict[str, list[str]] = {}
    for chain, symbols in chains.items():
        try:
            spec = registry.chain(chain)
        except UnknownChain as exc:
            raise UnknownChainError(str(exc)) from None
        if spec.name in checked:
            raise InvalidInput(f"chain {spec.name} is listed twice")
        found = []
        for symbol in symbols:
            try:
                found.append(spec.token(symbol).symbol)
            except UnknownToken as exc:
                raise UnknownSymbol(str(exc)) from None
        checked[spec.name] = list(dict.fromkeys(found))
    return checked


def check_wallet_capacity(session: Session, client_id: str, lock: bool = False) -> Client:
    """The client, if it may have one more wallet; raises InvalidId, NotFound or LimitExceeded."""
    check_id("client", client_id)
    client = session.get(Client, client_id, with_for_update=lock)
    if client is None:
        raise NotFound(f"client {client_id} not found")
    count = session.scalar(select(func.count()).select_from(Wallet).where(Wallet.client_id == client_id)) or 0
    if count >= client.max_wallets:
        raise LimitExceeded(f"client {client_id} already has {count} wallets (max_wallets={client.max_wallets})")
    return client


def create_wallet(session: Session, client_id: str, wallet_name: str, wallet_id: str | None = None) -> Wallet:
    """A wallet waiting for its key (PROGRESSING / GENERATING); raises InvalidInput, LimitExceeded.
    `wallet_id` lets the caller generate the wallet's keys before the wallet is written."""
    wallet_name = check_name("wallet name", wallet_name)
    if wallet_id is not None:
        check_id("wallet", wallet_id)
    check_wallet_capacity(session, client_id, lock=True)
    wallet = Wallet(wallet_id=wallet_id or new_id("wallet"), client_id=client_id, wallet_name=wallet_name,
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
