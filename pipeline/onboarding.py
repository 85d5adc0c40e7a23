"""Creating the resource hierarchy below a client: wallets, accounts and assets (clients and their
API credentials: pipeline.credentials).

Key generation and address derivation belong to the signer and the chain adapters; these
functions record their results. Asset configuration (type, contract, decimals) always comes from
the chain registry, never from the caller.

A wallet's key lifecycle, as rows (the workers run the generation itself):

    create_wallet        PROGRESSING/GENERATING, key_due_at = when its message must have run
    claim_key_run        a run starts: key_attempts + 1 (the run's fencing token), key_due_at = lease
    activate_wallet      ACTIVE/ACTIVE          (compare-and-set on GENERATING)
    schedule_key_retry   still GENERATING, key_due_at = backoff (only the current run may)
    fail_wallet          FAILED/FAILED + reason (compare-and-set on GENERATING; no longer counted)
    due_key_generations  the relay: GENERATING wallets whose key_due_at passed get a message again

Every status change writes its webhook event (`pipeline.events.wallet_changed`) in the same
transaction. `key_attempts` is also the token a key generation message carries: a copy of a
message whose run already started (a duplicate, or one the relay sent while the first was slow)
finds the token moved and does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from chains.registry import Registry
from pipeline.errors import InvalidInput, LimitExceeded, NotFound
from pipeline.events import wallet_changed
from pipeline.ids import check_id, new_id
from pipeline.lookup import chain_spec, token_spec
from pipeline.models import Account, Asset, Client, Wallet, utcnow

NAME_MAX_CHARS = 200  # the column width of clients.name and wallets.wallet_name
PROGRESSING, GENERATING, ACTIVE, FAILED = "PROGRESSING", "GENERATING", "ACTIVE", "FAILED"


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
        spec = chain_spec(registry, chain)
        if spec.name in checked:
            raise InvalidInput(f"chain {spec.name} is listed twice")
        found = [token_spec(registry, spec.name, symbol)[1].symbol for symbol in symbols]
        checked[spec.name] = list(dict.fromkeys(found))
    return checked


def check_wallet_capacity(session: Session, client_id: str, lock: bool = False) -> Client:
    """The client, if it may have one more wallet; raises InvalidId, NotFound or LimitExceeded.

    PROGRESSING and ACTIVE wallets count against `max_wallets`; FAILED ones do not (a failed key
    generation must not use up the client's allowance). `lock` holds the client row until the
    commit, so two concurrent requests cannot both take the last free place."""
    check_id("client", client_id)
    client = session.get(Client, client_id, with_for_update=lock)
    if client is None:
        raise NotFound(f"client {client_id} not found")
    count = session.scalar(select(func.count()).select_from(Wallet)
                           .where(Wallet.client_id == client_id, Wallet.status != FAILED)) or 0
    if count >= client.max_wallets:
        raise LimitExceeded(f"client {client_id} already has {count} wallets (max_wallets={client.max_wallets})")
    return client


def create_wallet(session: Session, client_id: str, wallet_name: str, wallet_id: str | None = None,
                  key_due_at: datetime | None = None) -> Wallet:
    """A wallet waiting for its key (PROGRESSING / GENERATING) with its `wallet.progressing` event;
    raises InvalidInput, LimitExceeded, NotFound. `wallet_id` lets the caller generate the wallet's
    keys before the wallet is written; `key_due_at` is when the relay publishes its key generation
    message (again) if no run has taken it by then."""
    wallet_name = check_name("wallet name", wallet_name)
    if wallet_id is not None:
        check_id("wallet", wallet_id)
    check_wallet_capacity(session, client_id, lock=True)
    wallet = Wallet(wallet_id=wallet_id or new_id("wallet"), client_id=client_id, wallet_name=wallet_name,
                    status=PROGRESSING, key_status=GENERATING, key_attempts=0, key_due_at=key_due_at, event_seq=0)
    session.add(wallet)
    session.flush()
    wallet_changed(session, wallet)
    return wallet


def activate_wallet(session: Session, wallet_id: str) -> bool:
    """Key generation finished: the wallet can sign. Compare-and-set: only a wallet still
    GENERATING becomes ACTIVE (with its `wallet.active` event); False if it already was ACTIVE or
    FAILED (a second run of the generation, or one that lost the race), and nothing is written."""
    wallet = _locked_wallet(session, wallet_id)
    if not _generating(wallet):
        return False
    wallet.status = wallet.key_status = ACTIVE
    wallet.key_due_at = None
    wallet_changed(session, wallet)
    return True


def fail_wallet(session: Session, wallet_id: str, reason: str, detail: str, *, holder: int | None = None) -> bool:
    """Key generation gave up: FAILED / FAILED with a short `reason` code and a `detail` (which
    must carry no secret), and its `wallet.failed` event. Compare-and-set on GENERATING, and with
    `holder` also on the run's token (`key_attempts`): a run that was superseded by a newer one
    does not fail the wallet under it. Returns whether the wallet changed."""
    wallet = _locked_wallet(session, wallet_id)
    if not _generating(wallet) or (holder is not None and wallet.key_attempts != holder):
        return False
    wallet.status = wallet.key_status = FAILED
    wallet.failure_reason = reason[:64]
    wallet.failure_detail = detail[:1000]
    wallet.key_due_at = None
    wallet_changed(session, wallet)
    return True


@dataclass(frozen=True)
class KeyRun:
    """A key generation run that may proceed: it holds token `attempt` (the wallet's key_attempts)."""

    wallet_id: str
    attempt: int


def claim_key_run(session: Session, wallet_id: str, token: int | None, lease_s: float) -> KeyRun | None:
    """Start a key generation run for a message carrying `token` (the key_attempts it was published
    with; None: whatever is current). None if the wallet is no longer GENERATING or the token moved
    (a duplicate message, or a copy from the relay while the first was merely slow). The claim bumps
    key_attempts (the new run's token) and sets key_due_at to the end of its lease, so the relay
    sends the message again only if this run dies."""
    wallet = _locked_wallet(session, wallet_id)
    if not _generating(wallet) or (token is not None and wallet.key_attempts != token):
        return None
    wallet.key_attempts += 1
    wallet.key_due_at = utcnow() + timedelta(seconds=lease_s)
    return KeyRun(wallet.wallet_id, wallet.key_attempts)


def schedule_key_retry(session: Session, run: KeyRun, delay_s: float) -> bool:
    """A run hit a transient error: the relay publishes the next run after `delay_s`. Only the
    wallet's current run may (False, nothing written, for a superseded one or a finished wallet)."""
    wallet = _locked_wallet(session, run.wallet_id)
    if not _generating(wallet) or wallet.key_attempts != run.attempt:
        return False
    wallet.key_due_at = utcnow() + timedelta(seconds=delay_s)
    return True


def mark_key_due_now(session: Session, wallet_id: str) -> None:
    """The key generation message could not be published: the relay sends it on its next round."""
    wallet = _locked_wallet(session, wallet_id)
    if _generating(wallet):
        wallet.key_due_at = utcnow()


def due_key_generations(session: Session, grace_s: float, limit: int = 200) -> list[KeyRun]:
    """GENERATING wallets whose key generation message should have run by now (its key_due_at
    passed; none set counts as due): each is due again `grace_s` later, and returned with the token
    to publish. Rows another relay holds are skipped (PostgreSQL; SQLite serialises writers)."""
    now = utcnow()
    rows = session.scalars(
        select(Wallet)
        .where(Wallet.status == PROGRESSING, Wallet.key_status == GENERATING,
               or_(Wallet.key_due_at.is_(None), Wallet.key_due_at <= now))
        .order_by(Wallet.key_due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for wallet in rows:
        wallet.key_due_at = now + timedelta(seconds=grace_s)
    return [KeyRun(wallet.wallet_id, wallet.key_attempts) for wallet in rows]


def create_account(session: Session, registry: Registry, wallet_id: str, chain: str, address: str) -> Account:
    """Record the wallet's address on `chain` (idempotent per wallet and chain)."""
    wallet = _wallet(session, wallet_id)
    spec = chain_spec(registry, chain)
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
    token = token_spec(registry, account.chain, symbol)[1]
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


def _locked_wallet(session: Session, wallet_id: str) -> Wallet:
    """The wallet's row locked until the commit, its columns re-read (not the identity map's copy
    from before the lock), so compare-and-set decisions see the committed state."""
    check_id("wallet", wallet_id)
    wallet = session.scalars(select(Wallet).where(Wallet.wallet_id == wallet_id)
                             .with_for_update().execution_options(populate_existing=True)).one_or_none()
    if wallet is None:
        raise NotFound(f"wallet {wallet_id} not found")
    return wallet


def _generating(wallet: Wallet) -> bool:
    return wallet.status == PROGRESSING and wallet.key_status == GENERATING
