"""Operations the CLI and the demo share: onboarding a wallet, submitting, inspecting, replaying.

Each function opens its own unit of work and enqueues only after the commit, so a transfer is in
the database before any message about it exists.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from pipeline import attempts, onboarding
from pipeline.amounts import format_amount
from pipeline.ids import new_id
from pipeline.models import Account, Asset, Transaction, TransactionEvent
from pipeline.driving import Dispatch, load_tx
from pipeline.recovery import claim_for_replay
from pipeline.stages import STEPS, Stage
from pipeline.steps import StepContext
from pipeline.transfers import TransferRequest, create_transfer, get_transfer
from chains.base import Curve
from workers.attempt_view import attempt_view
from workers.routing import publish_after_commit


@dataclass(frozen=True)
class OnboardedWallet:
    client_id: str
    wallet_id: str
    accounts: dict[str, str]  # chain -> address
    assets: dict[tuple[str, str], str]  # (chain, symbol) -> asset_id


def onboard_wallet(ctx: StepContext, client_id: str, name: str, chains: dict[str, list[str]]) -> OnboardedWallet:
    """Create a wallet with its keys (from the signer) and its accounts and assets per chain, at
    once (the CLI, the demo and tests; the API's wallets get their keys from a worker instead).

    Everything is checked before anything is written (name, client, wallet limit, every chain and
    symbol); the keys are generated under the new wallet's id first, by the same function as the
    background task (`workers.wallets.generate_keys`: one key per chain family in the registry),
    and the wallet (PROGRESSING, then ACTIVE, each with its webhook event), its accounts and assets
    are written together afterwards, so a failed key generation leaves no wallet that counts
    against `max_wallets` (at most unused signer keys under an id nothing refers to). EVM chains
    share one key and therefore one address; each chain still gets its own account row.
    """
    from workers.wallets import generate_keys

    name = onboarding.check_name("wallet name", name)
    assets_wanted = onboarding.check_assets(ctx.registry, chains)
    with ctx.db.unit_of_work() as session:
        onboarding.check_wallet_capacity(session, client_id)
    wallet_id = new_id("wallet")
    keys = generate_keys(ctx, wallet_id)
    addresses: dict[str, str] = {}
    for chain in assets_wanted:
        adapter = ctx.adapter_for(chain)
        addresses[chain] = adapter.address_from_public_key(keys[adapter.key_name].key)
    accounts: dict[str, str] = {}
    assets: dict[tuple[str, str], str] = {}
    with ctx.db.unit_of_work() as session:
        onboarding.create_wallet(session, client_id, name, wallet_id=wallet_id)  # re-checks the limit, locked
        onboarding.activate_wallet(session, wallet_id)
        for chain, symbols in assets_wanted.items():
            account = onboarding.create_account(session, ctx.registry, wallet_id, chain, addresses[chain])
            accounts[chain] = account.address
            for symbol in symbols:
                assets[(chain, symbol)] = onboarding.add_asset(session, ctx.registry, account.account_id, symbol).asset_id
    return OnboardedWallet(client_id, wallet_id, accounts, assets)


def fresh_destination(ctx: StepContext, chain: str) -> str:
    """A brand-new valid address on `chain` (a random key nobody keeps): demo and test recipients."""
    adapter = ctx.adapter_for(chain)
    if adapter.curve is Curve.ED25519:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        public = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    else:
        from eth_keys import keys

        public = keys.PrivateKey(secrets.token_bytes(32)).public_key.to_bytes()
    return adapter.address_from_public_key(public)


@dataclass(frozen=True)
class Submission:
    transaction_id: str
    created: bool
    published: bool  # False: the broker was unreachable; the outbox relay publishes it when it returns


def submit_transfer(ctx: StepContext, req: TransferRequest) -> Submission:
    """Record a transfer (idempotently) with its first message in the outbox, then publish it."""
    with ctx.db.unit_of_work() as session:
        tx, created = create_transfer(session, ctx.registry, req, publish_grace_s=ctx.stall_after_s)
        transaction_id, seq = tx.transaction_id, tx.driver_seq
        first = Dispatch(transaction_id, STEPS[0], seq) if created and tx.stage == Stage.RECEIVED.value else None
    published = publish_after_commit(ctx, first)
    return Submission(transaction_id, created, published)


def replay(ctx: StepContext, transaction_ids: list[str], force: bool = False) -> list[dict[str, str]]:
    """Re-drive pending transfers from their last durable stage; final ones, and ones a live driver
    holds (unless `force`: it supersedes the driver and message in flight), are reported untouched."""
    report = []
    for transaction_id in transaction_ids:
        with ctx.db.unit_of_work() as session:
            get_transfer(session, transaction_id)  # typed errors for a malformed or unknown id
            tx = load_tx(session, transaction_id)
            redrive = claim_for_replay(session, tx, ctx.stall_after_s, force)
            status = tx.status
        if redrive is None:
            action = "none" if status != "PENDING" else "none: a live driver holds it (--force supersedes it)"
            report.append({"transaction_id": transaction_id, "action": action, "status": status})
            continue
        publish_after_commit(ctx, redrive.dispatch)
        report.append({"transaction_id": transaction_id, "action": f"re-driven from {redrive.step}",
                       "stage": redrive.stage.value})
    return report


def stalled_transfers(ctx: StepContext) -> list[str]:
    """Pending transfers whose last step gave up (retries exhausted or confirmation timeout)."""
    with ctx.db.unit_of_work() as session:
        return list(session.scalars(
            select(Transaction.transaction_id)
            .where(Transaction.status == "PENDING", Transaction.last_error.is_not(None))
            .order_by(Transaction.created_at)
        ))


def describe_transfer(ctx: StepContext, transaction_id: str) -> dict[str, Any]:
    """Everything ops needs about one transfer: fields, amounts as decimal strings, events, and
    every signed attempt (the original, each fee bump or re-signing: `workers.attempt_view`)."""
    with ctx.db.unit_of_work() as session:
        tx = get_transfer(session, transaction_id)
        decimals = ctx.registry.chain(tx.chain).token(tx.token_symbol).decimals
        native = ctx.registry.chain(tx.chain).native
        events = session.scalars(
            select(TransactionEvent).where(TransactionEvent.transaction_id == transaction_id).order_by(TransactionEvent.id)
        ).all()
        return {
            "transaction_id": tx.transaction_id,
            "kind": tx.kind,
            "status": tx.status,
            "stage": tx.stage,
            "stuck_reason": tx.stuck_reason,
            "failure_reason": tx.failure_reason,
            "failure_detail": tx.failure_detail,
            "last_error": tx.last_error,
            "chain": tx.chain,
            "network": tx.network,
            "token_symbol": tx.token_symbol,
            "amount": format_amount(tx.amount, decimals),
            "amount_base_units": str(tx.amount),
            "from_address": tx.from_address,
            "to_address": tx.normalized_to_address or tx.to_address,
            "idempotency_key": tx.idempotency_key,
            "nonce": tx.nonce,
            "tx_hash": tx.tx_hash,
            "block_number": tx.block_number,
            "block_hash": tx.block_hash,
            "confirmations": tx.confirmations,
            "fee_reserved": None if tx.fee_reserved is None else format_amount(tx.fee_reserved, native.decimals),
            "fee_paid": None if tx.fee_paid is None else format_amount(tx.fee_paid, native.decimals),
            "broadcast_count": tx.broadcast_count,
            "replacement_count": tx.replacement_count,
            "created_at": tx.created_at.isoformat() + "Z",
            "finalized_at": tx.finalized_at.isoformat() + "Z" if tx.finalized_at else None,
            "events": [
                {"at": e.at.isoformat() + "Z", "from": e.from_stage, "to": e.to_stage, "reason": e.reason,
                 "detail": e.detail}
                for e in events
            ],
            "attempts": [attempt_view(a, native.decimals) for a in attempts.of(session, transaction_id)],
        }


def asset_rows(ctx: StepContext, wallet_id: str) -> list[tuple[Account, Asset]]:
    """Every (account, asset) of the wallet, by chain and symbol (demo and chaos reports)."""
    with ctx.db.unit_of_work() as session:
        return list(session.execute(
            select(Account, Asset).join(Asset, Asset.account_id == Account.account_id)
            .where(Account.wallet_id == wallet_id).order_by(Account.chain, Asset.symbol)
        ).tuples())
